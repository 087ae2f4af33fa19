// The drawing pad: white strokes on black, as MNIST's digits are, from mouse, pen or finger alike
// (pointer events cover all three).

// On the 280-pixel pad a digit is about 200 pixels tall; scaled into MNIST's 20-pixel box this stroke
// becomes 2 to 3 pixels wide, like the pen strokes the model was trained on.
const STROKE_WIDTH = 24;

export function createPad(canvas, onStroke) {
  const context = canvas.getContext("2d");
  let last = null; // the previous point of the stroke in progress, or null between strokes
  let blank = true;
  let holdsUpload = false;

  function clear() {
    // An opaque background: a transparent PNG would be flattened onto white by the server.
    context.fillStyle = "#000";
    context.fillRect(0, 0, canvas.width, canvas.height);
    blank = true;
    holdsUpload = false;
  }

  function point(event) {
    // The pad may be displayed smaller than its 280 pixels (narrow screens): map back to its pixels.
    const box = canvas.getBoundingClientRect();
    return [
      ((event.clientX - box.left) * canvas.width) / box.width,
      ((event.clientY - box.top) * canvas.height) / box.height,
    ];
  }

  function line(from, to) {
    context.strokeStyle = "#fff";
    context.lineWidth = STROKE_WIDTH;
    context.lineCap = "round";
    context.lineJoin = "round";
    context.beginPath();
    context.moveTo(...from);
    context.lineTo(...to);
    context.stroke();
  }

  canvas.addEventListener("pointerdown", (event) => {
    if (event.button !== 0) return;
    if (holdsUpload) clear(); // drawing starts a new digit rather than scribbling over a photo
    canvas.setPointerCapture(event.pointerId); // the stroke continues even if it leaves the pad
    last = point(event);
    line(last, last);
    blank = false;
  });
  canvas.addEventListener("pointermove", (event) => {
    if (last === null) return;
    const next = point(event);
    line(last, next);
    last = next;
  });
  const end = () => {
    if (last === null) return;
    last = null;
    onStroke();
  };
  canvas.addEventListener("pointerup", end);
  canvas.addEventListener("pointercancel", end);

  clear();
  return {
    clear,
    isBlank: () => blank,
    toBlob: () => new Promise((resolve) => canvas.toBlob(resolve, "image/png")),
    // Shows an uploaded picture (letterboxed); the server is sent the original file, not this copy.
    async show(file) {
      clear();
      holdsUpload = true;
      let bitmap;
      try {
        bitmap = await createImageBitmap(file);
      } catch {
        return; // a format the browser cannot draw (TIFF, say) may still be one the server reads
      }
      const scale = Math.min(canvas.width / bitmap.width, canvas.height / bitmap.height);
      const width = bitmap.width * scale;
      const height = bitmap.height * scale;
      context.drawImage(bitmap, (canvas.width - width) / 2, (canvas.height - height) / 2, width, height);
      bitmap.close();
    },
  };
}
