"""Contract test for what service.processes relies on in LitServe.

Every use of LitServe is in service/processes.py. A LitServe release that changes any of the names,
signatures or behaviours below fails here with what to re-check, before a server fails to start or to
drain. On an upgrade: read the changed LitServe code, re-check the named part of service/processes.py,
run tests/integration/test_lifecycle.py, then adjust this test.
"""

from __future__ import annotations

import inspect
import multiprocessing as mp
import pickle
from typing import Any

import litserve as ls
import pytest
from litserve.loops import LitLoop
from litserve.loops import loops as litserve_loops
from litserve.specs.base import LitSpec
from starlette.middleware.gzip import GZipMiddleware

from service import processes

SIGNATURES = {
    "_init_manager": ["self", "num_api_servers"],
    "_start_server": [
        "self",
        "port",
        "num_uvicorn_servers",
        "log_level",
        "sockets",
        "uvicorn_worker_type",
        "kwargs",
    ],
    "_prepare_app_run": ["self", "app"],
    "_start_worker_monitoring": ["self", "manager", "uvicorn_workers"],
    "_perform_graceful_shutdown": ["self", "manager", "uvicorn_workers", "shutdown_reason"],
    "lifespan": ["self", "app"],
}


def _source(function: Any) -> str:
    return inspect.getsource(function)


@pytest.mark.parametrize("name", sorted(SIGNATURES))
def test_the_litserver_methods_mnist_server_overrides_keep_their_signatures(name: str) -> None:
    method = getattr(ls.LitServer, name, None)
    assert method is not None, f"LitServer.{name} is gone: MnistServer overrides it (service/processes.py)"
    parameters = list(inspect.signature(method).parameters)
    assert parameters == SIGNATURES[name], (
        f"LitServer.{name}{inspect.signature(method)} changed: "
        f"re-check MnistServer.{name} in service/processes.py"
    )


def test_the_private_state_mnist_server_reads_is_still_set_where_expected() -> None:
    manager_setup = _source(ls.LitServer._init_manager)
    for attribute in ("workers_setup_status", "_shutdown_event", "_transport"):
        assert f"self.{attribute} =" in manager_setup, (
            f"LitServer._init_manager no longer sets {attribute}: re-check RoutesSpec.workers_ready and "
            "MnistServer's drain (_relay_stop, _perform_graceful_shutdown) in service/processes.py"
        )
    assert set(processes.PRIVATE_LITSERVE_NAMES) <= {*SIGNATURES, "_shutdown_event", "_transport"}
    start = _source(ls.LitServer._start_server)
    assert (
        "self._prepare_app_run(app)" in start
        and "timeout_graceful_shutdown=self.uvicorn_graceful_timeout" in (start)
    ), "LitServer._start_server changed how it builds each API server's app: re-check MnistServer.__init__"
    assert "server = _Server(config=uvicorn_config)" in start, (
        "LitServer._start_server no longer runs litserve.server._Server: re-check ApiServer and "
        "MnistServer._start_api_servers (service/processes.py)"
    )
    run = _source(ls.LitServer.run)
    assert "self._start_worker_monitoring(" in run and "self._perform_graceful_shutdown(" in run, (
        "LitServer.run no longer monitors workers / shuts down through the methods MnistServer overrides"
    )
    assert "self.restart_workers" in _source(ls.LitServer._start_worker_monitoring), (
        "LitServer's worker monitor no longer reads restart_workers: "
        "MnistServer's drain sets it to stop restarts"
    )


def test_litserve_still_adds_a_gzip_middleware_that_mnist_server_removes() -> None:
    server_init = _source(ls.LitServer.__init__)
    assert "GZipMiddleware" in server_init, (
        "LitServer no longer adds GZipMiddleware: drop its removal from MnistServer.__init__"
    )
    assert GZipMiddleware.__name__ == "GZipMiddleware"


def test_litserve_still_names_its_info_route_that_mnist_server_removes() -> None:
    assert "self.info_path = info_path" in _source(ls.LitServer.__init__), (
        "LitServer no longer keeps its /info path in info_path: re-check its removal in MnistServer.__init__"
    )


def test_a_spec_still_replaces_litserves_own_predict_route_and_learns_its_server() -> None:
    register = _source(ls.LitServer._register_spec_endpoints)
    assert "spec._server = self" in register and "spec.endpoints" in register, (
        "LitServer registers a spec's endpoints differently: re-check RoutesSpec (service/processes.py)"
    )
    assert "_register_spec_endpoints" in _source(ls.LitServer._register_api_endpoints)


def test_the_worker_loop_is_still_started_through_litloop_run() -> None:
    worker = _source(litserve_loops.inference_worker)
    assert "lit_api.setup(device)" in worker and "loop(" in worker, (
        "LitServe's inference_worker no longer sets up the LitAPI and calls its loop: re-check LitWorker and "
        "SocketLoopAdapter (service/processes.py)"
    )
    worker_id = 'os.environ["LITSERVE_WORKER_ID"] = str(worker_id)'
    assert worker_id in worker and worker.index(worker_id) < worker.index("lit_api.setup(device)"), (
        "LitServe no longer sets LITSERVE_WORKER_ID before setup(): re-check LitWorker.setup, which names "
        "the worker's process metrics by it (service/processes.py)"
    )
    assert "self.run(" in _source(LitLoop.__call__), (
        "LitLoop.__call__ no longer calls run(): re-check SocketLoopAdapter.run (service/processes.py)"
    )
    assert "READY" in worker and str(litserve_loops.WorkerSetupStatus.READY) in (
        "ready",
        "WorkerSetupStatus.READY",
    )
    assert litserve_loops.WorkerSetupStatus.READY == "ready", (
        "LitServe's 'ready' worker status changed: re-check RoutesSpec.workers_ready"
    )


def test_the_routes_spec_pickles_for_spawned_workers_without_its_endpoints() -> None:
    # LitServe spawns inference workers and pickles the LitAPI with its spec; the route handlers hold
    # API-server state (a fork-only semaphore) that must not travel.
    slots = mp.get_context("fork").Semaphore(1)

    async def endpoint() -> Any:
        return slots

    spec = processes.RoutesSpec()
    spec.add_endpoints([("/x", endpoint, ["GET"])])
    assert spec.endpoints
    restored = pickle.loads(pickle.dumps(spec))
    assert isinstance(restored, LitSpec) and restored.endpoints == []
