"""A second baseline: the MNIST endpoint of a FastAPI tutorial, one ONNX Runtime call per request.

benchmarks/fastapi_baseline.py shares mnist-serve's own request parsing, so its ratio measures only the
serving architecture. The issue's table measured a *plain* endpoint (610-990 req/s where Triton did
about 8x that); this is one: a pydantic body, ``np.array`` on the lists, the ONNX Runtime session,
a dict answer that FastAPI serialises. Same model and same answer fields; JSON pixel bodies only.

Tutorials write the endpoint in one of two ways: ``async def`` (the default here), or ``def``, which
FastAPI's documentation advises for blocking calls such as a model's and runs in its thread pool
(``--sync``; slower, with a p99 like the issue's row).

    .venv/bin/python benchmarks/fastapi_tutorial.py --port 8100 [--sync]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnxruntime
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parent.parent


class PixelsRequest(BaseModel):
    pixels: list[list[int]]  # one 28x28 image, values 0..255


def build_app(model_folder: Path, sync: bool = False) -> FastAPI:
    session = onnxruntime.InferenceSession(
        str(model_folder / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    input_name = session.get_inputs()[0].name
    app = FastAPI()

    model = {"name": "mnist", "version": model_folder.name, "backend": "onnx", "device": "cpu"}

    def classify(request: PixelsRequest):  # type: ignore[no-untyped-def]  # as tutorials write it
        pixels = np.array(request.pixels, dtype=np.uint8).reshape(1, 1, 28, 28)
        probabilities = session.run(None, {input_name: pixels})[0][0]
        return {
            "predictions": [
                {
                    "digit": int(probabilities.argmax()),
                    "confidence": float(probabilities.max()),
                    "probabilities": probabilities.tolist(),
                }
            ],
            "model": model,
        }

    if sync:

        @app.post("/predict")
        def predict_in_thread_pool(request: PixelsRequest):  # type: ignore[no-untyped-def]
            return classify(request)

    else:

        @app.post("/predict")
        async def predict(request: PixelsRequest):  # type: ignore[no-untyped-def]
            return classify(request)

    @app.get("/v2/health/ready")
    async def ready() -> dict[str, bool]:
        return {"ready": True}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8100)
    latest = max((ROOT / "models" / "mnist").glob("[0-9]*"), key=lambda folder: int(folder.name))
    parser.add_argument("--model", type=Path, default=latest, help="a version folder (default: the latest)")
    parser.add_argument("--sync", action="store_true", help="a def endpoint (FastAPI's thread pool)")
    args = parser.parse_args()
    uvicorn.run(build_app(args.model, args.sync), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
