// The NetCanvas canvas: a Vue Flow graph editor that only shows the graph and sends edits;
// Python owns the document, validation and shapes.
import FlowCanvas from "./FlowCanvas.vue";
import { relaxPageStyles } from "./pageStyles.js";

// The stylesheet lies beside this module; load it once, wherever NiceGUI serves the folder.
if (!document.querySelector("link[data-netcanvas-flow]")) {
  const link = document.createElement("link");
  link.rel = "stylesheet";
  link.href = new URL(/* @vite-ignore */ "./style.css", import.meta.url).href;
  link.dataset.netcanvasFlow = "";
  document.head.appendChild(link);
}
// Before any canvas is drawn: the flags that these rules leave on elements stay for good.
relaxPageStyles();

export { FlowCanvas };
export default FlowCanvas;
