// The op names of the edit protocol: the canvas sends `{ op: OPS.ADD, ...fields }` as an `edit` event.
// graphcore/editing/ops.py declares each op's fields and answers it; tests/test_edits.py reads
// this table and checks that it names exactly the ops declared there.
// SET_PARAMS and RENAME come from tools that drive the canvas (the benchmark calls sendEdit).
export const OPS = Object.freeze({
  ADD: "add",
  CONNECT: "connect",
  REMOVE: "remove",
  MOVE: "move",
  PASTE: "paste",
  DUPLICATE: "duplicate",
  SET_PARAMS: "set_params",
  RENAME: "rename",
  UNGROUP: "ungroup",
  UNDO: "undo",
  REDO: "redo",
  // Requests: the server answers them with a dialog or a new view.
  GROUP: "group",
  OPEN: "open",
  EXPAND: "expand",
  COLLAPSE: "collapse",
  RENAME_REQUEST: "rename_request",
  // A part of a message too long to send at once (FlowCanvas's sendEdit splits it; Python joins it).
  PART: "part",
});

// The requests among them: their answer is a dialog or a new view, not an edit's delta to wait for.
export const REQUESTS = new Set([OPS.GROUP, OPS.OPEN, OPS.EXPAND, OPS.COLLAPSE, OPS.RENAME_REQUEST, OPS.PART]);
