"""The ASGI side of an API server: what uvicorn's own request path meets first.

Most inference requests never get here: ``service.http.direct`` answers them from uvicorn's parser.
The rest (``Expect: 100-continue``, requests pipelined behind another, other methods, the access log
on) arrive as ASGI requests, and ``InferenceRoutes`` gives them to the same handler
(``service.http.inference``). Every other route goes to FastAPI through ``RequestObserver``, which
applies the body-size limit and records the request metrics that the handler records for its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import PayloadTooLarge
from service.http.inference import InferenceHandler, declared_too_large, match
from service.http.replies import Reply, as_response, error_reply
from service.http.request_metrics import RequestMetrics


class _ClientLeft(Exception):
    pass


class _Head:
    """The request as the handler reads it (``inference.RequestHead``)."""

    __slots__ = ("headers", "query_string")

    def __init__(self, scope: Scope) -> None:
        self.headers = Headers(scope=scope)
        self.query_string: bytes = scope["query_string"]


class InferenceRoutes:
    """Outermost ASGI middleware: inference routes to the handler, everything else on."""

    def __init__(self, app: ASGIApp, handler: InferenceHandler) -> None:
        self.app = app
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = match(scope["path"]) if scope["type"] == "http" else None
        if route is None:
            await self.app(scope, receive, send)
            return
        answered: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        method = scope["method"]
        try:
            exchange = self.handler.admit(route, method, _Head(scope), answered.set_result)
        except Exception as error:  # before the body is read; uvicorn drops it
            self.handler.refuse(route, method, error, answered.set_result)
            await _send(send, answered.result(), close=isinstance(error, PayloadTooLarge))
            return
        try:
            body = await _read_body(receive, self.handler.config.max_body_bytes)
        except PayloadTooLarge as error:
            exchange.fail(error)
            await _send(send, answered.result(), close=True)
            return
        except _ClientLeft:
            exchange.abandon()
            return
        exchange.submit(body)
        if not answered.done():
            # Once the body is read, receive() only returns again when the client leaves.
            leaving = asyncio.ensure_future(_left(receive))
            await asyncio.wait((answered, leaving), return_when=asyncio.FIRST_COMPLETED)
            leaving.cancel()
            if not answered.done():
                exchange.abandon()  # its queue slot is given back at once
                return
        await _send(send, answered.result())


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientLeft
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge.body(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _left(receive: Receive) -> None:
    """Returns once the client has gone (after its body was read, nothing else can arrive)."""
    with contextlib.suppress(Exception):  # a receive that fails means the connection is unusable
        while (await receive())["type"] != "http.disconnect":
            pass


async def _send(send: Send, reply: Reply, close: bool = False) -> None:
    headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in reply.headers.items()]
    headers.append((b"content-length", b"%d" % len(reply.body)))
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": reply.body})


class RequestObserver:
    """ASGI middleware for every route but the inference ones: body-size limit, request count and
    latency."""

    def __init__(self, app: ASGIApp, metrics: RequestMetrics, max_body_bytes: int) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_body_bytes:
                raise PayloadTooLarge.body(self.max_body_bytes)
            return message

        async def observed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            refused = declared_too_large(Headers(scope=scope).get("content-length"), self.max_body_bytes)
            if refused is not None:
                self.metrics.reject(refused.reason)
                await as_response(error_reply(refused))(scope, receive, observed_send)
                return
            await self.app(scope, limited_receive, observed_send)
        finally:
            self.metrics.observe(
                getattr(scope.get("route"), "path", "unmatched"), scope["method"], status, started
            )


def front_of_app(
    app: ASGIApp, handler: InferenceHandler, metrics: RequestMetrics, max_body_bytes: int
) -> ASGIApp:
    """What every ASGI request meets first: the inference routes, then limits and metrics for the rest."""
    return InferenceRoutes(RequestObserver(app, metrics, max_body_bytes), handler)
