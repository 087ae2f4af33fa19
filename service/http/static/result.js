// The answer area: predicted digit, confidence, one bar per digit, and the 28x28 image the model saw.
// Its data-state (idle, busy, done, error) tells scripts and tests when an answer is on screen.

const percent = (value) => `${(value * 100).toFixed(1)}%`;

export function createResultView(root) {
  const digit = root.querySelector("#digit");
  const confidence = root.querySelector("#confidence");
  const bars = root.querySelector("#bars");
  const seen = root.querySelector("#seen");
  const error = root.querySelector("#error");

  function reset(state = "idle") {
    root.dataset.state = state;
    digit.textContent = "–";
    confidence.textContent = "";
    bars.replaceChildren();
    seen.getContext("2d").clearRect(0, 0, seen.width, seen.height);
    error.hidden = true;
    error.textContent = "";
  }

  function bar(value, probability, chosen) {
    const item = document.createElement("li");
    item.dataset.digit = String(value);
    item.dataset.probability = String(probability);
    item.classList.toggle("chosen", chosen);
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = String(value);
    const track = document.createElement("span");
    track.className = "track";
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.style.width = percent(probability); // CSSOM, which the page's Content-Security-Policy allows
    track.append(fill);
    const number = document.createElement("span");
    number.className = "value";
    number.textContent = percent(probability);
    item.append(label, track, number);
    return item;
  }

  function drawSeen(rows) {
    const image = new ImageData(28, 28);
    rows.flat().forEach((gray, i) => {
      image.data.set([gray, gray, gray, 255], i * 4);
    });
    seen.getContext("2d").putImageData(image, 0, 0);
  }

  return {
    reset,
    busy() {
      root.dataset.state = "busy";
    },
    showError(message) {
      reset("error");
      error.textContent = message;
      error.hidden = false;
    },
    showPrediction(prediction) {
      reset("done");
      digit.textContent = String(prediction.digit);
      confidence.textContent = `${percent(prediction.confidence)} sure`;
      bars.replaceChildren(
        ...prediction.probabilities.map((p, value) => bar(value, p, value === prediction.digit)),
      );
      drawSeen(prediction.pixels);
    },
  };
}
