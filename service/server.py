"""Assemble the server: verify the model, build the LitAPI + spec, add error handling, run, drain.

LitServe 0.2.19 leaves its children running when the main process gets SIGTERM, and its shutdown
closes the result transport *before* the API servers finish their in-flight requests. ``MnistServer``
fixes both: signals become an orderly drain (API servers first, with a deadline; then workers; then
LitServe's manager), and the process exits 0 with no child left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable
from importlib import metadata as package_metadata
from pathlib import Path
from typing import Any

import litserve as ls
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.gzip import GZipMiddleware
from starlette.types import ASGIApp

from service.api import DigitAPI, WorkerConfig
from service.backends import auto_device, load_backend
from service.collector import tune_for_serving
from service.cpus import usable_cpus
from service.demo import install_demo_page
from service.errors import NotFound, ServiceError, StartupError
from service.fast_http import bind
from service.front import (
    RequestMetrics,
    front_of_app,
    json_error,
    service_error_response,
    unexpected_error_response,
)
from service.metrics import prepare_directory, remove_directory
from service.openapi import describe_bodies
from service.protocol import Limits
from service.repository import ModelVersion, resolve
from service.routes import InferenceSpec, RouteConfig
from service.settings import Settings
from service.worker_loop import SocketLoop

log = logging.getLogger("mnist-serve")


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
        return json_error(error.status_code, str(error.detail), getattr(error, "headers", None))

    async def validation_error(_: Request, error: Exception) -> Response:
        spec.metrics.rejected.labels("invalid_input").inc()
        return json_error(422, f"invalid request: {error}")

    async def unexpected(_: Request, error: Exception) -> Response:
        return unexpected_error_response(error)

    app.add_exception_handler(ServiceError, service_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, unexpected)


class MnistServer(ls.LitServer):
    """LitServer with an orderly drain on SIGTERM/SIGINT and no orphaned children."""

    def __init__(
        self,
        *args: Any,
        drain_timeout: float,
        front: Callable[[ASGIApp], ASGIApp],
        http_protocol: type[asyncio.Protocol],
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.front = front
        self.http_protocol = http_protocol  # uvicorn's http=, in every API server (service.fast_http)
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
    """LitServe's accelerator and devices for --device. "auto" is decided here: LitServe 0.2.19's own
    "auto" imports torch to look for Apple's MPS (seconds of start-up, hundreds of MB in the main
    process and every API server forked from it), and picks the CPU even where ``nvidia-smi`` lists a
    GPU unless torch happens to be imported already."""
    if device == "cpu":
        return "cpu", "auto"
    if device == "auto":
        return auto_device(), "auto"
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


def _server_version() -> str:
    try:
        return package_metadata.version("mnist-serving")
    except package_metadata.PackageNotFoundError:  # run from a source checkout (python -m service)
        return "0+source"


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
            server_version=_server_version(),
        )
    )
    request_metrics = RequestMetrics(spec)
    http_protocol = bind(spec, request_metrics.observe, settings.max_request_bytes)
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
        front=functools.partial(
            front_of_app, spec=spec, max_bytes=settings.max_request_bytes, metrics=request_metrics
        ),
        drain_timeout=settings.drain_timeout,
        http_protocol=http_protocol,
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
            http=server.http_protocol,
        )
    finally:
        remove_directory(socket_dir)
        if settings.metrics_dir is None:
            remove_directory(metrics_dir)
    return 0
