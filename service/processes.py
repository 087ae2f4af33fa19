"""Every use of LitServe, in one module: what it does for us, and the hooks we plug into it.

What LitServe does for this server:
- starts the inference worker processes (spawned, one per ``--workers`` and device) and builds the
  FastAPI app the API servers serve; binds the listening socket;
- supervises the inference workers: one that dies is replaced (``restart_workers``), and each reports
  when its model is loaded (``workers_setup_status``), which readiness reads;
- picks each worker's device from ``--device`` (``accelerator`` / ``devices``).

What we replaced, and why (docs/performance.md has the measurements):
- LitServe's request path (its ``/predict`` route, the ``multiprocessing.Manager`` queues and its
  batching loops): the queue hand-offs cost more than batching saved. The API servers answer the
  inference routes themselves (``service.http``) and send jobs over Unix sockets to a loop of our own
  in each worker (``service.worker.loop``), started here through LitServe's public ``LitLoop``.
- Its shutdown, which leaves children running on SIGTERM and closes the result transport before the
  API servers have finished their requests: ``MnistServer`` drains in order (API servers first, then
  workers, then LitServe's manager) and exits 0 with no child left behind.
- Its gzip middleware (answers are small and the API server's CPU is what limits throughput), its
  ``/predict``, which our routes own, and its ``/info``.
- Nothing watches LitServe's API servers once started: ``MnistServer`` replaces one that dies (with
  LitServe's own ``_start_server``, for one server), after its queue slots are given back
  (``ApiServerHooks.lost``).
- The fork start method for LitServe's manager process, which would inherit the listening socket and
  keep it open through a drain: it is spawned, so only the main process and the API servers hold the
  socket, and the main process closes its copy when a drain begins.

The private names used (underscore attributes and methods of ``LitServer``) are listed in
``PRIVATE_LITSERVE_NAMES``; ``tests/service/test_processes.py`` checks that the installed
LitServe still has each, with the signatures relied on, and names what to re-check if not.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import litserve as ls
import litserve.server
from litserve.loops import LitLoop
from litserve.specs.base import LitSpec
from starlette.middleware.gzip import GZipMiddleware
from starlette.types import ASGIApp

from service.http.listener import ServesQueuedConnections
from service.http.routes import Endpoint
from service.memory_tuning import give_large_buffers_back, tune_for_serving
from service.model.backends import auto_device
from service.worker.loop import SocketLoop
from service.worker.runner import ModelRunner

log = logging.getLogger("mnist-serve")

LISTEN_HOSTS = ("0.0.0.0", "127.0.0.1", "::")  # the addresses LitServe 0.2.19 accepts
# LitServer internals this module relies on (see the module docstring).
PRIVATE_LITSERVE_NAMES = (
    "_init_manager",
    "_prepare_app_run",
    "_start_server",
    "_start_worker_monitoring",
    "_perform_graceful_shutdown",
    "_shutdown_event",
    "_transport",
)
API_SERVER_CHECK_INTERVAL_S = 0.25


class ApiServer(ServesQueuedConnections, litserve.server._Server):
    """The uvicorn server of each API-server process: LitServe's (it names the process's worker), whose
    drain answers the connections queued on the listening socket (``service.http.listener``)."""


class RoutesSpec(LitSpec):
    """Our routes for LitServe's app. A spec is LitServe's extension point for owning routes: with
    one, LitServe adds the spec's endpoints instead of its own ``/predict``."""

    def __init__(self) -> None:
        super().__init__()
        self.api_path = "/predict"  # LitServe keys its (unused) request queue by this path

    def add_endpoints(self, endpoints: list[Endpoint]) -> None:
        for path, endpoint, methods in endpoints:
            self.add_endpoint(path, endpoint, methods)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_endpoints"] = []  # the workers serve no routes (and the handlers hold API-server state)
        return state

    def workers_ready(self) -> int:
        """Inference workers that have loaded their model (LitServe's ``workers_setup_status``)."""
        server = self._server
        status = getattr(server, "workers_setup_status", None) if server is not None else None
        if not status:
            return 0
        try:
            return sum(value == "ready" for value in status.values())
        except (OSError, EOFError, BrokenPipeError):  # the manager is gone: we are shutting down
            return 0

    # LitSpec's hooks for LitServe's own request path, which nothing takes here.
    def decode_request(self, request: Any, context_kwargs: Any = None) -> Any:
        return request

    def encode_response(self, output: Any, context_kwargs: Any = None) -> Any:
        return output


class SocketLoopAdapter(LitLoop):
    """Runs ``service.worker.loop.SocketLoop`` in each inference worker instead of LitServe's loops."""

    def __init__(self, loop: SocketLoop) -> None:
        super().__init__()
        self.loop = loop

    def run(self, lit_api: Any, device: str, worker_id: int, *_litserve_queues: Any) -> None:
        self.loop.serve(lit_api.runner, worker_id)  # never returns


class LitWorker(ls.LitAPI):
    """The LitAPI LitServe starts in each inference worker: sets up our ``ModelRunner``."""

    def __init__(self, runner: ModelRunner, loop: SocketLoop, spec: RoutesSpec, max_batch_size: int) -> None:
        super().__init__(max_batch_size=max_batch_size, spec=spec, loop=SocketLoopAdapter(loop))
        self.runner = runner

    def setup(self, device: str) -> None:
        # LitServe's inference_worker sets this before setup(); a replacement worker gets its slot's id.
        self.runner.setup(device, worker_id=int(os.environ.get("LITSERVE_WORKER_ID", "0")))

    def predict(self, x: Any, **kwargs: Any) -> Any:  # LitServe's request path, which nothing takes
        raise NotImplementedError("inference runs in service.worker.loop")


@dataclass(frozen=True)
class ApiServerHooks:
    """What the server assembly does when an API server process starts (in that process), when one is
    placed in a slot (in the main process, with the slot's index and its pid, a replacement's included)
    and when one is found dead (in the main process, with its pid, before its replacement starts)."""

    started: Callable[[], None]
    placed: Callable[[int, int], None]
    lost: Callable[[int], None]


class MnistServer(ls.LitServer):
    """LitServer with our front end in each API server, API servers that are replaced when they die,
    an orderly drain on SIGTERM/SIGINT and no orphaned children."""

    def __init__(
        self,
        worker: LitWorker,
        *,
        device: str,
        workers: int,
        front: Callable[[ASGIApp], ASGIApp],
        api_server_hooks: ApiServerHooks,
        drain_timeout: float,
        model_metadata: dict[str, str],
    ) -> None:
        accelerator, devices = _accelerator(device)
        super().__init__(
            worker,
            accelerator=accelerator,
            devices=devices,
            workers_per_device=workers,
            timeout=False,  # requests never wait in LitServe's queues
            restart_workers=True,
            model_metadata=model_metadata,
        )
        self.front = front
        self.api_server_hooks = api_server_hooks
        self._api_servers: dict[int, Any] = {}  # index -> process (LitServe's uvicorn_workers)
        self._api_server_start: tuple[int, str, list[socket.socket], str, dict[str, Any]] | None = None
        self.app.user_middleware = [m for m in self.app.user_middleware if m.cls is not GZipMiddleware]
        # LitServe's /info shows its own settings, most of which this server does not use (its queue
        # timeout, payload limit), open to anyone: the v2 metadata routes describe the model.
        self.app.router.routes = [
            r for r in self.app.router.routes if getattr(r, "path", "") != self.info_path
        ]
        self.uvicorn_graceful_timeout = drain_timeout
        self.drain_timeout = drain_timeout
        # A signal handler may interrupt any code, even a lock-holding Event.set() of an earlier signal,
        # so it only writes a byte to this pipe (async-signal-safe); a thread does the rest.
        self._signals_read, self._signals_write = os.pipe()
        os.set_blocking(self._signals_write, False)
        self._stopping = threading.Lock()
        self._stopped = False

    def serve(
        self,
        host: str,
        port: int,
        api_servers: int,
        http_protocol: Any,
        log_level: str,
        access_log: bool,
        keep_alive_timeout: float,
    ) -> None:
        """Run until SIGTERM or SIGINT, then drain. uvicorn's own keep-alive timer gets
        ``keep_alive_timeout`` too, so it never closes a connection before ``http_protocol``'s does."""
        main_pid = os.getpid()

        def on_signal(signum: int, _frame: Any) -> None:
            if os.getpid() == main_pid:  # forked helpers inherit this handler; only the main process drains
                with contextlib.suppress(BlockingIOError):  # full only if a stop is already pending
                    os.write(self._signals_write, bytes([signum]))

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        # LitServe's manager is started with the default method after the listening socket is bound:
        # forked, it would hold the socket open through a drain (connections would wait in the
        # backlog instead of being refused). Its inference workers and API servers name their own.
        multiprocessing.set_start_method("spawn", force=True)
        self.run(
            host=host,
            port=port,
            num_api_servers=api_servers,
            log_level=log_level,
            generate_client_file=False,
            access_log=access_log,
            http=http_protocol,
            timeout_keep_alive=keep_alive_timeout,
        )

    def _init_manager(self, num_api_servers: int) -> Any:
        """LitServe's, with SIGTERM and SIGINT ignored while its manager process starts: a spawned
        process keeps ignored signals, so the manager outlives signals sent to the whole process group
        (what `timeout`, systemd and shells do), which the drain still needs it for. A stop signal in
        those few hundred milliseconds of start-up is lost."""
        stop_signals = (signal.SIGTERM, signal.SIGINT)
        handlers = [signal.signal(signum, signal.SIG_IGN) for signum in stop_signals]
        try:
            return super()._init_manager(num_api_servers)
        finally:
            for signum, handler in zip(stop_signals, handlers, strict=True):
                signal.signal(signum, handler)

    def _start_server(
        self,
        port: int,
        num_uvicorn_servers: int,
        log_level: str,
        sockets: list[socket.socket],
        uvicorn_worker_type: str,
        **kwargs: Any,
    ) -> dict[int, Any]:
        """LitServe's, remembering how it was called, so that an API server that dies can be replaced."""
        self._api_server_start = (port, log_level, sockets, uvicorn_worker_type, kwargs)
        self._api_servers = self._start_api_servers(num_uvicorn_servers)
        for index, process in self._api_servers.items():
            self.api_server_hooks.placed(index, process.pid)
        return self._api_servers

    def _start_api_servers(self, count: int) -> dict[int, Any]:
        """LitServe's ``_start_server``, with ``ApiServer`` as the uvicorn server class it runs."""
        assert self._api_server_start is not None
        port, log_level, sockets, worker_type, kwargs = self._api_server_start
        litserve_server_class = litserve.server._Server
        litserve.server._Server = ApiServer
        try:
            return super()._start_server(port, count, log_level, sockets, worker_type, **kwargs)
        finally:
            litserve.server._Server = litserve_server_class

    def _supervise_api_servers(self) -> None:
        """Replace an API server that died (a crash, the OOM killer, kill -9) once its slots are back."""
        while True:
            time.sleep(API_SERVER_CHECK_INTERVAL_S)
            with self._stopping:
                if self._stopped or self._api_server_start is None:
                    return
                for index, process in list(self._api_servers.items()):
                    if process.is_alive():  # also reaps a dead one
                        continue
                    log.error("API server %s died (exit %s); replacing it", process.pid, process.exitcode)
                    self.api_server_hooks.lost(process.pid)
                    (replacement,) = self._start_api_servers(1).values()
                    self._api_servers[index] = replacement
                    self.api_server_hooks.placed(index, replacement.pid)

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
            give_large_buffers_back()
            self.api_server_hooks.started()
            yield

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
        threading.Thread(target=self._supervise_api_servers, name="api-servers", daemon=True).start()

    def _perform_graceful_shutdown(
        self, manager: Any, uvicorn_workers: Any, shutdown_reason: str = "normal"
    ) -> None:
        with self._stopping:
            if self._stopped:
                return
            self._stopped = True
        self.restart_workers = False  # the monitor must not resurrect workers we are stopping
        deadline = time.monotonic() + self.drain_timeout
        if self._api_server_start is not None:  # new connections are refused once the API servers stop
            for listening in self._api_server_start[2]:
                listening.close()
        uvicorn_workers = self._api_servers or uvicorn_workers  # replacements included
        # API servers stop accepting and finish in-flight requests while workers still answer.
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
        # Nothing can be queued any more: stop the inference workers (they ignore SIGTERM, see
        # ModelRunner.setup). Check twice: LitServe's monitor may have been restarting one meanwhile.
        self._transport.close(send_sentinel=True)
        for _ in range(2):
            for process in list(self.inference_workers):
                if process.is_alive():
                    process.kill()
                process.join(5)
            time.sleep(0.2)
        # LitServe's manager (queues) goes last.
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
