// Blocks as filled boxes and edges as lines on a 2D canvas: what the overview and the minimap draw,
// a few draw calls for the whole graph instead of one element per block.
import { computed } from "vue";

// Every block's box and colour, and every edge's ends, in graph coordinates (recomputed when a block
// moves, is measured or selected, comes or goes: `culling`'s `revision`, and its raw lists). A node that
// holds others (an expanded subgraph's frame) is left out: its box would cover theirs.
export function useBoxes(colour, culling) {
  return computed(() => {
    void culling.revision.value; // the dependency that stands for the blocks' geometry and selection
    const boxes = culling.rawNodes().filter((n) => !n.isParent).map((n) => ({
      id: n.id, x: n.computedPosition.x, y: n.computedPosition.y, width: n.dimensions.width, height: n.dimensions.height,
      colour: colour(n), selected: n.selected,
    }));
    const byId = new Map(boxes.map((b) => [b.id, b]));
    const lines = [];
    for (const e of culling.rawEdges()) {
      const [s, t] = [byId.get(e.source), byId.get(e.target)];
      if (s && t) lines.push([s.x + s.width, s.y + s.height / 2, t.x, t.y + t.height / 2]);
    }
    return { boxes, lines };
  });
}

// The bounding box of the boxes: {x, y, x2, y2}.
export function bounds(boxes) {
  const r = { x: Infinity, y: Infinity, x2: -Infinity, y2: -Infinity };
  for (const b of boxes) {
    r.x = Math.min(r.x, b.x);
    r.y = Math.min(r.y, b.y);
    r.x2 = Math.max(r.x2, b.x + b.width);
    r.y2 = Math.max(r.y2, b.y + b.height);
  }
  return r;
}

// Draw `graph` with graph point (x, y) at canvas pixel (x * scale + dx, y * scale + dy); only what falls
// inside the canvas. The lines first, then the boxes by colour (one fill per colour), then the selection.
// `width` and `height`: the canvas's size in CSS pixels.
export function drawGraph(ctx, { boxes, lines }, { scale, dx, dy, width, height }) {
  const px = (x) => x * scale + dx;
  const py = (y) => y * scale + dy;
  ctx.lineWidth = 1;
  ctx.strokeStyle = "#b1b9c4";
  ctx.beginPath();
  for (const [x1, y1, x2, y2] of lines) {
    const [a, b, c, d] = [px(x1), py(y1), px(x2), py(y2)];
    if (Math.max(a, c) < 0 || Math.min(a, c) > width || Math.max(b, d) < 0 || Math.min(b, d) > height) continue;
    ctx.moveTo(a, b);
    ctx.lineTo(c, d);
  }
  ctx.stroke();
  const byColour = new Map();
  const selected = [];
  for (const box of boxes) {
    const [x, y, w, h] = [px(box.x), py(box.y), Math.max(1, box.width * scale), Math.max(1, box.height * scale)];
    if (x > width || y > height || x + w < 0 || y + h < 0) continue;
    if (!byColour.has(box.colour)) byColour.set(box.colour, []);
    byColour.get(box.colour).push([x, y, w, h]);
    if (box.selected) selected.push([x, y, w, h]);
  }
  for (const [fill, rects] of byColour) {
    ctx.fillStyle = fill;
    ctx.beginPath();
    for (const [x, y, w, h] of rects) ctx.rect(x, y, w, h);
    ctx.fill();
  }
  ctx.strokeStyle = "#1976d2";
  ctx.lineWidth = 2;
  ctx.beginPath();
  for (const [x, y, w, h] of selected) ctx.rect(x, y, w, h);
  ctx.stroke();
}

// A canvas's 2D context, the canvas sized to `width` x `height` CSS pixels (its backing store in device
// pixels), cleared, and scaled back to CSS pixels.
export function fitCanvas(canvas, width, height) {
  const ratio = window.devicePixelRatio || 1;
  canvas.style.width = `${width}px`;
  canvas.style.height = `${height}px`;
  if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  return ctx;
}
