"""uvicorn's HTTP/1.1 protocol with a direct path for the inference routes.

Under load, an API server spent more CPU on the ASGI layers around a request than on the request:
a task per request running uvicorn's ASGI wrapper, the scope, ``receive``, two ``send`` messages with
uvicorn's per-header checks and two socket writes, Starlette's app and our two middleware wrappers.
For ``POST /predict`` and the v2 infer routes this protocol collects the body while httptools parses
it, has ``InferenceSpec`` check, admit and decode it into a job (synchronously, over a plain view of
the headers), sends the job to a worker and, from the callback the worker connection calls with the
answer, writes the status line, headers and body with one write: no task, future, coroutine chain,
Starlette object or ASGI message per request (docs/performance.md). Parsing, keep-alive timers, flow
control, shutdown and every other request (other routes, ``Expect: 100-continue``, requests pipelined
behind one in flight, the access log) stay uvicorn's own ASGI path, where ``DirectRoutes`` serves the
same handlers.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import httptools
import numpy as np
from fastapi import Response
from starlette.datastructures import QueryParams
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from service.dispatch import Answer, OnAnswer, Ticket, WorkerPool
from service.errors import CLIENT_CLOSED_REQUEST, PayloadTooLarge
from service.front import error_response, match_inference_route
from service.protocol import JSON_HEADERS
from service.routes import InferenceSpec, Reply

Route = tuple[str, Any, dict[str, str]]  # (label for metrics, job maker, path parameters)

# After refusing an oversized body the connection stays open to read and drop the rest of it: most
# clients (http.client, requests) send the whole body before reading the answer, and closing a socket
# with unread bytes resets it, so they would see a reset instead of the 413. Bounded in time.
LINGER_SECONDS = 10.0
MAX_CACHED_ROUTES = 256  # (method, path) -> route, per API server: matching costs more than a lookup


class InferenceHttpProtocol(HttpToolsProtocol):
    """Set by ``bind``: what the inference routes need (see service.server)."""

    match: Callable[[str, str], Route | None]
    send: Callable[[np.ndarray, OnAnswer], Ticket]
    cancel: Callable[[Ticket], None]
    release: Callable[[], None]  # gives a job's queue slot back
    on_error: Callable[[Exception], Response]
    observe: Callable[[str, str, int, float], None]
    max_bytes: int
    _routes: dict[tuple[bytes, bytes], Route | None]  # matches made so far (bind gives each class its own)
    _direct: bytearray | None = None  # the body so far, while a request on this path is being parsed
    _route: Route | None = None  # None once that request is answered (the rest of its body is dropped)
    _body_complete = False
    _close_after_body = False  # an oversized body was refused: close once it has been read
    # The request in flight on this connection (its cycle, route label, start, reply maker) and its job.
    _answering: tuple[_DirectCycle, str, float, Callable[[Answer], Reply]] | None = None
    _ticket: Ticket = (None, 0)
    _query = b""  # the direct request's query string (uvicorn's scope is not built for it)
    _cycle: _DirectCycle  # the direct request's, also in self.cycle for uvicorn
    _idle_since: float | None = None  # when the last answer was written; None while a request is open

    # Keep-alive: uvicorn cancels its idle timer when a request starts and arms a new one after each
    # answer (call_later + cancel: 3.2 µs, a few per cent of a request here). One timer per connection
    # instead, re-armed when it fires for whatever idle time is left, closes it as uvicorn would.
    def _unset_keepalive_if_required(self) -> None:
        self._idle_since = None

    def on_response_complete(self) -> None:  # uvicorn 0.54's, with the keep-alive timer above
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self._unset_keepalive_if_required()
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
            return
        self._idle_since = self.loop.time()
        if self.timeout_keep_alive_task is None:
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self._keep_alive_check
            )

    def _keep_alive_check(self) -> None:
        self.timeout_keep_alive_task = None
        if self._idle_since is None:  # a request is open: its answer arms the timer again
            return
        idle = self.loop.time() - self._idle_since
        if idle >= self.timeout_keep_alive:
            self.timeout_keep_alive_handler()
        else:
            left = self.timeout_keep_alive - idle
            self.timeout_keep_alive_task = self.loop.call_later(left, self._keep_alive_check)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self.timeout_keep_alive_task is not None:
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = None
        answering = self._answering
        if answering is not None:
            # The client left before its answer: give its queue slot back now instead of when the
            # worker answers (the worker's answer is then dropped).
            self._answering = None
            self.cancel(self._ticket)
            self.release()
            self.observe(answering[1], "POST", CLIENT_CLOSED_REQUEST, answering[2])

    def on_message_begin(self) -> None:  # uvicorn 0.54's, without the ASGI scope (see _asgi_scope)
        self._direct = None
        self._body_complete = False
        self.url = b""
        self.expect_100_continue = False
        self.headers = []

    def _asgi_scope(self) -> None:
        """The scope uvicorn's ``on_message_begin`` builds for every request (two dicts and a copy of
        the app state), built only for the requests that take uvicorn's path."""
        self.scope = {  # type: ignore[typeddict-item]
            "type": "http",
            "asgi": {"version": self.asgi_version, "spec_version": "2.3"},
            "http_version": "1.1",
            "server": self.server,
            "client": self.client,
            "scheme": self.scheme,  # type: ignore[typeddict-item]
            "root_path": self.root_path,
            "headers": self.headers,
            "state": self.app_state.copy(),
        }

    def on_headers_complete(self) -> None:
        url = self.url
        if url[:1] == b"/" and b"?" not in url and b"#" not in url:  # the usual request target: a path
            path, query = url, b""
        else:
            parsed = httptools.parse_url(url)
            path, query = parsed.path, parsed.query or b""
        route = self._direct_route(path)
        if route is None:
            self._asgi_scope()
            super().on_headers_complete()
            return
        self._query = query
        # While it is incomplete, uvicorn queues pipelined requests behind it, and shutdown() marks it
        # not keep-alive instead of closing the connection.
        keep_alive = self.parser.get_http_version() != "1.0" and self.parser.should_keep_alive()
        self._cycle = _DirectCycle(keep_alive)
        self.cycle = self._cycle  # type: ignore[assignment]
        self._direct, self._route = bytearray(), route
        for name, value in self.headers:
            if name == b"content-length":
                if value.isdigit() and int(value) > self.max_bytes:  # refused before reading the body
                    self._refuse(PayloadTooLarge.body(self.max_bytes, int(value)))
                break

    def _direct_route(self, path: bytes) -> Route | None:
        if (
            self.expect_100_continue
            or self.access_log
            or self.limit_concurrency is not None
            or (self.cycle is not None and not self.cycle.response_complete)  # keep answers in order
            or self.parser.should_upgrade()
            or b"%" in path  # percent-decoding and its corner cases: uvicorn's path
        ):
            return None
        key = (self.parser.get_method(), path)
        routes = self._routes
        if key in routes:
            return routes[key]
        route = self.match(key[0].decode("ascii"), path.decode("ascii"))
        if len(routes) < MAX_CACHED_ROUTES:  # paths are client-chosen: bound what is kept
            routes[key] = route
        return route

    def on_body(self, body: bytes) -> None:
        if self._direct is None:
            super().on_body(body)
        elif self._route is not None:
            self._direct += body
            if len(self._direct) > self.max_bytes:
                self._refuse(PayloadTooLarge.body(self.max_bytes))

    def on_message_complete(self) -> None:
        if self._direct is None:
            super().on_message_complete()
            return
        self._body_complete = True
        if self._route is not None:
            # Reading goes on, as on uvicorn's own path, so that a client leaving is noticed now:
            # a request pipelined behind this one is queued by uvicorn until the answer is written.
            self._start(bytes(self._direct))
        elif self._close_after_body:
            self.transport.close()

    def _refuse(self, error: PayloadTooLarge) -> None:
        assert self._route is not None
        self._direct = bytearray()  # nothing more is kept
        label, self._route = self._route[0], None  # whatever else arrives for this request is dropped
        self._respond(self._cycle, label, time.perf_counter(), self.on_error(error), too_large=True)

    def _start(self, body: bytes) -> None:
        assert self._route is not None
        (label, make_job, path_params), self._route = self._route, None
        started = time.perf_counter()
        try:
            request = _DirectRequest(self._query, self.headers)
            job = make_job(request, body, **path_params)
        except Exception as error:  # ServiceErrors become their status; anything else a logged 500
            self._respond(self._cycle, label, started, self.on_error(error))
            return
        self._answering = (self._cycle, label, started, job.respond)
        self._ticket = self.send(job.pixels, self._answered)

    def _answered(self, rows: np.ndarray | None, version: str, error: Exception | None) -> None:
        """The worker's answer (or the error the job failed with), called from the worker connection."""
        answering, self._answering = self._answering, None
        if answering is None:  # the client left (connection_lost); nobody to answer
            return
        cycle, label, started, respond = answering
        self.release()
        try:
            if error is None:
                assert rows is not None
                body, headers = respond(Answer(rows, version))
                self._reply(cycle, label, started, body, headers)
                return
            response = self.on_error(error)
        except Exception as failure:
            response = self.on_error(failure)
        self._respond(cycle, label, started, response)

    def _reply(
        self, cycle: _DirectCycle, label: str, started: float, body: bytes, headers: Mapping[str, str]
    ) -> None:
        """A 200 with its body, the head written straight from the reply's headers."""
        if headers is JSON_HEADERS:
            head = _JSON_HEAD
        else:
            head = "".join([f"{name}: {value}\r\n" for name, value in headers.items()]).encode("latin-1")
        head += b"content-length: %d\r\n" % len(body)
        self._write(cycle, label, started, 200, head, body)

    def _respond(
        self,
        cycle: _DirectCycle,
        label: str,
        started: float,
        response: Response,
        too_large: bool = False,
    ) -> None:
        head = b"".join([name + b": " + value + b"\r\n" for name, value in response.raw_headers])
        self._write(cycle, label, started, response.status_code, head, response.body, too_large)

    def _write(
        self,
        cycle: _DirectCycle,
        label: str,
        started: float,
        status: int,
        head: bytes,
        body: bytes | memoryview,
        too_large: bool = False,
    ) -> None:
        """Write the status line, the server's default headers (date, server), ``head`` and the body."""
        self.observe(label, "POST", status, started)
        cycle.response_complete = True
        if cycle.disconnected or self.transport.is_closing():
            return
        keep_alive = cycle.keep_alive and not too_large  # the rest of an oversized body is dropped
        defaults = self.server_state.default_headers  # a new list each second (the date header)
        cached_for, default_head = _default_head
        if defaults is not cached_for:
            default_head = b"".join([name + b": " + value + b"\r\n" for name, value in defaults])
            _default_head[:] = defaults, default_head
        closing = b"" if keep_alive else b"connection: close\r\n"
        self.transport.write(b"".join((STATUS_LINE[status], default_head, head, closing, b"\r\n", body)))
        if keep_alive:
            self.on_response_complete()
        elif not too_large or self._body_complete:
            self.transport.close()
        else:
            self._close_after_body = True
            self.loop.call_later(LINGER_SECONDS, self.transport.close)


_JSON_HEAD = b"content-type: application/json\r\n"  # JSON_HEADERS as written

# uvicorn's default headers as written, for the list they were written from (one process, one server).
_default_head: list[Any] = [None, b""]


class _DirectRequest:
    """The request as the job makers read it (routes.RequestView), without Starlette's Request: its
    headers read straight from uvicorn's list, and its query string."""

    __slots__ = ("headers", "query_string")

    def __init__(self, query_string: bytes, raw_headers: list[tuple[bytes, bytes]]) -> None:
        self.query_string = query_string
        self.headers = _RawHeaders(raw_headers)

    @property
    def scope(self) -> dict[str, Any]:
        return {"query_string": self.query_string}

    @property
    def query_params(self) -> QueryParams:
        return QueryParams(self.query_string)


class _RawHeaders(Mapping[str, str]):
    """Headers looked up in uvicorn's list (lower-case names, the first of repeated headers wins, as
    in Starlette's Headers): a request reads two or three, so no dict of all of them is built."""

    __slots__ = ("_raw",)

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self._raw = raw

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return str(value)

    def get(self, name: str, default: Any = None) -> Any:  # Mapping's goes through an exception
        key = name.encode("latin-1")
        for raw_name, value in self._raw:
            if raw_name == key:
                return value.decode("latin-1")
        return default

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(name.decode("latin-1") for name, _ in self._raw))

    def __len__(self) -> int:
        return len({name for name, _ in self._raw})


class _DirectCycle:
    """What uvicorn's protocol reads of ``self.cycle`` while a direct request is in flight (its own
    RequestResponseCycle is an ASGI state machine): queue pipelined requests behind it until
    ``response_complete``; on shutdown, close after the answer (``keep_alive`` cleared)."""

    __slots__ = ("disconnected", "keep_alive", "response_complete")

    class _NoMessages:
        def set(self) -> None:  # connection_lost wakes an ASGI receive(); there is none here
            pass

    message_event = _NoMessages()

    def __init__(self, keep_alive: bool) -> None:
        self.keep_alive = keep_alive
        self.response_complete = False
        self.disconnected = False


def bind(
    spec: InferenceSpec, observe: Callable[[str, str, int, float], None], max_bytes: int
) -> type[InferenceHttpProtocol]:
    """The protocol class for one server (uvicorn's ``http=``), bound to its routes and limits: the
    same route matching and error mapping as ``front.DirectRoutes``."""
    attributes = {
        "match": staticmethod(functools.partial(match_inference_route, spec)),
        "send": staticmethod(spec.send),
        "cancel": staticmethod(WorkerPool.cancel),
        "release": staticmethod(spec.free_slots.release),  # C: no Python frame per answer
        "on_error": staticmethod(functools.partial(error_response, spec)),
        "observe": staticmethod(observe),
        "max_bytes": max_bytes,
        "_routes": {},
    }
    return type("BoundInferenceHttpProtocol", (InferenceHttpProtocol,), attributes)
