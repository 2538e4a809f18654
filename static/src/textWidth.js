// The width of an edge label, measured once per string for all edges (on a canvas, which lays
// out nothing).
const FONT = "10px ui-monospace, monospace"; // as .vue-flow__edge-text in FlowCanvas.vue
const widths = new Map();
let context = null;

export function textWidth(text) {
  let width = widths.get(text);
  if (width === undefined) {
    context = context || document.createElement("canvas").getContext("2d");
    context.font = FONT;
    width = context.measureText(text).width;
    widths.set(text, width);
  }
  return width;
}
