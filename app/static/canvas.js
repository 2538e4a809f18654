// NiceGUI component file for app.canvas.Canvas: the component itself is in the bundle.
import { FlowCanvas } from "netcanvas-flow";

export default FlowCanvas;
