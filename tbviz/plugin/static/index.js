// The ACTIVATIONS tab of TensorBoard: tbviz's viewer (viewer.js), fed by this plugin's routes.
//
// TensorBoard loads this ES module in an iframe and calls render(). The viewer
// itself is pictures.js and viewer.js, the same code the notebook and HTML viewers
// inline; imported in this order, they set globalThis.tbvizViewer.
import "./pictures.js";
import "./viewer.js";

export async function render() {
  const css = document.createElement("link");
  css.rel = "stylesheet";
  css.href = "style.css";
  document.head.appendChild(css);
  document.body.classList.add("tbviz-page");
  const viewer = globalThis.tbvizViewer;
  viewer.mount(document.body.appendChild(document.createElement("div")), viewer.serverSource(), {mode: "page"});
}
