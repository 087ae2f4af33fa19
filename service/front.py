"""What every HTTP request meets first in an API server: limits, metrics, and the direct inference routes.

``RequestObserver`` (body-size limit, request count and latency) wraps ``DirectRoutes`` (the inference
routes straight to their handlers), which wraps FastAPI's whole stack for every other route. The same
matching, error mapping and metrics serve ``service.fast_http``, which takes the inference routes before
they become ASGI requests at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing.util
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from fastapi import Request, Response
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import CLIENT_CLOSED_REQUEST, PayloadTooLarge, ServiceError
from service.metrics import REQUEST_METRICS_INTERVAL_S, observe_many
from service.routes import InferenceSpec

log = logging.getLogger("mnist-serve")


def json_error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """The body every error has: {"error": message}."""
    return Response(
        orjson.dumps({"error": message}), status_code=status, headers=headers, media_type="application/json"
    )


MAX_LABEL_SETS = 1024  # methods are client-chosen: bound what a scanner can make us keep
MAX_HELD_OBSERVATIONS = 4096  # bounds the memory held if the timer is late


class RequestMetrics:
    """Request count and latency by route, method and status, with the labelled children cached.

    Each observation is a locked write to a memory-mapped file (three per request, and a Python loop
    over the histogram's buckets). Under load an event-loop turn finishes only a few requests, so
    writing them per turn still cost ~10 µs of a request (docs/performance.md): observations are held
    and written together ``REQUEST_METRICS_INTERVAL_S`` after the first one. A scrape waits
    ``REQUEST_METRICS_SCRAPE_WAIT_S``, so every API server has written what it answered before the
    scrape arrived; a killed API server loses at most its last interval's observations (on a clean
    stop they are written).
    """

    def __init__(self, spec: InferenceSpec) -> None:
        self.spec = spec
        # Per API-server process (this object is forked with an empty cache).
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._pending: dict[tuple[str, str, int], list[float]] = {}
        self._held = 0
        self._finalizer_pid = 0

    def observe(self, path: str, method: str, status: int, started: float) -> None:
        first = not self._pending
        self._pending.setdefault((path, method, status), []).append(time.perf_counter() - started)
        self._held += 1
        if first:
            try:
                asyncio.get_running_loop().call_later(REQUEST_METRICS_INTERVAL_S, self.flush)
            except RuntimeError:  # no event loop (a direct call): nothing to wait for
                self.flush()
                return
            if self._finalizer_pid != os.getpid():  # written on a clean exit too (forked: once per process)
                self._finalizer_pid = os.getpid()
                multiprocessing.util.Finalize(self, self.flush, exitpriority=10)
        elif self._held >= MAX_HELD_OBSERVATIONS:
            self.flush()  # the timer then finds nothing to write

    def flush(self) -> None:
        pending, self._pending, self._held = self._pending, {}, 0
        for key, latencies in pending.items():
            count, latency = self._labelled(key)
            count.inc(len(latencies))
            observe_many(latency, np.array(latencies))

    def _labelled(self, key: tuple[str, str, int]) -> tuple[Any, Any]:
        children = self._children.get(key)
        if children is None:  # labels() costs a lock and a lookup: once per route, method and status
            path, method, status = key
            metrics = self.spec.metrics
            children = (
                metrics.requests.labels(path, method, str(status)),
                metrics.request_latency.labels(path),
            )
            if len(self._children) < MAX_LABEL_SETS:
                self._children[key] = children
        return children


class RequestObserver:
    """Outermost ASGI middleware: body-size limit, and request count + latency for every response."""

    def __init__(self, app: ASGIApp, spec: InferenceSpec, max_bytes: int, metrics: RequestMetrics) -> None:
        self.app = app
        self.spec = spec
        self.max_bytes = max_bytes
        self.metrics = metrics

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
                raise PayloadTooLarge.body(self.max_bytes)
            return message

        async def observed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            if declared.isdigit() and int(declared) > self.max_bytes:
                refused = PayloadTooLarge.body(self.max_bytes, int(declared))
                response = service_error_response(self.spec, refused)
                await response(scope, receive, observed_send)
                return
            await self.app(scope, limited_receive, observed_send)
        finally:
            self.metrics.observe(
                getattr(scope.get("route"), "path", "unmatched"), scope["method"], status, started
            )


def service_error_response(spec: InferenceSpec, error: ServiceError) -> Response:
    spec.metrics.rejected.labels(error.reason).inc()
    if error.status >= 500 and not isinstance(error.headers, dict):
        log.error("request failed: %s", error.message)
    return json_error(error.status, error.message, error.headers)


def unexpected_error_response(error: Exception) -> Response:
    log.exception("unhandled error", exc_info=error)
    return json_error(500, "internal server error")


def error_response(spec: InferenceSpec, error: Exception) -> Response:
    """A ServiceError as its status and message (counted); anything else a logged 500."""
    if isinstance(error, ServiceError):
        return service_error_response(spec, error)
    return unexpected_error_response(error)


def match_inference_route(
    spec: InferenceSpec, method: str, path: str
) -> tuple[str, Any, dict[str, str]] | None:
    """(route label, job maker, path parameters) for the inference routes; None for every other request.
    A job maker checks, admits and decodes a request (``InferenceSpec.predict_job`` / ``v2_job``)."""
    if method != "POST":
        return None
    if path == "/predict":
        return "/predict", spec.predict_job, {}
    parts = path.split("/")
    # /v2/models/{name}/infer and /v2/models/{name}/versions/{version}/infer
    if len(parts) == 5 and parts[1:3] == ["v2", "models"] and parts[4] == "infer" and parts[3]:
        return "/v2/models/{name}/infer", spec.v2_job, {"name": parts[3]}
    if (
        len(parts) == 7
        and parts[1:3] == ["v2", "models"]
        and parts[4] == "versions"
        and parts[6] == "infer"
        and parts[3]
        and parts[5]
    ):
        return (
            "/v2/models/{name}/versions/{version}/infer",
            spec.v2_job,
            {"name": parts[3], "version": parts[5]},
        )
    return None


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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        matched = None
        if scope["type"] == "http":
            matched = match_inference_route(self.spec, scope["method"], scope["path"])
        if matched is None:
            await self.app(scope, receive, send)
            return
        label, make_job, path_params = matched
        scope["route"] = _RouteLabel(label)
        body_read = asyncio.Event()

        async def tracked_receive() -> Message:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_read.set()
            return message

        # Once the body is read, receive() only returns again when the client leaves.
        answering = asyncio.ensure_future(
            self._answer(make_job, Request(scope, tracked_receive), path_params)
        )
        leaving = asyncio.ensure_future(_left(receive, body_read))
        await asyncio.wait((answering, leaving), return_when=asyncio.FIRST_COMPLETED)
        response = answering.result() if answering.done() else None
        if response is None:  # the client left: cancelling its request gives its queue slot back at once
            answering.cancel()
            await _client_left(send)
        else:
            await response(scope, receive, send)
        leaving.cancel()

    async def _answer(self, make_job: Any, request: Request, path_params: dict[str, str]) -> Response | None:
        try:
            return await self.spec.serve(make_job(request, await request.body(), **path_params))
        except ClientDisconnect:  # gone while its body was being read
            return None
        except Exception as error:
            return error_response(self.spec, error)


async def _left(receive: Receive, body_read: asyncio.Event) -> None:
    """Returns once the client has gone (after its body was read, nothing else can arrive)."""
    await body_read.wait()
    with contextlib.suppress(Exception):  # a receive that fails means the connection is unusable
        while (await receive())["type"] != "http.disconnect":
            pass


async def _client_left(send: Send) -> None:
    """Record CLIENT_CLOSED_REQUEST: RequestObserver counts the status it sees start, and uvicorn
    sends nothing to a client that has gone."""
    await send({"type": "http.response.start", "status": CLIENT_CLOSED_REQUEST, "headers": []})


def front_of_app(app: ASGIApp, spec: InferenceSpec, max_bytes: int, metrics: RequestMetrics) -> ASGIApp:
    """What every request meets first: limits and metrics, then the direct inference routes."""
    return RequestObserver(DirectRoutes(app, spec), spec, max_bytes, metrics)
