// The layered layout, computed by elkjs in a Web Worker (elkjs's own worker build): the page keeps
// drawing and answering while a big graph lays out. One worker, started on the first layout.
import ELK from "elkjs/lib/elk-api.js";
import ElkWorker from "elkjs/lib/elk-worker.min.js?worker";

let elk = null;

// `graph`: elkjs's JSON graph; resolves to the same graph with each child's x and y.
export function layout(graph) {
  elk = elk || new ELK({ workerFactory: () => new ElkWorker() });
  return elk.layout(graph);
}

// An encoder–decoder (a U-Net, an autoencoder) reads as a U: each block sits a level lower per halving
// of its spatial size, across the layout's direction, so that the skips run straight across from the
// encoder to the decoder. Levels only where some edge goes up a level (a decoder): a plain CNN keeps
// the layered layout. `nodes`: Vue Flow's, with Python's views as data; null where there is no decoder.
export function resolutionLevels(nodes, edges) {
  const sizes = new Map(nodes.map((n) => [n.id, spatialSize(n.data)]));
  const known = [...sizes.values()].filter((s) => s !== null);
  if (!known.length) return null;
  const largest = Math.max(...known);
  const levels = new Map([...sizes].map(([id, s]) => [id, s === null ? 0 : Math.round(Math.log2(largest / s) / 2)]));
  const upward = edges.some((e) => levels.has(e.source) && levels.has(e.target) && levels.get(e.target) < levels.get(e.source));
  return upward && Math.max(...levels.values()) > 0 ? levels : null;
}

// The largest H x W (x D) among a block's outputs, from their shape text "(N, C, H, W)" (a U-Net's down
// block is at the level of its skip, which its up block takes); null for a block without one.
function spatialSize(view) {
  const sizes = Object.values(view.shapes || {}).map((text) => {
    const dims = text.replace(/[()]/g, "").split(",").slice(2).map(Number);
    return dims.length && dims.every((d) => d > 0) ? dims.reduce((a, b) => a * b, 1) : null;
  }).filter((size) => size !== null);
  return sizes.length ? Math.max(...sizes) : null;
}

// Move each laid-out child down (or right, laid out top-down) a band per level; a band is as deep as the
// whole layout across its direction, so that levels never overlap.
export function spreadLevels(children, levels, down) {
  const [across, size] = down ? ["x", "width"] : ["y", "height"];
  const low = Math.min(...children.map((c) => c[across]));
  const high = Math.max(...children.map((c) => c[across] + c[size]));
  const band = high - low + 80;
  for (const child of children) child[across] += (levels.get(child.id) || 0) * band;
}
