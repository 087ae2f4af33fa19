"""Tripwire for the uvicorn internals service.http.direct relies on.

``DirectHttpProtocol`` subclasses uvicorn's httptools protocol, which is not uvicorn's public API. Each
method it overrides or whose behaviour it depends on is pinned here by a hash of its source: a uvicorn
release that changes one fails this test with what to re-check, before anything fails in production.
On an upgrade: read the new method, re-check the note below against service/http/direct.py (and
tests/integration/test_direct_http.py), then update the hash.
"""

from __future__ import annotations

import hashlib
import inspect

import pytest
import uvicorn
from uvicorn.protocols.http import httptools_impl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# method: (sha256 of its source, first 16 hex digits; what direct.py relies on)
PINNED = {
    "__init__": (
        "4f08999410347141",
        "sets parser, cycle, pipeline, server_state, access_log, limit_concurrency and timeout_keep_alive",
    ),
    "on_message_begin": (
        "96d377fdc7c2baef",
        "replaced: DirectHttpProtocol.on_message_begin resets the same fields and _asgi_scope builds the "
        "same scope; copy any change into both",
    ),
    "on_headers_complete": (
        "1ea8589acfad92d8",
        "skipped for direct requests: everything it sets up for the ASGI path must stay unneeded there",
    ),
    "on_body": ("dba9c32aeba35b6a", "called only for requests on uvicorn's path"),
    "on_message_complete": ("1fbad42dc31fc01f", "called only for requests on uvicorn's path"),
    "connection_lost": (
        "c91a4c9bf2e29c55",
        "marks self.cycle disconnected and calls cycle.message_event.set() (_DirectCycle provides both)",
    ),
    "on_response_complete": (
        "64e254f28e389e76",
        "called after each direct keep-alive answer: re-arms keep-alive, starts pipelined requests",
    ),
    "shutdown": (
        "d7351fa33f00d430",
        "replaced: DirectHttpProtocol.shutdown keeps idle connections open for DRAIN_GRACE_S; it relies "
        "on the same fields (cycle.response_complete, cycle.keep_alive)",
    ),
    "data_received": (
        "010a7ae59a5d3b1a",
        "feeds the parser that calls the callbacks above, and answers its errors through "
        "send_400_response; DirectHttpProtocol.data_received counts head bytes around it",
    ),
    "connection_made": ("6efb565ff3d36b91", "sets transport; DirectHttpProtocol starts the idle timer after"),
    "on_url": (
        "37be44e962b04ca8",
        "appends to self.url, whose length DirectHttpProtocol checks once the head is complete (414)",
    ),
    "on_header": (
        "65d62c044f61fdbd",
        "appends to self.headers, whose count DirectHttpProtocol checks once the head is complete (431)",
    ),
    "send_400_response": (
        "ae5a4a3782b646fd",
        "replaced: DirectHttpProtocol answers parser errors, and the 414/431 raised from "
        "on_headers_complete through it, as JSON",
    ),
}


# uvicorn.Server methods service/http/listener.py relies on, pinned the same way.
SERVER_PINNED = {
    "shutdown": (
        "9b33c50562992b1e",
        "ServesQueuedConnections.shutdown closes self.servers and the sockets first, as this does, and "
        "then calls it: it must still close them before asking each connection in server_state to finish",
    ),
    "startup": (
        "2aa1d70a244bfcf2",
        "ServesQueuedConnections._new_connection builds a protocol with the arguments create_protocol "
        "passes (config, server_state, app_state=lifespan.state)",
    ),
}


# (class, method, hash, what relies on it, the test to run after re-checking), for every pin above.
PINS = [
    (HttpToolsProtocol, name, digest, f"service/http/direct.py relies on it: {note}", "test_direct_http.py")
    for name, (digest, note) in PINNED.items()
] + [
    (uvicorn.Server, name, digest, f"service/http/listener.py relies on it: {note}", "test_supervision.py")
    for name, (digest, note) in SERVER_PINNED.items()
]


@pytest.mark.parametrize(
    ("cls", "name", "expected", "relied_on", "test"),
    PINS,
    ids=lambda value: getattr(value, "__name__", None),
)
def test_the_uvicorn_methods_the_service_relies_on_are_unchanged(
    cls: type, name: str, expected: str, relied_on: str, test: str
) -> None:
    got = hashlib.sha256(inspect.getsource(getattr(cls, name)).encode()).hexdigest()[:16]
    assert got == expected, (
        f"uvicorn {uvicorn.__version__} changed {cls.__name__}.{name}. {relied_on}. Re-check that, run "
        f"tests/integration/{test}, then pin {got!r} here."
    )


def test_the_module_level_names_direct_http_uses_exist() -> None:
    assert isinstance(httptools_impl.STATUS_LINE, dict) and httptools_impl.STATUS_LINE[200].startswith(
        b"HTTP/1.1 200"
    ), "uvicorn's STATUS_LINE (status code -> encoded status line) changed: re-check DirectHttpProtocol"
