"""Everything that happens to an inference request, in the order it happens.

``POST /predict`` and the v2 infer routes are answered here, whichever HTTP adapter read them
(``service.http.direct`` for most requests, ``service.http.asgi`` for the rest):

1. ``match`` tells the adapter whether a path is an inference route;
2. ``InferenceHandler.admit``, as soon as the headers are read, checks the method, the API key, the
   declared body size, the model name and version, and that a queue slot is free and the workers'
   backlog short enough; a request refused here never has its body kept or decoded;
3. ``Exchange.submit`` gets the whole body, takes a queue slot (refusing, still without decoding, if
   none is left or the backlog has grown past the timeout since), decodes the body into validated pixels
   (so one bad request can never fail a batch), and hands the pixels to a worker (``service.ipc.client``);
4. ``Exchange.answered`` is called with the worker's answer, encodes the reply and gives the slot back;
   ``Exchange.abandon`` does the same for a client that left first;
5. every reply, answer or error, is counted in the request metrics and handed to the adapter's
   ``respond`` callback, which writes it.

A request's queue slot (``service.http.admission``) is taken in ``Exchange.submit`` and given back in
``Exchange._give_back_slot``: nowhere else. It is not held while the body arrives, so clients that send
their bodies slowly cannot take the slots of the others.
"""

from __future__ import annotations

import asyncio
import hmac
import math
import time
import typing
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple
from urllib.parse import parse_qsl

import numpy as np

from service.errors import (
    CLIENT_CLOSED_REQUEST,
    BadRequest,
    MethodNotAllowed,
    PayloadTooLarge,
    ServiceError,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
)
from service.http.admission import Admission
from service.http.bodies import (
    IMAGE_TYPES,
    JSON_HEADERS,
    Limits,
    images_to_pixels,
    json_to_pixels,
    media_type,
    parse_v2_infer,
    predictions_body,
    v2_infer_body,
)
from service.http.bounded_cache import BoundedCache
from service.http.multipart import uploaded_files
from service.http.replies import Reply, error_reply
from service.http.request_metrics import RequestMetrics
from service.http.served_model import ServedModel
from service.inputs.images import DecodeBudget, DecodeElsewhere
from service.ipc.client import StillQueued, Ticket, WorkerPool

PREDICT = "/predict"
# A request's image files are decoded on the event loop while they declare at most this many pixels in
# all (MNIST-sized uploads: a thread hop would cost them more than it saves); larger ones in one of
# DECODE_THREADS threads of their API server, so they never stall the other clients (Pillow, OpenCV and
# numpy release the GIL while they work). The threads also bound the memory decoding takes at once: at
# most DECODE_THREADS images of --max-image-pixels (4 bytes a pixel at most, as Pillow holds them).
INLINE_DECODE_PIXELS = 512 * 512
DECODE_THREADS = 2
# A request is refused at admission when the wait behind the workers' backlog would take more than this
# share of the request timeout: the rest is for its own batch, which it waits for whole, and the answer's
# way back. With the whole timeout, half the requests admitted under overload still missed it.
BACKLOG_SHARE_OF_TIMEOUT = 0.5
V2_INFER = "/v2/models/{name}/infer"
V2_VERSION_INFER = "/v2/models/{name}/versions/{version}/infer"


class Route(NamedTuple):
    label: str  # the route as the metrics and OpenAPI name it
    name: str | None = None  # the v2 routes' model name and version
    version: str | None = None


PREDICT_ROUTE = Route(PREDICT)


def match(path: str) -> Route | None:
    """The inference route ``path`` names (for any method), or None."""
    route = _matched.get(path)
    if route is None:
        route = _match(path)
        _matched.put(path, len(path), route or NO_ROUTE)
    return None if route is NO_ROUTE else route


# Matching costs more than a lookup, and clients use a handful of paths. Paths are client-chosen: a
# scanner's are bounded in number and length by the cache, and longer ones are matched every time.
NO_ROUTE = Route("")
_matched: BoundedCache[str, Route] = BoundedCache(max_entries=256, max_key_bytes=256)


def _match(path: str) -> Route | None:
    if path == PREDICT:
        return PREDICT_ROUTE
    parts = path.split("/")
    if len(parts) < 5 or parts[1] != "v2" or parts[2] != "models" or not parts[3]:
        return None
    if len(parts) == 5 and parts[4] == "infer":
        return Route(V2_INFER, parts[3])
    if len(parts) == 7 and parts[4] == "versions" and parts[5] and parts[6] == "infer":
        return Route(V2_VERSION_INFER, parts[3], parts[5])
    return None


class RequestHead(typing.Protocol):
    """What the handler reads of a request besides its body."""

    @property
    def headers(self) -> Mapping[str, str]: ...  # lower-case names

    @property
    def query_string(self) -> bytes: ...


Respond = Callable[[Reply], None]  # writes a reply to the client (the adapter's)
Encode = Callable[[np.ndarray, str], Reply]  # a worker's answer (rows, model version) as the reply
Decoded = tuple[np.ndarray, Encode]  # a request's validated pixels, and how its answer is encoded


@dataclass(frozen=True)
class InferenceConfig:
    limits: Limits
    api_servers: int
    queue_limit: int
    request_timeout: float  # 0: none
    api_key: str | None
    socket_dir: Path  # where the inference workers listen (service.ipc.sockets)
    max_body_bytes: int  # Content-Length over this is a 413 before the body is read
    decode_timeout: float = math.inf  # seconds a request's images may take to decode (then 413)


class InferenceHandler:
    """Created in the main process; every API server forked from it admits against the same slots."""

    def __init__(self, config: InferenceConfig, model: ServedModel, metrics: RequestMetrics) -> None:
        self.config = config
        self.model = model
        self.metrics = metrics
        self.limits = config.limits
        self.admission = Admission(config.queue_limit, config.api_servers)
        self._workers: WorkerPool | None = None
        self._decoders: ThreadPoolExecutor | None = None

    @property
    def workers(self) -> WorkerPool:
        if self._workers is None:  # per API-server process: its connections belong to its event loop
            self._workers = WorkerPool(self.config.socket_dir)
        return self._workers

    @property
    def decoders(self) -> ThreadPoolExecutor:
        if self._decoders is None:  # per API-server process: threads do not survive the fork
            self._decoders = ThreadPoolExecutor(DECODE_THREADS, thread_name_prefix="decode")
        return self._decoders

    def admit(self, route: Route, method: str, head: RequestHead, respond: Respond) -> Exchange:
        """Decide what a request's head can decide, before its body is read: the method, the API key,
        the declared body size, the model name and version, ``?include=``, and the server's capacity.
        Raises the error the request is refused with; otherwise the ``Exchange`` takes the body
        (``Exchange.submit``).

        Refusing here costs next to nothing: the body is never kept or decoded, so shedding does not
        eat the capacity it protects, and a client without the key cannot make the server read it."""
        started = time.perf_counter()
        if method != "POST":
            raise MethodNotAllowed("use POST", allow="POST")
        self._authorize(head.headers)
        too_large = declared_too_large(head.headers.get("content-length"), self.config.max_body_bytes)
        if too_large is not None:
            raise too_large
        if route is PREDICT_ROUTE:
            shown = _include_pixels(head.query_string)
        else:
            assert route.name is not None
            self.model.check(route.name, route.version)
            shown = False
        self.check_capacity()
        return Exchange(self, route, head, shown, started, respond)

    def refuse(
        self, route: Route, method: str, error: Exception, respond: Respond, started: float | None = None
    ) -> None:
        """Answer with ``error`` (nothing admitted: no slot to give back)."""
        reply = error_reply(error)
        if isinstance(error, ServiceError):
            self.metrics.reject(error.reason)
        self.metrics.observe(route.label, method, reply.status, started or time.perf_counter())
        respond(reply)

    def _authorize(self, headers: Mapping[str, str]) -> None:
        expected = self.config.api_key
        if expected is None:
            return
        given = headers.get("x-api-key", "")
        if not given and headers.get("authorization", "").lower().startswith("bearer "):
            given = headers["authorization"][7:]
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise Unauthorized("missing or wrong API key (send it as X-API-Key)")

    def check_capacity(self) -> None:
        """At the headers: refuse a request that finds every queue slot taken, or that would wait
        longer than the request timeout behind the workers' backlog (refused now rather than queued
        and abandoned)."""
        self._check_backlog()
        if not self.admission.free():
            raise self._queue_full()

    def take_slot(self) -> None:
        """Once the body is complete, before it is decoded: the backlog again (requests admitted
        together at their headers may have filled it since), then a queue slot."""
        self._check_backlog()
        if not self.admission.take():
            raise self._queue_full()

    def _check_backlog(self) -> None:
        timeout = self.config.request_timeout
        if timeout and self.workers.backlog_s() > BACKLOG_SHARE_OF_TIMEOUT * timeout:
            raise Unavailable(
                f"the workers' backlog would take longer than the request timeout ({timeout:g} s); retry",
                reason="overloaded",
            )

    def _queue_full(self) -> Unavailable:
        return Unavailable(
            f"server is at its queue limit ({self.config.queue_limit} requests); retry", reason="overloaded"
        )

    def decode_budget(self) -> DecodeBudget:
        """A /predict request's budget for decoding its images, from the end of its body."""
        return DecodeBudget(self.limits.max_pixels, self.config.decode_timeout, INLINE_DECODE_PIXELS)

    def decode(
        self,
        route: Route,
        headers: Mapping[str, str],
        body: bytes,
        show_pixels: bool,
        budget: DecodeBudget | None,
    ) -> Decoded:
        """A request's validated pixels (so one bad request can never fail a batch), and how its
        answer is encoded; its image files are decoded within ``budget``."""
        if route is PREDICT_ROUTE:
            assert budget is not None
            pixels = self._predict_pixels(headers, body, budget)
            shown = pixels if show_pixels else None

            def encode_predictions(rows: np.ndarray, version: str) -> Reply:
                return Reply(200, JSON_HEADERS, predictions_body(rows, self.model.payload(version), shown))

            return pixels, encode_predictions
        model = self.model.model
        request = parse_v2_infer(body, headers, model.input_name, model.output_name, self.limits)

        def encode_v2(rows: np.ndarray, version: str) -> Reply:
            answer, answer_headers = v2_infer_body(rows, request, model.name, version, model.output_name)
            return Reply(200, answer_headers, answer)

        return request.pixels, encode_v2

    def _predict_pixels(self, headers: Mapping[str, str], body: bytes, budget: DecodeBudget) -> np.ndarray:
        content_type = media_type(headers.get("content-type"))
        limits = self.limits
        if content_type == "multipart/form-data":
            blobs = uploaded_files(
                body,
                headers["content-type"],
                max_files=limits.max_images + 1,  # one more than allowed: images_to_pixels words the 413
                max_fields=limits.max_images + 16,
            )
            return images_to_pixels(blobs, limits, budget)
        if content_type in IMAGE_TYPES or content_type == "application/octet-stream":
            return images_to_pixels([body], limits, budget)
        if content_type == "application/json" or content_type.endswith("+json"):
            return json_to_pixels(body, limits, budget)
        raise UnsupportedMediaType(
            f"unsupported content type {content_type or '(none)'!r}; send multipart/form-data, "
            "an image/* body, or application/json"
        )


class Exchange:
    """An admitted request, from its head to its answer. From its body on, it holds a queue slot until
    its job has left the worker (or its client left): a request answered 504 at its deadline keeps the
    slot until the worker has skipped its job, so under overload with a short ``--request-timeout`` the
    queue limit still bounds the work waiting for the worker."""

    __slots__ = (
        "encode",
        "handler",
        "head",
        "holds_slot",
        "replied",
        "respond",
        "route",
        "show_pixels",
        "started",
        "ticket",
    )

    def __init__(
        self,
        handler: InferenceHandler,
        route: Route,
        head: RequestHead,
        show_pixels: bool,
        started: float,
        respond: Respond,
    ) -> None:
        self.handler = handler
        self.route = route
        self.head: RequestHead | None = head  # until its body is decoded
        self.show_pixels = show_pixels
        self.started = started
        self.respond = respond
        self.encode: Encode | None = None  # set once its body is decoded
        self.ticket: Ticket = (None, 0)
        self.holds_slot = False
        self.replied = False

    def submit(self, body: bytes) -> None:
        """The request's whole body: take a queue slot, decode the body (its large images in a decode
        thread) and hand its pixels to a worker. A body that does not decode is answered with its 4xx
        and gives the slot back."""
        head, self.head = self.head, None
        assert head is not None and not self.replied
        handler = self.handler
        try:
            handler.take_slot()
        except Unavailable as error:
            self.fail(error)
            return
        self.holds_slot = True
        arguments = (self.route, head.headers, body, self.show_pixels)
        budget = handler.decode_budget() if self.route is PREDICT_ROUTE else None
        try:
            decoded = handler.decode(*arguments, budget)
        except DecodeElsewhere:  # nothing was decoded yet: all of it again, in a thread
            assert budget is not None
            decoding = asyncio.get_running_loop().run_in_executor(
                handler.decoders, handler.decode, *arguments, budget.elsewhere()
            )
            decoding.add_done_callback(self._decoded)
            return
        except Exception as error:
            self.fail(error)
            return
        self._send(decoded)

    def _decoded(self, decoding: asyncio.Future[Decoded]) -> None:
        if self.replied:  # its client left while it was decoded
            return
        try:
            decoded = decoding.result()
        except Exception as error:
            self.fail(error)
            return
        self._send(decoded)

    def _send(self, decoded: Decoded) -> None:
        pixels, self.encode = decoded
        timeout = self.handler.config.request_timeout or None
        self.ticket = self.handler.workers.send(pixels, time.monotonic(), timeout, self.answered)

    def fail(self, error: Exception) -> None:
        """Answer with ``error`` before the request reached a worker (giving its slot back)."""
        self._reply(error_reply(error), error)
        self._give_back_slot()

    def answered(self, rows: np.ndarray | None, version: str, error: Exception | None) -> None:
        """The worker's answer, or the 503 / 504 the job failed with (service.ipc.client calls it)."""
        if self.replied:  # its deadline passed: the job has now left the worker
            self._give_back_slot()
            return
        encode = self.encode
        assert encode is not None
        try:
            if error is not None:
                raise error
            assert rows is not None
            reply = encode(rows, version)
        except Exception as failure:
            reply, error = error_reply(failure), failure
        if not isinstance(error, StillQueued):
            self._give_back_slot()
        self._reply(reply, error)

    def abandon(self) -> None:
        """The client left before its answer: give its slot back now (the worker's answer is dropped)."""
        if self.replied:
            return
        self.replied = True
        WorkerPool.cancel(self.ticket)
        self._give_back_slot()
        self.handler.metrics.observe(self.route.label, "POST", CLIENT_CLOSED_REQUEST, self.started)

    def _reply(self, reply: Reply, error: Exception | None) -> None:
        self.replied = True
        metrics = self.handler.metrics
        if isinstance(error, ServiceError):
            metrics.reject(error.reason)
        metrics.observe(self.route.label, "POST", reply.status, self.started)
        self.respond(reply)

    def _give_back_slot(self) -> None:
        if self.holds_slot:
            self.holds_slot = False
            self.handler.admission.give_back()


def declared_too_large(content_length: str | None, limit: int) -> PayloadTooLarge | None:
    """The 413 for a declared body size over ``limit``, before any of the body is read."""
    if (
        content_length
        and content_length.isascii()
        and content_length.isdigit()
        and int(content_length) > limit
    ):
        return PayloadTooLarge.body(limit, int(content_length))
    return None


def _include_pixels(query_string: bytes) -> bool:
    """``?include=pixels`` adds the 28x28 image the model saw, so clients can show the preprocessing."""
    if not query_string:
        return False
    include = {
        item
        for name, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
        if name == "include"
        for item in value.split(",")
    }
    if include - {"pixels", ""}:
        raise BadRequest(f"unknown include {sorted(include - {'pixels', ''})}; the only one is 'pixels'")
    return "pixels" in include
