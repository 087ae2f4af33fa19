"""Every route but inference: health, server and model metadata, Prometheus metrics, and the error
handlers of the FastAPI app they run in.

They are FastAPI routes, so ``/docs`` and ``/openapi.json`` describe them; the inference routes are
answered before FastAPI (``service.http.inference``) and described in ``service.http.openapi``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.errors import NotFound, ServiceError
from service.http.inference import InferenceHandler
from service.http.replies import as_response, error_reply, json_reply
from service.http.request_metrics import RequestMetrics
from service.http.served_model import ServedModel
from service.http.shared_renders import SharedRenders
from service.ipc.sockets import worker_sockets
from service.metrics import CONTENT_TYPE, REQUEST_METRICS_SCRAPE_WAIT_S, ServerState, render

SERVER_NAME = "mnist-serving"
# A scrape waits at most this long for the workers to write what they hold, as long as it waits for the
# API servers: a worker in the middle of a long batch answers after it, and a scrape must not queue
# behind inference (it then shows what the workers wrote so far, at most 0.5 s old).
METRICS_FLUSH_TIMEOUT_S = REQUEST_METRICS_SCRAPE_WAIT_S
SCRAPE_TICK_S = 0.1  # scrapes due within one tick share a render (service.http.shared_renders)
Endpoint = tuple[str, Callable[..., Awaitable[Response]], list[str]]  # path, handler, methods


@dataclass(frozen=True)
class ServerInfo:
    version: str  # this package's
    main_pid: int  # the root of the process tree the process metrics cover
    metrics_dir: Path  # prometheus_client's multiprocess files
    socket_dir: Path  # where the inference workers listen


class ServerRoutes:
    def __init__(
        self,
        info: ServerInfo,
        model: ServedModel,
        handler: InferenceHandler,
        workers_ready: Callable[[], int],
    ) -> None:
        self.info = info
        self.model = model
        self.handler = handler
        self.workers_ready = workers_ready  # inference workers with their model loaded
        self._renders = SharedRenders(self._render_metrics, REQUEST_METRICS_SCRAPE_WAIT_S, SCRAPE_TICK_S)

    def endpoints(self) -> list[Endpoint]:
        endpoints: list[Endpoint] = []
        for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
            endpoints.append((prefix, self.model_metadata, ["GET"]))
            endpoints.append((prefix + "/ready", self.model_ready, ["GET"]))
        endpoints += [
            ("/v2", self.server_metadata, ["GET"]),
            ("/v2/health/live", self.live, ["GET"]),
            ("/v2/health/ready", self.ready, ["GET"]),
            ("/metrics", self.metrics, ["GET"]),
        ]
        return endpoints

    async def server_metadata(self) -> Response:
        return _json(
            {
                "name": SERVER_NAME,
                "version": self.info.version,
                "extensions": ["binary_tensor_data", "model_repository_readonly"],
            }
        )

    async def live(self) -> Response:
        return _json({"live": True})

    async def ready(self) -> Response:
        if self._is_ready():
            return _json({"ready": True})
        return as_response(json_reply(503, {"ready": False}, {"Retry-After": "1"}))

    def _is_ready(self) -> bool:
        # Ready while one worker serves (this API server does): workers report ready just before
        # they listen. With --workers 2, one being replaced leaves the other serving.
        return self.workers_ready() > 0 and bool(worker_sockets(self.info.socket_dir))

    async def model_ready(self, name: str, version: str | None = None) -> Response:
        self.model.check(name, version)
        return await self.ready()

    async def model_metadata(self, name: str, version: str | None = None) -> Response:
        self.model.check(name, version)
        model = self.model.model
        metadata = model.metadata

        def described(tensors: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [{k: v for k, v in t.items() if k in ("name", "datatype", "shape")} for t in tensors]

        return _json(
            {
                "name": model.name,
                "versions": self.model.versions(),
                "platform": "onnxruntime_onnx" if self.model.backend == "onnx" else "pytorch_libtorch",
                "inputs": described(metadata["inputs"]),
                "outputs": described(metadata["outputs"]),
                "parameters": {
                    "backend": self.model.backend,
                    **self.model.runtime(),
                    "architecture": metadata.get("architecture", {}).get("arch"),
                    "test_accuracy": metadata.get("metrics", {}).get("test_accuracy"),
                    "created": metadata.get("created"),
                },
            }
        )

    async def metrics(self) -> Response:
        # API servers write their request metrics within an interval: a render waits that long.
        return Response(await self._renders.get(), media_type=CONTENT_TYPE)

    async def _render_metrics(self) -> bytes:
        await self.handler.workers.flush_metrics(METRICS_FLUSH_TIMEOUT_S)  # they hold batch metrics
        state = ServerState(
            in_flight=self.handler.admission.in_flight(),
            api_servers=self.handler.admission.api_servers(),
            workers_ready=self.workers_ready(),
        )
        # On the event loop (5-15 ms): in a thread it waited for the GIL behind a busy loop, and under
        # overload a scrape took up to 0.5 s (benchmarks/overload.py, alternated runs).
        return render(self.info.metrics_dir, self.info.main_pid, state)


def _json(payload: dict[str, Any]) -> Response:
    return as_response(json_reply(200, payload))


def install_error_handlers(app: FastAPI, metrics: RequestMetrics) -> None:
    """Every failure in a FastAPI route becomes ``{"error": ...}`` with its status, and is counted."""

    async def service_error(_: Request, error: Exception) -> Response:
        assert isinstance(error, ServiceError)
        metrics.reject(error.reason)
        return as_response(error_reply(error))

    async def http_error(_: Request, error: Exception) -> Response:
        assert isinstance(error, StarletteHTTPException)
        reason = {404: NotFound.reason, 405: "method_not_allowed"}.get(
            error.status_code, f"http_{error.status_code}"
        )
        metrics.reject(reason)
        return as_response(json_reply(error.status_code, {"error": str(error.detail)}, error.headers))

    async def validation_error(_: Request, error: Exception) -> Response:
        metrics.reject("invalid_input")
        return as_response(json_reply(422, {"error": f"invalid request: {error}"}))

    async def unexpected(_: Request, error: Exception) -> Response:
        return as_response(error_reply(error))

    app.add_exception_handler(ServiceError, service_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, unexpected)
