"""HTTP routes, running in the API server processes: decode and validate, queue, await, encode.

This is a LitServe spec, the extension point LitServe offers for owning routes: each handler turns
the body into validated pixels *before* the request joins a batch (so one bad request can never fail
the others), admits it against the queue limit, hands it to an inference worker (``service.dispatch``)
and waits for its probabilities with a deadline.
"""

from __future__ import annotations

import asyncio
import hmac
import multiprocessing as mp
import time
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import orjson
from fastapi import Request, Response
from litserve.specs.base import LitSpec
from starlette.datastructures import QueryParams

from service.api import runtime_records
from service.dispatch import Answer, OnAnswer, Ticket, WorkerPool
from service.errors import (
    BadRequest,
    NotFound,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
)
from service.metrics import CONTENT_TYPE, REQUEST_METRICS_SCRAPE_WAIT_S, Metrics, render
from service.multipart import uploaded_files
from service.protocol import (
    IMAGE_TYPES,
    JSON_HEADERS,
    Limits,
    V2Request,
    images_to_pixels,
    json_to_pixels,
    media_type,
    parse_v2_infer,
    predictions_body,
    v2_infer_body,
)
from service.repository import ModelVersion
from service.worker_loop import worker_sockets

SERVER_NAME = "mnist-serving"
RUNTIME_CACHE_S = 5.0
METRICS_FLUSH_TIMEOUT_S = 2.0


class RequestView(typing.Protocol):
    """What the job makers read of a request: a Starlette ``Request`` on uvicorn's ASGI path, a plain
    view on the direct path (service.fast_http)."""

    @property
    def headers(self) -> Mapping[str, str]: ...  # lower-case names

    @property
    def scope(self) -> Mapping[str, Any]: ...

    @property
    def query_params(self) -> QueryParams: ...


T = typing.TypeVar("T")
Reply = tuple[bytes, Mapping[str, str]]  # a 200 answer's body and its headers (content-type and the like)


class Job(NamedTuple):  # a tuple: built for every request (a frozen dataclass costs more)
    """An inference request that passed its checks and holds a queue slot: the validated pixels for
    a worker, and how the worker's answer becomes the reply."""

    pixels: np.ndarray
    respond: Callable[[Answer], Reply]


@dataclass(frozen=True)
class RouteConfig:
    model: ModelVersion
    backend: str
    limits: Limits
    queue_limit: int
    request_timeout: float
    api_key: str | None
    metrics_dir: Path
    socket_dir: Path  # where the inference workers listen (service.worker_loop)
    main_pid: int
    server_version: str


class InferenceSpec(LitSpec):
    def __init__(self, config: RouteConfig) -> None:
        super().__init__()
        self.api_path = "/predict"  # LitServe keys its request queue by this path
        self.config = config
        # One slot per request admitted and not yet answered, shared by every API server process (they
        # are forked from the main process after this). A semaphore: taking a slot without blocking
        # and giving it back are one C call each, where a locked counter took four and Python around.
        self.free_slots = mp.get_context("fork").Semaphore(config.queue_limit)
        self._metrics: Metrics | None = None
        self._runtime_cache: tuple[float, dict[str, str]] | None = None
        self._payloads: dict[tuple[str, str], dict[str, str]] = {}
        self._workers: WorkerPool | None = None
        model = config.model
        for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
            self.add_endpoint(prefix, self.model_metadata, ["GET"])
            self.add_endpoint(prefix + "/ready", self.model_ready, ["GET"])
            self.add_endpoint(prefix + "/infer", self.v2_infer, ["POST"])
        self.add_endpoint("/predict", self.predict, ["POST"])
        self.add_endpoint("/v2", self.server_metadata, ["GET"])
        self.add_endpoint("/v2/health/live", self.live, ["GET"])
        self.add_endpoint("/v2/health/ready", self.ready, ["GET"])
        self.add_endpoint("/metrics", self.metrics_endpoint, ["GET"])
        self.model_payload = {"name": model.name, "version": model.version, "backend": config.backend}

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["free_slots"] = None  # only the API servers admit requests; workers never need the slots
        state["_workers"] = None
        return state

    # LitSpec hooks: the worker receives already-decoded Jobs and returns arrays untouched.
    def decode_request(self, request: Any, context_kwargs: Any = None) -> Any:
        return request

    def encode_response(self, output: Any, context_kwargs: Any = None) -> Any:
        return output

    @property
    def metrics(self) -> Metrics:
        if self._metrics is None:  # per process, after the fork, so each writes its own files
            self._metrics = Metrics()
        return self._metrics

    # --- helpers ------------------------------------------------------------------------------------

    def _authorize(self, request: RequestView) -> None:
        expected = self.config.api_key
        if expected is None:
            return
        given = request.headers.get("x-api-key", "")
        if not given and request.headers.get("authorization", "").lower().startswith("bearer "):
            given = request.headers["authorization"][7:]
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise Unauthorized("missing or wrong API key (send it as X-API-Key)")

    def _served_versions(self) -> list[str]:
        return self._runtime()["version"].split(",")

    def _check_model(self, name: str, version: str | None) -> None:
        if version is None and name == self.config.model.name:  # every inference request without a version
            return
        served = self._served_versions()
        if name != self.config.model.name or (version is not None and version not in served):
            raise NotFound(
                f"model {name!r}{f' version {version!r}' if version else ''} is not served here "
                f"(serving {self.config.model.name} version {', '.join(served)})"
            )

    def _runtime(self) -> dict[str, str]:
        """Version, device and provider the workers really use (read from their records; cached briefly,
        as every answer carries the device)."""
        now = time.monotonic()
        if self._runtime_cache is None or now - self._runtime_cache[0] > RUNTIME_CACHE_S:
            records = runtime_records(self.config.metrics_dir)

            def joined(key: str, default: str) -> str:
                return ",".join(sorted({str(r[key]) for r in records}, key=_natural)) or default

            self._runtime_cache = (
                now,
                {
                    "version": joined("version", self.config.model.version),
                    "device": joined("device", "unknown"),
                    "provider": joined("provider", "unknown"),
                },
            )
        return self._runtime_cache[1]

    def _is_ready(self) -> bool:
        server = self._server
        if server is None or not getattr(server, "workers_setup_status", None):
            return False
        try:
            workers_ready = all(status == "ready" for status in server.workers_setup_status.values())
        except (OSError, EOFError, BrokenPipeError):  # the manager is gone: we are shutting down
            return False
        # Workers report "ready" just before they start listening.
        return workers_ready and bool(worker_sockets(self.config.socket_dir))

    def _admitted(self, decode: Callable[[], T]) -> T:
        """Reserve one of the queue-limit slots, then decode: past the limit, refusing costs next to
        nothing, so shedding does not eat the capacity it protects. A request that fails to decode
        gives its slot back at once; any other gives it back with ``release`` once it is over."""
        if not self.free_slots.acquire(False):
            raise Unavailable(
                f"server is at its queue limit ({self.config.queue_limit} requests); retry",
                reason="overloaded",
            )
        try:
            return decode()
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        """Give an admitted request's slot back (its answer is written, or its client left)."""
        self.free_slots.release()

    def in_flight(self) -> int:
        """Requests admitted and not yet answered, across every API server."""
        return self.config.queue_limit - self.free_slots.get_value()

    def _worker_pool(self) -> WorkerPool:
        if self._workers is None:  # per API-server process: its connections belong to its event loop
            self._workers = WorkerPool(self.config.socket_dir)
        return self._workers

    def submit(self, pixels: np.ndarray) -> asyncio.Future[Answer]:
        """Send a job's validated pixels to a worker; the future holds its answer (or its 503 / 504)."""
        return self._worker_pool().submit(pixels, time.monotonic(), self.config.request_timeout or None)

    def send(self, pixels: np.ndarray, on_answer: OnAnswer) -> Ticket:
        """``submit`` with a callback instead of a future (service.fast_http)."""
        return self._worker_pool().send(
            pixels, time.monotonic(), self.config.request_timeout or None, on_answer
        )

    async def serve(self, job: Job) -> Response:
        """Await a job's answer and turn it into the response (uvicorn's ASGI path; service.fast_http
        runs the same steps with callbacks)."""
        try:
            answer = await self.submit(job.pixels)
        finally:
            self.release()
        body, headers = job.respond(answer)
        return Response(body, headers=headers)

    def _model_payload(self, version: str) -> dict[str, str]:
        device = self._runtime()["device"]
        payload = self._payloads.get((version, device))
        if payload is None:  # one per version and device: a handful over the server's life
            payload = self._payloads[version, device] = {
                **self.model_payload,
                "version": version,
                "device": device,
            }
        return payload

    # --- routes ---------------------------------------------------------------------------------------

    async def predict(self, request: Request) -> Response:
        """Classify one or more digit images: multipart upload, raw image body, or JSON (base64 or pixels)."""
        return await self.serve(self.predict_job(request, await request.body()))

    async def v2_infer(self, request: Request, name: str, version: str | None = None) -> Response:
        """Open Inference Protocol v2 inference: JSON tensors or Triton's binary tensor extension."""
        return await self.serve(self.v2_job(request, await request.body(), name, version))

    def predict_job(self, request: RequestView, body: bytes) -> Job:
        """Check, admit and decode a /predict request (raises a ServiceError for the client)."""
        self._authorize(request)
        # ?include=pixels adds the 28x28 image the model saw, so clients can show the preprocessing.
        include: set[str] = set()
        if request.scope["query_string"]:  # Starlette parses the query string anew for each request
            include = {item for value in request.query_params.getlist("include") for item in value.split(",")}
        if include - {"pixels", ""}:
            raise BadRequest(f"unknown include {sorted(include - {'pixels', ''})}; the only one is 'pixels'")
        pixels = self._admitted(lambda: self._predict_pixels(request, body))
        shown = pixels if "pixels" in include else None

        def respond(answer: Answer) -> Reply:
            return predictions_body(
                answer.probabilities, self._model_payload(answer.version), shown
            ), JSON_HEADERS

        return Job(pixels, respond)

    def _predict_pixels(self, request: RequestView, body: bytes) -> np.ndarray:
        content_type = media_type(request.headers.get("content-type"))
        limits = self.config.limits
        if content_type == "multipart/form-data":
            blobs = uploaded_files(
                body,
                request.headers["content-type"],
                max_files=limits.max_images + 1,  # one more than allowed: images_to_pixels words the 413
                max_fields=limits.max_images + 16,
            )
            return images_to_pixels(blobs, limits)
        if content_type in IMAGE_TYPES or content_type == "application/octet-stream":
            return images_to_pixels([body], limits)
        if content_type == "application/json" or content_type.endswith("+json"):
            return json_to_pixels(body, limits)
        raise UnsupportedMediaType(
            f"unsupported content type {content_type or '(none)'!r}; send multipart/form-data, "
            "an image/* body, or application/json"
        )

    def v2_job(self, request: RequestView, body: bytes, name: str, version: str | None = None) -> Job:
        """Check, admit and decode a v2 infer request (raises a ServiceError for the client)."""
        self._authorize(request)
        self._check_model(name, version)
        model = self.config.model
        parsed: V2Request = self._admitted(
            lambda: parse_v2_infer(
                body, request.headers, model.input_name, model.output_name, self.config.limits
            )
        )

        def respond(answer: Answer) -> Reply:
            return v2_infer_body(answer.probabilities, parsed, model.name, answer.version, model.output_name)

        return Job(parsed.pixels, respond)

    async def server_metadata(self) -> Response:
        return _json(
            {
                "name": SERVER_NAME,
                "version": self.config.server_version,
                "extensions": ["binary_tensor_data", "model_repository_readonly"],
            }
        )

    async def live(self) -> Response:
        return _json({"live": True})

    async def ready(self) -> Response:
        if self._is_ready():
            return _json({"ready": True})
        response = _json({"ready": False}, 503)
        response.headers["Retry-After"] = "1"
        return response

    async def model_ready(self, name: str, version: str | None = None) -> Response:
        self._check_model(name, version)
        return await self.ready()

    async def model_metadata(self, name: str, version: str | None = None) -> Response:
        self._check_model(name, version)
        model = self.config.model
        metadata = model.metadata
        return _json(
            {
                "name": model.name,
                "versions": self._served_versions(),
                "platform": "onnxruntime_onnx" if self.config.backend == "onnx" else "pytorch_libtorch",
                "inputs": [
                    {k: v for k, v in spec.items() if k in ("name", "datatype", "shape")}
                    for spec in metadata["inputs"]
                ],
                "outputs": [
                    {k: v for k, v in spec.items() if k in ("name", "datatype", "shape")}
                    for spec in metadata["outputs"]
                ],
                "parameters": {
                    "backend": self.config.backend,
                    **self._runtime(),
                    "architecture": metadata.get("architecture", {}).get("arch"),
                    "test_accuracy": metadata.get("metrics", {}).get("test_accuracy"),
                    "created": metadata.get("created"),
                },
            }
        )

    async def metrics_endpoint(self) -> Response:
        # Workers hold batch metrics until asked; API servers write theirs within an interval.
        await asyncio.gather(
            self._worker_pool().flush_metrics(METRICS_FLUSH_TIMEOUT_S),
            asyncio.sleep(REQUEST_METRICS_SCRAPE_WAIT_S),
        )
        body = await asyncio.to_thread(
            render, self.config.metrics_dir, self.config.main_pid, self.in_flight()
        )
        return Response(body, media_type=CONTENT_TYPE)


def _natural(text: str) -> tuple[int, str]:
    return (int(text), "") if text.isdigit() else (0, text)


def _json(payload: dict[str, Any], status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")
