"""The baseline for the serving benchmark: plain FastAPI + uvicorn, one ONNX Runtime call per request.

Same model, same request parsing and response encoding as mnist-serve (it reuses service.http.bodies and
service.http.multipart), but no batching, no worker processes, no LitServe: what a minimal hand-written
endpoint does.

    .venv/bin/python benchmarks/fastapi_baseline.py --port 8100
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import uvicorn
from fastapi import FastAPI, Request, Response

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from service.errors import ServiceError  # noqa: E402
from service.http.bodies import (  # noqa: E402
    Limits,
    images_to_pixels,
    json_to_pixels,
    media_type,
    parse_v2_infer,
    predictions_body,
    v2_infer_body,
)
from service.http.multipart import uploaded_files  # noqa: E402
from service.model.backends import load_backend  # noqa: E402
from service.model.repository import resolve  # noqa: E402


def build_app(repository: Path) -> FastAPI:
    model = resolve(repository, "mnist", "latest", "onnx")
    backend = load_backend(model, "onnx", "cpu")
    limits = Limits(max_images=256, max_pixels=25_000_000)
    app = FastAPI()
    payload = {"name": model.name, "version": model.version, "backend": "onnx", "device": backend.device}

    @app.post("/predict")
    async def predict(request: Request) -> Response:
        body = await request.body()
        try:
            kind = media_type(request.headers.get("content-type"))
            if kind == "multipart/form-data":
                files = uploaded_files(body, request.headers["content-type"], limits.max_images + 1, 16)
                pixels = images_to_pixels(files, limits)
            elif kind.startswith("image/"):
                pixels = images_to_pixels([body], limits)
            else:
                pixels = json_to_pixels(body, limits)
        except ServiceError as error:
            return Response(f'{{"error": "{error.message}"}}', status_code=error.status)
        return Response(predictions_body(backend.predict(pixels), payload), media_type="application/json")

    @app.post("/v2/models/mnist/infer")
    async def infer(request: Request) -> Response:
        try:
            parsed = parse_v2_infer(
                await request.body(), dict(request.headers), "pixels", "probabilities", limits
            )
        except ServiceError as error:
            return Response(f'{{"error": "{error.message}"}}', status_code=error.status)
        body, headers = v2_infer_body(
            backend.predict(parsed.pixels), parsed, "mnist", model.version, "probabilities"
        )
        return Response(body, headers=headers)

    @app.get("/v2/health/ready")
    async def ready() -> dict[str, bool]:
        return {"ready": True}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--model-repository", type=Path, default=ROOT / "models")
    args = parser.parse_args()
    uvicorn.run(build_app(args.model_repository), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
