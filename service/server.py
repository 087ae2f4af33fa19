"""Assemble the server: verify the model, build the LitAPI + spec, add error handling, run, drain.

LitServe 0.2.19 leaves its children running when the main process gets SIGTERM, and its shutdown
closes the result transport *before* the API servers finish their in-flight requests. ``MnistServer``
fixes both: signals become an orderly drain (API servers first, with a deadline; then workers; then
LitServe's manager), and the process exits 0 with no child left behind.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from importlib import metadata as package_metadata
from pathlib import Path
from typing import Any

import litserve as ls
import orjson
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.gzip import GZipMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api import DigitAPI, WorkerConfig
from service.backends import load_backend
from service.collector import tune_for_serving
from service.cpus import usable_cpus
from service.demo import install_demo_page
from service.errors import NotFound, PayloadTooLarge, ServiceError, StartupError
from service.metrics import prepare_directory, remove_directory
from service.openapi import describe_bodies
from service.protocol import Limits
from service.repository import ModelVersion, resolve
from service.routes import InferenceSpec, RouteConfig
from service.settings import Settings
from service.worker_loop import SocketLoop

log = logging.getLogger("mnist-serve")


def _error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps({"error": message}), status_code=status, headers=headers, media_type="application/json"
    )


MAX_LABEL_SETS = 1024  # methods are client-chosen: bound what a scanner can make us keep


class RequestObserver:
    """Outermost ASGI middleware: body-size limit, and request count + latency for every response."""

    def __init__(self, app: ASGIApp, spec: InferenceSpec, max_bytes: int) -> None:
        self.app = app
        self.spec = spec
        self.max_bytes = max_bytes
        # Per API-server process (this object is forked with an empty cache).
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise PayloadTooLarge(f"request body exceeds {self.max_bytes} bytes")
            return message

        async def observed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            if declared.isdigit() and int(declared) > self.max_bytes:
                self.spec.metrics.rejected.labels(PayloadTooLarge.reason).inc()
                response = _error_response(
                    413, f"request body of {int(declared)} bytes exceeds {self.max_bytes} bytes"
                )
                await response(scope, receive, observed_send)
                return
            await self.app(scope, limited_receive, observed_send)
        finally:
            path = getattr(scope.get("route"), "path", "unmatched")
            key = (path, scope["method"], status)
            children = self._children.get(key)
            if children is None:  # labels() costs a lock and a lookup: once per route, method and status
                metrics = self.spec.metrics
                children = (
                    metrics.requests.labels(path, key[1], str(status)),
                    metrics.request_latency.labels(path),
                )
                if len(self._children) < MAX_LABEL_SETS:
                    self._children[key] = children
            children[0].inc()
            children[1].observe(time.perf_counter() - started)


def service_error_response(spec: InferenceSpec, error: ServiceError) -> Response:
    spec.metrics.rejected.labels(error.reason).inc()
    if error.status >= 500 and not isinstance(error.headers, dict):
        log.error("request failed: %s", error.message)
    return _error_response(error.status, error.message, error.headers)


def unexpected_error_response(error: Exception) -> Response:
    log.exception("unhandled error", exc_info=error)
    return _error_response(500, "internal server error")


@dataclass(frozen=True)
class _RouteLabel:
    path: str  # what RequestObserver labels the request with, as FastAPI's matched route would


class DirectRoutes:
    """Send the inference routes straight to their handlers, past FastAPI's middleware, router,
    dependency resolution and exception layers: that machinery cost more API-server CPU per request
    than parsing the request itself (py-spy, docs/performance.md). Every other route goes through
    FastAPI. Sits just inside RequestObserver, so limits, metrics and error bodies are the same on
    both paths."""

    def __init__(self, app: ASGIApp, spec: InferenceSpec) -> None:
        self.app = app
        self.spec = spec

    def _match(self, scope: Scope) -> tuple[_RouteLabel, Any, dict[str, str]] | None:
        if scope["type"] != "http" or scope["method"] != "POST":
            return None
        path: str = scope["path"]
        if path == "/predict":
            return _RouteLabel("/predict"), self.spec.predict, {}
        parts = path.split("/")
        # /v2/models/{name}/infer and /v2/models/{name}/versions/{version}/infer
        if len(parts) == 5 and parts[1:3] == ["v2", "models"] and parts[4] == "infer" and parts[3]:
            return _RouteLabel("/v2/models/{name}/infer"), self.spec.v2_infer, {"name": parts[3]}
        if (
            len(parts) == 7
            and parts[1:3] == ["v2", "models"]
            and parts[4] == "versions"
            and parts[6] == "infer"
            and parts[3]
            and parts[5]
        ):
            label = _RouteLabel("/v2/models/{name}/versions/{version}/infer")
            return label, self.spec.v2_infer, {"name": parts[3], "version": parts[5]}
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        matched = self._match(scope)
        if matched is None:
            await self.app(scope, receive, send)
            return
        label, handler, path_params = matched
        scope["route"] = label
        try:
            response = await handler(Request(scope, receive), **path_params)
        except ServiceError as error:
            response = service_error_response(self.spec, error)
        except Exception as error:
            response = unexpected_error_response(error)
        await response(scope, receive, send)


def front_of_app(app: ASGIApp, spec: InferenceSpec, max_bytes: int) -> ASGIApp:
    """What every request meets first: limits and metrics, then the direct inference routes."""
    return RequestObserver(DirectRoutes(app, spec), spec, max_bytes)


def install_error_handlers(app: Any, spec: InferenceSpec) -> None:
    """One place maps every failure to ``{"error": ...}`` with its status, and counts it."""

    async def service_error(_: Request, error: Exception) -> Response:
        assert isinstance(error, ServiceError)
        return service_error_response(spec, error)

    async def http_error(_: Request, error: Exception) -> Response:
        assert isinstance(error, StarletteHTTPException)
        reason = {404: NotFound.reason, 405: "method_not_allowed"}.get(
            error.status_code, f"http_{error.status_code}"
        )
        spec.metrics.rejected.labels(reason).inc()
        return _error_response(error.status_code, str(error.detail), getattr(error, "headers", None))

    async def validation_error(_: Request, error: Exception) -> Response:
        spec.metrics.rejected.labels("invalid_input").inc()
        return _error_response(422, f"invalid request: {error}")

    async def unexpected(_: Request, error: Exception) -> Response:
        return unexpected_error_response(error)

    app.add_exception_handler(ServiceError, service_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, unexpected)


class MnistServer(ls.LitServer):
    """LitServer with an orderly drain on SIGTERM/SIGINT and no orphaned children."""

    def __init__(
        self, *args: Any, drain_timeout: float, front: Callable[[ASGIApp], ASGIApp], **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.front = front
        # LitServe gzips every response over 1 kB. The answers are small JSON (or binary tensors) and the
        # API server's CPU is what limits throughput, so compression would cost more than it saves.
        self.app.user_middleware = [m for m in self.app.user_middleware if m.cls is not GZipMiddleware]
        self.uvicorn_graceful_timeout = drain_timeout
        self.drain_timeout = drain_timeout
        # A signal handler may interrupt any code, even a lock-holding Event.set() of an earlier signal,
        # so it only writes a byte to this pipe (async-signal-safe); a thread does the rest.
        self._signals_read, self._signals_write = os.pipe()
        os.set_blocking(self._signals_write, False)
        self._stopping = threading.Lock()
        self._stopped = False

    def _prepare_app_run(self, app: Any) -> None:
        """Put ``front`` before the whole FastAPI stack of each API server's app (its error, telemetry
        and body-limit layers included): the inference routes need none of them."""
        super()._prepare_app_run(app)
        app.middleware_stack = self.front(app.build_middleware_stack())

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Any) -> AsyncIterator[None]:
        """Runs in each API-server process once its app is built (FastAPI's lifespan)."""
        async with super().lifespan(app):
            tune_for_serving()
            yield

    def request_stop(self, signum: int, _frame: Any) -> None:
        with contextlib.suppress(BlockingIOError):  # the pipe is full only if a stop is already pending
            os.write(self._signals_write, bytes([signum]))

    def _relay_stop(self) -> None:
        # The main thread waits inside a manager call; setting the event from this thread, with its own
        # manager connection, wakes it.
        signum = os.read(self._signals_read, 1)[0]
        log.info("received %s: draining", signal.Signals(signum).name)
        if self._shutdown_event is not None:
            self._shutdown_event.set()

    def _start_worker_monitoring(self, manager: Any, uvicorn_workers: Any) -> None:
        super()._start_worker_monitoring(manager, uvicorn_workers)
        threading.Thread(target=self._relay_stop, name="stop-relay", daemon=True).start()

    def _perform_graceful_shutdown(
        self, manager: Any, uvicorn_workers: Any, shutdown_reason: str = "normal"
    ) -> None:
        with self._stopping:
            if self._stopped:
                return
            self._stopped = True
        self.restart_workers = False  # the monitor must not resurrect workers we are stopping
        deadline = time.monotonic() + self.drain_timeout
        # 1. API servers stop accepting and finish in-flight requests while workers still answer.
        for process in uvicorn_workers.values():
            if process.is_alive():
                process.terminate()
        for process in uvicorn_workers.values():
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                log.warning(
                    "API server %s did not drain within %.0f s; killing it", process.pid, self.drain_timeout
                )
                process.kill()
                process.join(5)
        # 2. Nothing can be queued any more: stop the inference workers (they ignore SIGTERM, see
        # DigitAPI.setup). Check twice: LitServe's monitor may have been restarting one meanwhile.
        self._transport.close(send_sentinel=True)
        for _ in range(2):
            for process in list(self.inference_workers):
                if process.is_alive():
                    process.kill()
                process.join(5)
            time.sleep(0.2)
        # 3. LitServe's manager (queues) goes last.
        manager.shutdown()
        log.info("stopped (%s)", shutdown_reason)


def _accelerator(device: str) -> tuple[str, Any]:
    if device == "cpu":
        return "cpu", "auto"
    if device == "auto":
        return "auto", "auto"
    if device == "cuda":
        return "cuda", "auto"
    return "cuda", [int(device.split(":", 1)[1])]


LISTEN_HOSTS = ("0.0.0.0", "127.0.0.1", "::")  # the addresses LitServe 0.2.19 accepts


def check_listen_address(settings: Settings) -> None:
    if settings.host not in LISTEN_HOSTS:
        raise StartupError(f"--host must be one of {', '.join(LISTEN_HOSTS)} (got {settings.host!r})")
    if not 1024 <= settings.port <= 65535:
        raise StartupError(f"--port must be within 1024..65535 (got {settings.port})")
    if settings.request_timeout and settings.batch_timeout >= settings.request_timeout:
        raise StartupError("--batch-timeout must be shorter than --request-timeout")


def check_model(settings: Settings) -> ModelVersion:
    """Verify the version and load it once, so that any problem is a one-line refusal to start."""
    model = resolve(settings.model_repository, settings.model_name, settings.model_version, settings.backend)
    trial_device = "cpu" if settings.device == "auto" else settings.device
    load_backend(model, settings.backend, trial_device, strict=True)
    return model


MAX_AUTO_API_SERVERS = 8  # each is a full Python process; past this, add pods instead


def api_server_count(settings: Settings) -> int:
    """--api-servers, or for auto one per usable CPU: one API server saturates a core with request
    handling long before the worker does (docs/performance.md)."""
    return settings.api_servers or min(usable_cpus(), MAX_AUTO_API_SERVERS)


def build_server(settings: Settings, model: ModelVersion, metrics_dir: Path, socket_dir: Path) -> MnistServer:
    cores = usable_cpus()
    worker = WorkerConfig(
        model=model,
        backend=settings.backend,
        device=settings.device,
        warmup_images=settings.max_batch_size,
        low_confidence=settings.low_confidence,
        runtime_dir=metrics_dir,
        threads=max(1, cores // settings.workers) if settings.workers > 1 else None,
        log_level=settings.log_level,
        poll_interval_s=settings.poll_interval if settings.model_version == "latest" else 0.0,
    )
    spec = InferenceSpec(
        RouteConfig(
            model=model,
            backend=settings.backend,
            limits=Limits(max_images=settings.max_images_per_request, max_pixels=settings.max_image_pixels),
            queue_limit=settings.queue_limit,
            request_timeout=settings.request_timeout,
            api_key=settings.api_key,
            metrics_dir=metrics_dir,
            socket_dir=socket_dir,
            main_pid=os.getpid(),
            server_version=package_metadata.version("mnist-serving"),
        )
    )
    loop = SocketLoop(
        socket_dir,
        max_jobs=settings.max_batch_size,
        batch_timeout=settings.batch_timeout,
        request_timeout=settings.request_timeout,
    )
    api = DigitAPI(
        worker,
        max_batch_size=settings.max_batch_size,
        batch_timeout=settings.batch_timeout,
        spec=spec,
        loop=loop,
    )
    accelerator, devices = _accelerator(settings.device)
    server = MnistServer(
        api,
        accelerator=accelerator,
        devices=devices,
        workers_per_device=settings.workers,
        timeout=settings.request_timeout or False,
        restart_workers=True,
        model_metadata={"name": model.name, "version": model.version, "backend": settings.backend},
        front=functools.partial(front_of_app, spec=spec, max_bytes=settings.max_request_bytes),
        drain_timeout=settings.drain_timeout,
    )
    install_error_handlers(server.app, spec)
    describe_bodies(server.app)
    if settings.demo:
        install_demo_page(server.app)
    return server


def serve(settings: Settings) -> int:
    metrics_dir = prepare_directory(settings.metrics_dir)
    socket_dir = Path(tempfile.mkdtemp(prefix="mnist-"))  # short: a socket path must fit in 108 bytes
    try:
        check_listen_address(settings)
        model = check_model(settings)
        log.info("model %s version %s verified (%s)", model.name, model.version, model.folder)
        log.info(
            "%d API server(s), %d inference worker(s) per device",
            api_server_count(settings),
            settings.workers,
        )
        server = build_server(settings, model, metrics_dir, socket_dir)
        main_pid = os.getpid()

        def on_signal(signum: int, frame: Any) -> None:
            if os.getpid() == main_pid:  # forked helpers inherit this handler; only the main process drains
                server.request_stop(signum, frame)

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        server.run(
            host=settings.host,
            port=settings.port,
            num_api_servers=api_server_count(settings),
            log_level=settings.log_level,
            generate_client_file=False,
            access_log=settings.access_log,
        )
    finally:
        remove_directory(socket_dir)
        if settings.metrics_dir is None:
            remove_directory(metrics_dir)
    return 0
