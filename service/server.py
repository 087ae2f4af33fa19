"""Assemble the server from its parts, check what can be checked before starting, run until stopped.

The processes (``service.processes`` starts them): the main process supervises; each API
server runs ``service.http`` (the direct protocol and the ASGI app with the other routes) and hands
validated pixels to the inference workers over ``service.ipc``; each worker runs ``service.worker``.
"""

from __future__ import annotations

import functools
import logging
import os
import tempfile
from collections.abc import Callable
from importlib import metadata as package_metadata
from pathlib import Path
from typing import Any

from starlette.types import ASGIApp

from service.cpus import usable_cpus
from service.errors import StartupError
from service.http.admission import Admission
from service.http.asgi import front_of_app
from service.http.bodies import Limits
from service.http.connection_limits import ConnectionLimits
from service.http.demo import install_demo_page
from service.http.direct import DirectHttpProtocol
from service.http.inference import InferenceConfig, InferenceHandler
from service.http.openapi import describe_inference_routes
from service.http.request_metrics import RequestMetrics
from service.http.routes import ServerInfo, ServerRoutes, install_error_handlers
from service.http.served_model import ServedModel
from service.metrics import prepare_directory, remove_directory
from service.model.backends import load_backend
from service.model.repository import ModelVersion, resolve
from service.process_metrics import name_process
from service.processes import LISTEN_HOSTS, ApiServerHooks, LitWorker, MnistServer, RoutesSpec
from service.settings import Settings
from service.worker.loop import SocketLoop
from service.worker.runner import ModelRunner, WorkerConfig

log = logging.getLogger("mnist-serve")


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


def worker_threads(settings: Settings) -> int:
    """Compute threads per inference worker: the usable CPUs shared among the workers. ONNX Runtime's
    own default is the machine's cores, which a pod's CPU limit does not lower."""
    return max(1, usable_cpus() // settings.workers)


def _server_version() -> str:
    try:
        return package_metadata.version("mnist-serving")
    except package_metadata.PackageNotFoundError:  # run from a source checkout (python -m service)
        return "0+source"


def build_server(
    settings: Settings, model: ModelVersion, metrics_dir: Path, socket_dir: Path
) -> tuple[MnistServer, Any]:
    """The server and the HTTP protocol its API servers speak (uvicorn's ``http=``)."""
    metrics = RequestMetrics()
    served = ServedModel(model, settings.backend, runtime_dir=metrics_dir)
    handler = InferenceHandler(
        InferenceConfig(
            limits=Limits(max_images=settings.max_images_per_request, max_pixels=settings.max_image_pixels),
            api_servers=api_server_count(settings),
            queue_limit=settings.queue_limit,
            request_timeout=settings.request_timeout,
            api_key=settings.api_key,
            socket_dir=socket_dir,
            max_body_bytes=settings.max_request_bytes,
            decode_timeout=settings.decode_timeout,
        ),
        served,
        metrics,
    )
    spec = RoutesSpec()
    routes = ServerRoutes(
        ServerInfo(
            version=_server_version(), main_pid=os.getpid(), metrics_dir=metrics_dir, socket_dir=socket_dir
        ),
        served,
        handler,
        workers_ready=spec.workers_ready,
    )
    spec.add_endpoints(routes.endpoints())
    runner = ModelRunner(
        WorkerConfig(
            model=model,
            backend=settings.backend,
            device=settings.device,
            warmup_images=settings.max_batch_size,
            low_confidence=settings.low_confidence,
            runtime_dir=metrics_dir,
            threads=worker_threads(settings),
            log_level=settings.log_level,
            poll_interval_s=settings.poll_interval if settings.model_version == "latest" else 0.0,
        )
    )
    loop = SocketLoop(
        socket_dir,
        max_jobs=settings.max_batch_size,
        batch_timeout=settings.batch_timeout,
        request_timeout=settings.request_timeout,
    )

    def front(app: ASGIApp) -> ASGIApp:
        return front_of_app(app, handler, metrics, settings.max_request_bytes)

    server = MnistServer(
        LitWorker(runner, loop, spec, max_batch_size=settings.max_batch_size),
        device=settings.device,
        workers=settings.workers,
        front=front,
        api_server_hooks=ApiServerHooks(
            started=handler.admission.claim,
            placed=lambda index, pid: name_process(metrics_dir, pid, f"api-{index}"),
            lost=_reclaim(handler.admission),
        ),
        drain_timeout=settings.drain_timeout,
        model_metadata={"name": model.name, "version": model.version, "backend": settings.backend},
    )
    install_error_handlers(server.app, metrics)
    describe_inference_routes(server.app)
    if settings.demo:
        install_demo_page(server.app)
    limits = ConnectionLimits(
        max_url_bytes=settings.max_url_bytes,
        max_header_bytes=settings.max_header_bytes,
        max_headers=settings.max_headers,
        header_timeout=settings.header_timeout,
        body_timeout=settings.body_timeout,
        keep_alive_timeout=settings.keep_alive_timeout,
        max_buffered_body_bytes=settings.max_buffered_body_bytes,
    )
    http_protocol = functools.partial(DirectHttpProtocol, handler=handler, limits=limits)
    return server, http_protocol


def _reclaim(admission: Admission) -> Callable[[int], None]:
    def lost(pid: int) -> None:
        log.warning("gave back the %d queue slot(s) API server %d held", admission.reclaim(pid), pid)

    return lost


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
        server, http_protocol = build_server(settings, model, metrics_dir, socket_dir)
        server.serve(
            host=settings.host,
            port=settings.port,
            api_servers=api_server_count(settings),
            http_protocol=http_protocol,
            keep_alive_timeout=settings.keep_alive_timeout,
            log_level=settings.log_level,
            access_log=settings.access_log,
        )
    finally:
        remove_directory(socket_dir)
        if settings.metrics_dir is None:
            remove_directory(metrics_dir)
    return 0
