// Wires the pad, the upload button and the API key field to POST /predict, and shows its answers.
import { createPad } from "./pad.js";
import { createResultView } from "./result.js";

// include=pixels: the answer also carries the 28x28 image the model saw, to show the preprocessing.
const PREDICT_URL = new URL("predict?include=pixels", document.baseURI);
const KEY_STORAGE = "mnist-demo.api-key";

const view = createResultView(document.querySelector("#result"));
const keyField = document.querySelector("#api-key");
const upload = document.querySelector("#upload");
const pad = createPad(document.querySelector("#pad"), () => {
  if (!pad.isBlank()) predict(pad.toBlob(), "drawing.png");
});

let latest = 0; // answers may arrive out of order when strokes come fast: only the newest is shown
let lastInput = null; // sent again when the API key changes, so fixing a wrong key needs no redraw

async function predict(image, filename) {
  const request = ++latest;
  view.busy();
  const body = new FormData();
  body.append("file", await image, filename);
  lastInput = { image, filename };
  const headers = {};
  const key = keyField.value.trim();
  if (key) headers["X-API-Key"] = key;
  let reply;
  let payload = null;
  try {
    reply = await fetch(PREDICT_URL, { method: "POST", body, headers });
    payload = await reply.json().catch(() => null);
  } catch (error) {
    if (request === latest) view.showError(`Could not reach the server: ${error.message}`);
    return;
  }
  if (request !== latest) return;
  if (!reply.ok) {
    const reason = payload?.error ?? reply.statusText;
    const advice = reply.status === 401 ? " Enter the server's API key above." : "";
    view.showError(`${reply.status}: ${reason}.${advice}`);
    return;
  }
  view.showPrediction(payload.predictions[0]);
}

function readStoredKey() {
  try {
    return localStorage.getItem(KEY_STORAGE) ?? "";
  } catch {
    return ""; // storage can be disabled (private windows, strict settings): the field still works
  }
}

function storeKey(key) {
  try {
    if (key) localStorage.setItem(KEY_STORAGE, key);
    else localStorage.removeItem(KEY_STORAGE);
  } catch {
    // see readStoredKey
  }
}

keyField.value = readStoredKey();
keyField.addEventListener("change", () => {
  storeKey(keyField.value.trim());
  if (lastInput) predict(lastInput.image, lastInput.filename);
});
// Enter fires "change" on the field first; the form itself must not reload the page.
document.querySelector("#key-form").addEventListener("submit", (event) => event.preventDefault());

document.querySelector("#clear").addEventListener("click", () => {
  latest++; // an answer still on its way belongs to the cleared digit
  lastInput = null;
  pad.clear();
  view.reset();
});

upload.addEventListener("change", () => {
  const file = upload.files[0];
  upload.value = ""; // choosing the same file again must fire "change" again
  if (!file) return;
  pad.show(file);
  predict(file, file.name);
});
