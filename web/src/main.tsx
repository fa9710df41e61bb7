/** Entry point: load libsodium, then mount the app. */
import "uplot/dist/uPlot.min.css";
import "./styles.css";
import { render } from "preact";
import { App } from "./ui/app";

const root = document.getElementById("app");
if (root !== null) {
  root.textContent = ""; // the static "loading" text
  render(<App />, root);
}

if ("serviceWorker" in navigator && location.protocol !== "file:") {
  navigator.serviceWorker.register("/sw.js").catch(() => undefined);
}
