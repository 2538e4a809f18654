// Which blocks and edges are in the page: only those inside a window around the view (the view and a
// quarter of it on each side), so that a pan costs nothing until the view leaves the window, and then
// one re-render of the blocks that came in. Too many blocks in the window (a big graph zoomed out) and
// none are: the overview draws them as boxes on a canvas instead (`overview`).
// The canvas hands these lists to Vue Flow in place of its own `getNodes` and `getEdges`, which its
// renderers read; its culling (`only-render-visible-elements`) takes a block never measured for visible,
// so that it would mount every block of a new graph once.
import { computed, ref, shallowRef, toRaw, watch } from "vue";

const MARGIN = 0.25; // of the view's width and height, on each side
export const NODE_BUDGET = 350; // blocks in the window above which the overview draws them (a 300-block graph fitted is drawn whole)

// The lists are computed from the raw blocks and edges: read through Vue's proxies, each pass over a
// 5,000-block graph cost tens of milliseconds, several times per window. What they depend on instead:
// the lists themselves (a block or edge added or removed) and `revision`, bumped whenever Vue Flow
// reports blocks moved, measured or (de)selected, and by `moved()`, which the canvas calls after it
// loads, adds or moves blocks itself.
export function useCulling(flow) {
  const area = shallowRef(null); // the window, in graph coordinates: {x, y, x2, y2}
  const revision = ref(0);
  // The blocks (or edges) without Vue's proxies (the list's items are proxies too). Reading the length
  // through the proxy keeps the dependency on blocks added or removed in place (Vue Flow splices).
  const rawList = (list) => {
    void list.value.length;
    return toRaw(list.value).map(toRaw);
  };
  const raw = () => rawList(flow.nodes);
  const rawEdges = () => rawList(flow.edges);
  const moved = () => {
    placeAll(raw());
    revision.value++;
  };
  const GEOMETRY = new Set(["position", "dimensions", "select"]);
  flow.onNodesChange((changes) => changes.some((c) => GEOMETRY.has(c.type)) && moved());
  const rawNodes = () => {
    void revision.value; // the dependency that stands for the blocks' geometry
    return raw();
  };

  function view() {
    const { x, y, zoom } = flow.viewport.value;
    const { width, height } = flow.dimensions.value;
    return { x: -x / zoom, y: -y / zoom, x2: (width - x) / zoom, y2: (height - y) / zoom };
  }
  const size = (r) => (r.x2 - r.x) * (r.y2 - r.y);
  function follow() {
    const seen = view();
    const now = area.value;
    const inside = now && seen.x >= now.x && seen.y >= now.y && seen.x2 <= now.x2 && seen.y2 <= now.y2;
    // Zoomed in far enough, the window would keep blocks far out of view: a new one then.
    if (inside && size(seen) * 4 > size(now)) return;
    const dx = (seen.x2 - seen.x) * MARGIN;
    const dy = (seen.y2 - seen.y) * MARGIN;
    area.value = { x: seen.x - dx, y: seen.y - dy, x2: seen.x2 + dx, y2: seen.y2 + dy };
  }
  watch([flow.viewport, flow.dimensions], follow, { immediate: true });

  const overlaps = (x, y, x2, y2, w) => x < w.x2 && x2 > w.x && y < w.y2 && y2 > w.y;
  const inArea = (node, w) => {
    const { x, y } = node.computedPosition;
    return overlaps(x, y, x + node.dimensions.width, y + node.dimensions.height, w);
  };
  const candidates = computed(() => {
    const w = area.value;
    return w ? rawNodes().filter((n) => !n.hidden && (n.dragging || inArea(n, w))) : [];
  });
  // Leaving the overview mounts hundreds of blocks at once: in the middle of a pan or zoom (a fitted graph
  // dragged partly out of view) it would stall frames, so it waits for the gesture's end.
  const moving = ref(false);
  flow.onMoveStart(() => (moving.value = true));
  flow.onMoveEnd(() => (moving.value = false));
  const overview = ref(false);
  watch([() => candidates.value.length, moving], ([count, isMoving]) => {
    if (count > NODE_BUDGET) overview.value = true;
    else if (!isMoving) overview.value = false;
  }, { immediate: true });
  const nodes = computed(() => (overview.value ? [] : candidates.value));
  // An edge is drawn where the box around its two blocks meets the window: one whose ends are both
  // out of view can still cross it.
  const edges = computed(() => {
    const w = area.value;
    if (overview.value || !w) return [];
    const lookup = new Map(rawNodes().map((n) => [n.id, n]));
    return rawEdges().filter((e) => {
      const [s, t] = [lookup.get(e.source), lookup.get(e.target)];
      if (!s || !t) return false;
      const [a, b] = [s.computedPosition, t.computedPosition];
      return overlaps(Math.min(a.x, b.x), Math.min(a.y, b.y), Math.max(a.x + s.dimensions.width, b.x + t.dimensions.width),
        Math.max(a.y + s.dimensions.height, b.y + t.dimensions.height), w);
    });
  });
  return { nodes, edges, overview, revision, moved, rawNodes, rawEdges };
}

// Every block's place on the canvas (`computedPosition`) from its position, and its frame's place if it is
// in one. Vue Flow computes it in the block's own component, that is only while the block is drawn: a
// culled block would keep the place it had when it was last drawn, or its position relative to its frame.
function placeAll(nodes) {
  const byId = new Map(nodes.map((n) => [n.id, n]));
  const placed = new Map();
  const place = (node) => {
    if (placed.has(node.id)) return placed.get(node.id);
    const parent = node.parentNode ? byId.get(node.parentNode) : null;
    const base = parent ? place(parent) : { x: 0, y: 0 };
    const at = { x: base.x + node.position.x, y: base.y + node.position.y };
    placed.set(node.id, at);
    if (node.computedPosition.x !== at.x || node.computedPosition.y !== at.y) {
      node.computedPosition = { ...node.computedPosition, ...at };
    }
    return at;
  };
  nodes.forEach(place);
}

// A block's size before it is first drawn (it may never be: culled), so that fitting the view, the
// culling and the edges to it work from the start: the width of the widest line, within the block's
// CSS bounds, and a line per part (Vue Flow measures the block when it is drawn).
const LINE = 15;
const CHAR = 6.6; // the monospace lines at 11 px
export function estimatedSize(view) {
  const text = Math.max(((view.label || view.id).length + view.type.length) * 7 + 6, (view.summary || "").length * CHAR);
  const width = Math.min(233, Math.max(163, text + 23));
  const summaryLines = view.summary ? Math.ceil(((view.summary.length * CHAR) / (width - 23)) || 1) : 0;
  const reason = view.problems?.length ? 14 : 0;
  const height = 15 + 17 + LINE * (summaryLines + view.outputs.length) + reason;
  return { width, height };
}

// Where its handles are before a block is drawn (Vue Flow measures them when it is): inputs on the left
// and outputs on the right, or on top and at the bottom in a top-down layout (`down`), spread as
// BlockNode spreads them.
const HANDLE = 9;
export function estimatedHandles(view, { width, height }, down = false) {
  const spread = (ports, type, side) =>
    ports.map((id, i) => {
      const along = ((i + 1) * (down ? width : height)) / (ports.length + 1) - HANDLE / 2;
      const across = (side === "target" ? 0 : down ? height : width) - HANDLE / 2;
      const position = down ? (side === "target" ? "top" : "bottom") : side === "target" ? "left" : "right";
      return { id, type, nodeId: view.id, position, x: down ? along : across, y: down ? across : along,
        width: HANDLE, height: HANDLE };
    });
  return { target: spread(view.inputs || [], "target", "target"), source: spread(view.outputs || [], "source", "source") };
}
