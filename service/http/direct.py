"""uvicorn's HTTP/1.1 protocol with a direct path for the inference routes.

Under load, an API server spent more CPU on the ASGI layers around a request than on the request
itself: a task per request running uvicorn's ASGI wrapper, ``receive``, two ``send`` messages with
uvicorn's per-header checks and two socket writes, Starlette's app and the middleware. For ``POST``
to an inference route this protocol instead collects the body while httptools parses it, hands it to
the handler (``service.http.inference``: ``admit`` at the end of the headers, ``Exchange.submit`` with the
whole body) and writes the reply the handler passes back,
status line, headers and body in one write: no task, future, coroutine or ASGI message per request
(docs/performance.md).

Every connection, on either path, is also held to the limits of ``service.http.connection_limits``:
bytes in a request's head, and one timer per stage (idle, head, body) that no input but the next stage
resets. uvicorn's parser errors are answered in the service's JSON error format.

Everything else stays uvicorn's: parsing, flow control, shutdown, and every other request (other routes
and methods, ``Expect: 100-continue``, requests pipelined behind one in flight, the access log), which
reaches the same handler through ``service.http.asgi``.

This subclass relies on uvicorn internals (the parser callbacks, ``cycle``, ``server_state``);
``tests/service/http/test_uvicorn_contract.py`` pins them and says what to re-check on an upgrade.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from service.errors import (
    BadRequest,
    ClientTooSlow,
    HeadersTooLarge,
    PayloadTooLarge,
    ServiceError,
    Unavailable,
    UriTooLong,
)
from service.http.bodies import JSON_HEADERS
from service.http.connection_limits import BufferedBodies, ConnectionLimits, Stage, StageTimer
from service.http.inference import Exchange, InferenceHandler, Route, match
from service.http.log_limits import client_caused_warnings
from service.http.replies import Reply, error_reply

# A request refused before its body was read (a 413, or any refusal on a connection not kept alive)
# leaves the connection open to read and drop the rest of the body before closing it: most
# clients (http.client, requests) send the whole body before reading the answer, and closing a socket
# with unread bytes resets it, so they would see a reset instead of the 413. Bounded in time.
LINGER_SECONDS = 10.0
# A client told to come back later (503 + Retry-After) that asks again at once on the same connection is
# answered no sooner than it was asked to wait: shedding then cannot take the CPU the admitted requests
# need, however fast clients retry (benchmarks/overload.py).
RETRY_AFTER_S = 1.0
# On a drain, a request may already be on its way on an idle keep-alive connection: it is answered (with
# Connection: close) if it arrives within this window, and idle connections are closed after it.
DRAIN_GRACE_S = 1.0
_JSON_HEAD = b"content-type: application/json\r\n"  # JSON_HEADERS as written


class DirectHttpProtocol(HttpToolsProtocol):
    """uvicorn's ``http=`` protocol, given as ``functools.partial(DirectHttpProtocol, handler=...,
    limits=...)``: uvicorn creates one per connection with its own arguments. Every connection, on
    either path, is held to ``limits`` (``service.http.connection_limits``)."""

    def __init__(
        self, *args: Any, handler: InferenceHandler, limits: ConnectionLimits, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.logger = client_caused_warnings()
        self.handler = handler
        self.limits = limits
        self._stage = StageTimer(self.loop, limits, self._out_of_time)
        self._buffered = BufferedBodies.of(self.loop)
        self._head_bytes = 0  # of the request whose head is being read
        self._headers_completed = False  # within the data_received call in progress
        self._head_refused: ServiceError | None = None  # raised from a parser callback (_refuse_head)
        self.max_body_bytes = handler.config.max_body_bytes
        self._respond = self._write_reply  # one bound method per connection, not per request
        # The direct request being read or answered on this connection (at most one: requests behind it
        # take uvicorn's path, which queues them until its answer is written).
        self._cycle: _DirectCycle | None = None
        self._body: bytearray | None = None  # its body so far (None: this request is uvicorn's)
        self._exchange: Exchange | None = None  # admitted and not yet answered
        self._collecting = False  # its body is being read into _body (admitted, not yet submitted)
        self._close_after_body = False  # refused, not kept alive: close once the body has been read
        self._told_to_wait_at = -RETRY_AFTER_S  # when this connection last got a 503
        self._draining = False

    # --- bytes in, and the limits on them ------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._stage.start(Stage.IDLE)

    def data_received(self, data: bytes) -> None:
        started_in = self._stage.stage
        self._headers_completed = False
        super().data_received(data)
        # Bytes of a head still incomplete: httptools keeps them until the head ends, however long.
        # A chunk that finished a body and began the next head is not counted (at most one read).
        if self._stage.stage is Stage.HEAD and not self._headers_completed and started_in is not Stage.BODY:
            self._head_bytes += len(data)
            if self._head_bytes > self.limits.max_header_bytes:
                self._close_with_error(
                    HeadersTooLarge(f"request line and headers exceed {self.limits.max_header_bytes} bytes")
                )

    def _refuse_head(self, error: ServiceError) -> None:
        """Stop the parser (from a parser callback): httptools turns this into a parser error, which
        uvicorn answers through send_400_response, where ``error`` is answered instead."""
        self._head_refused = error
        raise error

    def send_400_response(self, msg: str) -> None:
        """httptools refused the request (uvicorn answers text/plain): the error format of every answer."""
        refused, self._head_refused = self._head_refused, None
        self._close_with_error(refused or BadRequest(msg))

    def on_response_complete(self) -> None:
        pipelined = bool(self.pipeline)
        super().on_response_complete()
        if not pipelined and self._stage.stage is None and not self.transport.is_closing():
            self._stage.start(Stage.IDLE)  # only the next request's first byte resets it

    def _out_of_time(self, stage: Stage) -> None:
        if self.transport.is_closing():
            return
        if stage is Stage.IDLE:
            self.transport.close()
            return
        limit = self.limits.header_timeout if stage is Stage.HEAD else self.limits.body_timeout
        error = ClientTooSlow(f"request {stage.label} not received within {limit:g} s")
        if stage is Stage.HEAD:  # a new request: answered unless an earlier one's answer is still due
            self._close_with_error(error, answer=self.cycle is None or self.cycle.response_complete)
        elif self._collecting and self._exchange is not None:  # a direct request's body
            self._collecting = False
            assert self._cycle is not None
            self._cycle.keep_alive = False
            self._exchange.fail(error)
            self.transport.close()
        else:  # uvicorn's request, or one refused before its body: answered unless it has been
            self._close_with_error(error, answer=self.cycle is not None and not self.cycle.response_complete)

    def _close_with_error(self, error: ServiceError, answer: bool = True) -> None:
        """Answer ``error`` (if ``answer``) with Connection: close, and close: this connection cannot
        go on."""
        if self.transport.is_closing():
            return
        self.handler.metrics.reject(error.reason)
        if answer:
            self.transport.write(self._encoded(error_reply(error), keep_alive=False))
        self.transport.close()

    # --- httptools parser callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        # uvicorn's resets these and builds the ASGI scope (two dicts and a copy of the app state),
        # which a direct request never reads: the scope is built in on_headers_complete, only for
        # requests that take uvicorn's path. Measured with benchmarks/versus.py together with the
        # route cache in service.http.inference: 0.94x -> 0.97x the previous layout's req/s.
        self.url = b""
        self.expect_100_continue = False
        self.headers = []
        self._stage.start(Stage.HEAD)
        self._head_bytes = 0
        self._body = None
        self._collecting = False

    def _asgi_scope(self) -> None:
        """The scope uvicorn's on_message_begin would have built."""
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
        self._headers_completed = True
        self._stage.start(Stage.BODY)
        # Checked once the head is complete (its bytes were bounded as they arrived): cheaper than a
        # check in every on_url and on_header call.
        limits = self.limits
        if len(self.url) > limits.max_url_bytes:
            self._refuse_head(UriTooLong(f"request target longer than {limits.max_url_bytes} bytes"))
        if len(self.headers) > limits.max_headers:
            self._refuse_head(HeadersTooLarge(f"more than {limits.max_headers} header fields"))
        upgrade = self.parser.should_upgrade()
        if upgrade and any(name in (b"content-length", b"transfer-encoding") for name, _ in self.headers):
            # No protocol upgrade is served here (h2c, websocket), and httptools, once it sees one,
            # stops parsing at the end of the headers: the body would be lost and the connection stuck.
            self._refuse_head(
                BadRequest("protocol upgrades are not supported; send the request without an Upgrade header")
            )
        url = self.url
        if url[:1] == b"/" and b"?" not in url and b"#" not in url:  # the usual request target: a path
            path, query = url, b""
        else:
            parsed = httptools.parse_url(url)
            path, query = parsed.path, parsed.query or b""
        route = self._direct_route(path, upgrade)
        if route is None:
            self._asgi_scope()
            super().on_headers_complete()
            if (self._draining or upgrade) and self.cycle is not None:
                self.cycle.keep_alive = False  # after an upgrade request httptools parses nothing more
            return
        # While it is incomplete, uvicorn queues pipelined requests behind it, and shutdown() marks it
        # not keep-alive instead of closing the connection.
        keep_alive = self.parser.get_http_version() != "1.0" and self.parser.should_keep_alive()
        self._cycle = _DirectCycle(keep_alive and not self._draining)
        self.cycle = self._cycle  # type: ignore[assignment]
        self._body = bytearray()
        try:
            self._exchange = self.handler.admit(
                route, "POST", _DirectRequest(query, self.headers), self._respond
            )
            self._collecting = True
        except Exception as error:  # answered now; the body is dropped as it arrives
            self._close_after_body = isinstance(error, PayloadTooLarge)
            self.handler.refuse(route, "POST", error, self._respond)

    def _direct_route(self, path: bytes, upgrade: bool) -> Route | None:
        if (
            self.parser.get_method() != b"POST"
            or self.expect_100_continue
            or self.access_log
            or self.limit_concurrency is not None
            or (self.cycle is not None and not self.cycle.response_complete)  # keep answers in order
            or upgrade
            or b"%" in path  # percent-decoding and its corner cases: uvicorn's path
        ):
            return None
        return match(path.decode("latin-1"))

    def on_body(self, body: bytes) -> None:
        if self._body is None:
            super().on_body(body)
        elif self._collecting:
            self._body += body
            self._buffered.held += len(body)
            if len(self._body) > self.max_body_bytes:
                self._collecting = False
                self._drop_body()
                self._close_after_body = True
                assert self._exchange is not None
                self._exchange.fail(PayloadTooLarge.body(self.max_body_bytes))
            elif self._buffered.held > self.limits.max_buffered_body_bytes:
                self._collecting = False
                self._drop_body()
                self._close_with_error(
                    Unavailable("server is receiving too many request bodies at once; retry", "overloaded")
                )

    def _drop_body(self) -> None:
        """Let go of the body received so far (and of its share of the buffered bytes)."""
        if self._body:
            self._buffered.held -= len(self._body)
        self._body = bytearray()

    def on_message_complete(self) -> None:
        self._stage.stop()  # nothing more is expected from the client until this is answered
        if self._body is None:
            super().on_message_complete()
            return
        assert self._cycle is not None
        self._cycle.body_complete = True
        if self._collecting:
            # Reading goes on, as on uvicorn's own path, so that a client leaving is noticed now:
            # a request pipelined behind this one is queued by uvicorn until the answer is written.
            self._collecting = False
            body = bytes(self._body)
            self._drop_body()  # not kept while the answer is awaited
            assert self._exchange is not None
            self._exchange.submit(body)
        elif self._close_after_body:
            self.transport.close()
        elif self._cycle.response_complete:
            self.on_response_complete()  # answered before its body was read; now it has been

    def shutdown(self) -> None:
        """A drain began (uvicorn calls this on every connection). uvicorn's closes an idle keep-alive
        connection at once, so a request the client had just sent on it was lost ("server disconnected
        without sending a response"). Here a request arriving within DRAIN_GRACE_S is answered, with
        Connection: close; an idle connection is closed after that."""
        self._draining = True
        if self.cycle is None or self.cycle.response_complete:
            self.loop.call_later(DRAIN_GRACE_S, self._close_if_idle)
        else:
            self.cycle.keep_alive = False

    def _close_if_idle(self) -> None:
        if (self.cycle is None or self.cycle.response_complete) and not self.transport.is_closing():
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stage.close()
        # Now, not when the garbage collector finds this protocol's cycles (its parser calls it back):
        # collections are rare here (service.memory_tuning), and 40 clients that left 6 MiB bodies each
        # unfinished kept 240 MB for minutes.
        self._drop_body()
        self._body = None
        super().connection_lost(exc)
        exchange, self._exchange = self._exchange, None
        if exchange is not None:  # the client left before its answer
            exchange.abandon()

    # --- writing ------------------------------------------------------------------------------------

    def _write_reply(self, reply: Reply) -> None:
        """Write a reply (``_encoded``), a repeated 503 no sooner than its Retry-After."""
        self._exchange = None
        if reply.status == 503:
            now = self.loop.time()
            wait = self._told_to_wait_at + RETRY_AFTER_S - now
            if wait > 0:  # it did not wait as told last time
                self._told_to_wait_at = now + wait
                self.loop.call_later(wait, self._write, reply)
                return
            self._told_to_wait_at = now
        self._write(reply)

    def _write(self, reply: Reply) -> None:
        cycle = self._cycle
        assert cycle is not None
        cycle.response_complete = True
        if cycle.disconnected or self.transport.is_closing():
            return
        keep_alive = cycle.keep_alive and not self._close_after_body  # the rest of a refused body is dropped
        self.transport.write(self._encoded(reply, keep_alive))
        if not cycle.body_complete:  # refused before its body was read: the rest is dropped as it comes
            if not keep_alive:
                self._close_after_body = True  # closed once it has been read (on_message_complete)
                self.loop.call_later(LINGER_SECONDS, self.transport.close)
            return  # kept alive: on_message_complete then counts the response complete
        if keep_alive:
            self.on_response_complete()
        else:
            self.transport.close()

    def _encoded(self, reply: Reply, keep_alive: bool) -> bytes:
        """The status line, the server's default headers (date, server), the reply's and its body."""
        headers = reply.headers
        if headers is JSON_HEADERS:
            head = _JSON_HEAD
        else:
            head = "".join([f"{name}: {value}\r\n" for name, value in headers.items()]).encode("latin-1")
        return b"".join(
            (
                STATUS_LINE[reply.status],
                _default_head(self.server_state.default_headers),
                head,
                b"content-length: %d\r\n" % len(reply.body),
                b"" if keep_alive else b"connection: close\r\n",
                b"\r\n",
                reply.body,
            )
        )


# uvicorn's default headers (date, server) as written, and the list they were written from: uvicorn
# makes a new list each second (the date), so they are encoded once a second, not per answer.
_written_defaults: list[Any] = [None, b""]


def _default_head(defaults: list[tuple[bytes, bytes]]) -> bytes:
    if defaults is not _written_defaults[0]:
        _written_defaults[:] = (
            defaults,
            b"".join([name + b": " + value + b"\r\n" for name, value in defaults]),
        )
    return _written_defaults[1]


class _DirectRequest:
    """The request as the handler reads it (``inference.RequestHead``): headers read straight from
    uvicorn's list, and the query string."""

    __slots__ = ("headers", "query_string")

    def __init__(self, query_string: bytes, raw_headers: list[tuple[bytes, bytes]]) -> None:
        self.query_string = query_string
        self.headers = _RawHeaders(raw_headers)


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

    __slots__ = ("body_complete", "disconnected", "keep_alive", "response_complete")

    class _NoMessages:
        def set(self) -> None:  # connection_lost wakes an ASGI receive(); there is none here
            pass

    message_event = _NoMessages()

    def __init__(self, keep_alive: bool) -> None:
        self.keep_alive = keep_alive
        self.response_complete = False
        self.disconnected = False
        self.body_complete = False  # its whole body has been read (a refusal may be written before)
