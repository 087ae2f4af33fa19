"""The whole battery of hostile clients against one server, over raw sockets: each attack answered as
specified (status and connection state), other clients served, and the server tree's resident memory
within +50 MB of what it was before, once the attackers are gone. Limits are the defaults but for
shorter connection timeouts, so that stalled clients are closed within seconds."""

from __future__ import annotations

import io
import json
import os
import socket
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from .harness import RunningServer, start_server
from .raw_http import connect, read_answer, status_and_error, tree_rss, until_closed
from .test_errors import CASES as ERROR_CASES

HEADER_TIMEOUT_S = 1.0
BODY_TIMEOUT_S = 1.5
SLACK_S = 2.0  # scheduling on a busy 2-core machine
MAX_GROWTH_BYTES = 50 * 2**20
PIXELS = bytes(784)


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(
        Path(tmp_path_factory.mktemp("battery")),
        *("--header-timeout", str(HEADER_TIMEOUT_S), "--body-timeout", str(BODY_TIMEOUT_S)),
        *("--keep-alive-timeout", "1"),
    )
    yield running
    assert running.stop() == 0, running.log()


def _request(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    fields = {"host": "x", "content-length": str(len(body)), **(headers or {})}
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items())
    return head.encode("latin-1") + b"\r\n" + body


def _answered_and_kept_open(sock: socket.socket, request: bytes) -> tuple[int, bytes]:
    sock.sendall(request)
    status, headers, body = read_answer(sock)
    assert headers.get("connection") != "close", (status, body[:200])
    return status, body


def _v2_binary(header: bytes) -> bytes:
    return _request(
        "POST",
        "/v2/models/mnist/infer",
        header + PIXELS,
        {"inference-header-content-length": str(len(header)), "content-type": "application/octet-stream"},
    )


def _v2_header(padding: int) -> bytes:
    spec = {"name": "pixels", "datatype": "UINT8", "shape": [1, 784], "parameters": {"binary_data_size": 784}}
    return json.dumps({"inputs": [spec]}).encode() + b" " * padding


def _png(mode: str, side: int) -> bytes:
    image = Image.new(mode, (side, side), "white")
    ImageDraw.Draw(image).rectangle(
        (side * 46 // 100, side // 5, side * 54 // 100, side * 4 // 5), fill="black"
    )
    encoded = io.BytesIO()
    image.save(encoded, format="PNG")
    return encoded.getvalue()


def distinct_long_paths(server: RunningServer) -> None:
    # Class 1: every path different and as long as the request-target limit allows (8 KiB).
    with connect(server) as sock:
        for number in range(200):
            path = f"/v2/models/{number:04d}{'m' * 8000}/infer"
            assert _answered_and_kept_open(sock, _request("POST", path, PIXELS))[0] == 404


def a_header_that_never_ends(server: RunningServer) -> None:
    # Class 2: refused once past --max-header-bytes (64 KiB), before the header ends, and closed.
    sock = connect(server)
    sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nX-Big: ")
    with pytest.raises(OSError):
        for _ in range(1024):  # 64 MiB at most: the sends fail once the server has closed
            sock.sendall(b"a" * 65536)
    sock.close()


def partial_bodies(server: RunningServer) -> None:
    # Class 2: 40 connections each holding most of an 8 MiB body, then silent: 408 at the body timeout.
    sockets = []
    for _ in range(40):
        sock = connect(server)
        sock.sendall(
            _request("POST", "/predict", b"", {"content-type": "image/png"}).replace(
                b"content-length: 0", b"content-length: %d" % (8 * 2**20 - 1)
            )
        )
        sock.sendall(b"\x00" * (6 * 2**20))
        sockets.append(sock)
    for sock in sockets:
        waited, answer = until_closed(sock)
        assert waited <= BODY_TIMEOUT_S + SLACK_S
        assert status_and_error(answer)[0] == 408


def slow_heads(server: RunningServer) -> None:
    # Class 2: slowloris, a few header bytes each, then silent: all closed at the header timeout.
    sockets = [connect(server) for _ in range(200)]
    for sock in sockets:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n")
    for sock in sockets:
        waited, answer = until_closed(sock)
        assert waited <= HEADER_TIMEOUT_S + SLACK_S and status_and_error(answer)[0] == 408


def png_data_bomb(server: RunningServer) -> None:
    # Class 3: a 28x28 header over 8 GB of deflated zeros (7.9 MB on the wire).
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    zeros = zlib.compressobj(9)
    deflated = b"".join(zeros.compress(bytes(2**24)) for _ in range(480)) + zeros.flush()
    header = struct.pack(">IIBBBBB", 28, 28, 8, 0, 0, 0, 0)
    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", deflated) + chunk(b"IEND", b"")
    started = time.monotonic()
    with connect(server) as sock:
        status, body = _answered_and_kept_open(
            sock, _request("POST", "/predict", bomb, {"content-type": "image/png"})
        )
    assert status == 413 and b"inflates to more than" in body
    assert time.monotonic() - started < 5


def large_images_in_parallel(server: RunningServer) -> None:
    # Class 4: two 5000x5000 RGBA PNGs (130 KB each) decoded at once, others served meanwhile.
    big = _request("POST", "/predict", _png("RGBA", 5000), {"content-type": "image/png"})
    statuses: list[int] = []

    def send() -> None:
        with connect(server) as sock:
            statuses.append(_answered_and_kept_open(sock, big)[0])

    senders = [threading.Thread(target=send) for _ in range(2)]
    for sender in senders:
        sender.start()
    with connect(server) as sock:
        while any(sender.is_alive() for sender in senders):
            assert _answered_and_kept_open(sock, _request("GET", "/v2/health/ready"))[0] == 200
    for sender in senders:
        sender.join()
    assert statuses == [200, 200]


def distinct_binary_headers(server: RunningServer) -> None:
    # Class 5: 70 v2 binary requests, each with its own 1 MB JSON header (space-padded).
    with connect(server) as sock:
        for number in range(70):
            assert _answered_and_kept_open(sock, _v2_binary(_v2_header(2**20 + number)))[0] == 200


def malformed_inputs(server: RunningServer) -> None:
    # Class 6: every input that once reached a 500 (tests/integration/test_errors.py) is its 4xx.
    with connect(server) as sock:
        for status, _, method, path, body, headers, _ in ERROR_CASES:
            answered, _ = _answered_and_kept_open(sock, _request(method, path, body or b"", headers))
            assert answered == status, (method, path, answered)


def protocol_edges(server: RunningServer) -> None:
    # Class 7: an oversized body announced with Expect: 100-continue, and an h2c upgrade with a body.
    sock = connect(server)
    sock.sendall(
        _request("POST", "/predict", b"", {"expect": "100-continue"}).replace(
            b"content-length: 0", b"content-length: %d" % (9 * 2**20)
        )
    )
    assert status_and_error(until_closed(sock)[1])[0] == 413
    sock = connect(server)
    upgrade = {
        "connection": "Upgrade, HTTP2-Settings",
        "upgrade": "h2c",
        "http2-settings": "AAMAAABkAARAAAAAAAIAAAAA",
    }
    sock.sendall(_request("POST", "/predict", b"{}", upgrade))
    assert status_and_error(until_closed(sock)[1])[0] == 400
    with connect(server) as sock:
        assert _answered_and_kept_open(sock, _request("GET", "/info"))[0] == 404


BATTERY: list[Callable[[RunningServer], None]] = [
    distinct_long_paths,
    a_header_that_never_ends,
    partial_bodies,
    slow_heads,
    png_data_bomb,
    large_images_in_parallel,
    distinct_binary_headers,
    malformed_inputs,
    protocol_edges,
]


def test_every_attack_is_answered_as_specified_and_leaves_no_memory_behind(target: RunningServer) -> None:
    warm_up = [
        _request("POST", "/predict", _png("L", 300), {"content-type": "image/png"}),
        _v2_binary(_v2_header(0)),
    ]
    with connect(target) as sock:  # the first requests of each kind import and allocate for good
        for request in warm_up * 3:
            assert _answered_and_kept_open(sock, request)[0] == 200
    # So does the first large image on each API server: its decode threads, their stacks and malloc
    # arenas, OpenCV's thread pool (tens of MB, once).
    large_images_in_parallel(target)
    large_images_in_parallel(target)
    before = tree_rss(target)
    trace = []
    for attack in BATTERY:
        attack(target)
        trace.append(f"{attack.__name__}: {(tree_rss(target) - before) / 2**20:+.0f} MiB")
    time.sleep(1.0)  # the last connections closed, held metrics written
    with connect(target) as sock:
        assert _answered_and_kept_open(sock, warm_up[1])[0] == 200
    grown = tree_rss(target) - before
    print("\n".join(trace))
    assert grown < MAX_GROWTH_BYTES, f"grew by {grown / 2**20:.0f} MiB: " + "; ".join(trace)
    assert os.kill(target.process.pid, 0) is None  # still running
