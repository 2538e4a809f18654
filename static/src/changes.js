// Vue Flow's changes (add, remove, select, position, dimensions) applied to its nodes or edges by
// id, in one pass. Vue Flow's own applyChanges finds each change's element by a scan of the whole
// array (and runs every element past every change): pasting 3,003 blocks into a 3,003-block graph
// kept the page busy for 14 s, selecting them all for seconds more. The canvas applies its changes
// with this instead; what it leaves out of Vue Flow's is growing a parent that has `expandParent`
// children, which the canvas does not use.
import { toRaw } from "vue";

const FIELDS = {
  select: (element, change) => { element.selected = change.selected; },
  position: (element, change) => {
    if (change.position !== undefined) element.position = change.position;
    if (change.dragging !== undefined) element.dragging = change.dragging;
  },
  dimensions: (element, change) => {
    if (change.dimensions !== undefined) element.dimensions = change.dimensions;
    if (change.updateStyle) {
      element.style = { ...(element.style || {}), width: `${change.dimensions?.width}px`, height: `${change.dimensions?.height}px` };
    }
    if (change.resizing !== undefined) element.resizing = change.resizing;
  },
};

// `elements` is the store's reactive array (flow.nodes.value or flow.edges.value): it is changed in
// place, with one replacement of its items when some were added or removed.
export function applyChanges(changes, elements) {
  const raw = toRaw(elements);
  const present = new Set(raw.map((element) => element.id));
  const removed = new Set(); // ids of elements already there that go
  const added = new Map(); // id -> element, in the order they came
  const updates = new Map(); // id -> its other changes, in order
  for (const change of changes) {
    if (change.type === "add") {
      const id = change.item.id;
      if (!present.has(id)) {
        present.add(id);
        added.set(id, change.item);
      }
    } else if (change.type === "remove") {
      if (!present.has(change.id)) continue;
      present.delete(change.id);
      if (added.has(change.id)) added.delete(change.id);
      else removed.add(change.id);
    } else if (FIELDS[change.type]) {
      const list = updates.get(change.id);
      if (list) list.push(change);
      else updates.set(change.id, [change]);
    }
  }
  if (removed.size || added.size) {
    const next = raw.filter((element) => !removed.has(element.id));
    for (const element of added.values()) next.push(element);
    elements.length = 0;
    for (let start = 0; start < next.length; start += CHUNK) elements.push(...next.slice(start, start + CHUNK));
  }
  if (updates.size) {
    const now = toRaw(elements);
    for (let i = 0; i < now.length; i++) {
      const list = updates.get(now[i].id);
      if (!list) continue;
      const element = elements[i]; // through the store, so that what shows it follows
      for (const change of list) FIELDS[change.type](element, change);
    }
  }
  return elements;
}

const CHUNK = 10000; // items per push: a call's arguments have a limit
