"""Clients that hold on to an API server, over raw sockets: each is refused or closed as the limits say
(service/http/connection_limits.py), with the service's JSON error, and the server's memory is what it
was once they are gone. The timeouts are shortened so that the battery runs in seconds."""

from __future__ import annotations

import base64
import io
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from .harness import RunningServer, start_server
from .raw_http import connect, status_and_error, tree_rss, until_closed

HEADER_TIMEOUT_S = 1.0
BODY_TIMEOUT_S = 1.5
KEEP_ALIVE_S = 1.0
MAX_URL = 1024
MAX_HEADER_BYTES = 8192
MAX_HEADERS = 20
DECODE_TIMEOUT_S = 0.02
MAX_BUFFERED = 8 * 2**20
API_SERVERS = 2
SLACK_S = 1.0  # scheduling on a busy 2-core machine


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(
        Path(tmp_path_factory.mktemp("hostile")),
        *("--header-timeout", str(HEADER_TIMEOUT_S), "--body-timeout", str(BODY_TIMEOUT_S)),
        *("--keep-alive-timeout", str(KEEP_ALIVE_S), "--max-url-bytes", str(MAX_URL)),
        *("--max-header-bytes", str(MAX_HEADER_BYTES), "--max-headers", str(MAX_HEADERS)),
        *("--decode-timeout", str(DECODE_TIMEOUT_S), "--max-buffered-body-bytes", str(MAX_BUFFERED)),
        *("--api-servers", str(API_SERVERS)),
    )
    yield running
    assert running.stop() == 0, running.log()


@pytest.mark.parametrize(
    ("sent", "seconds", "status", "stage"),
    [
        (b"", KEEP_ALIVE_S, None, ""),  # nothing at all: closed once idle, nothing written
        (b"P", HEADER_TIMEOUT_S, 408, "head"),
        (b"POST /predict HTTP/1.1\r\nHost: x\r\n", HEADER_TIMEOUT_S, 408, "head"),
        (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{", BODY_TIMEOUT_S, 408, "body"),
        (
            b"POST /v2/models/mnist/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{",
            BODY_TIMEOUT_S,
            408,
            "body",
        ),
        # uvicorn's path answers an unknown route at once, without its body: then idle
        (b"PUT /other HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{", KEEP_ALIVE_S, 404, ""),
    ],
    ids=["nothing", "one byte", "part of the headers", "part of a body", "part of a v2 body", "other route"],
)
def test_a_stalled_connection_is_closed_within_its_stage_timeout(
    guarded: RunningServer, sent: bytes, seconds: float, status: int | None, stage: str
) -> None:
    sock = connect(guarded)
    sock.sendall(sent)
    waited, answer = until_closed(sock)
    assert seconds - 0.2 <= waited <= seconds + SLACK_S, waited
    if status is None:
        assert answer == b""
    elif stage:
        got_status, error = status_and_error(answer)
        assert got_status == status and f"request {stage} not received" in error, (got_status, error)
    else:
        assert answer.startswith(b"HTTP/1.1 %d" % status), answer[:100]


def test_bytes_that_start_no_request_do_not_keep_an_idle_connection_open(guarded: RunningServer) -> None:
    sock = connect(guarded)
    sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
    assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    answered = time.monotonic()
    with pytest.raises(OSError):  # the server closes while CRLFs keep coming
        for _ in range(int((KEEP_ALIVE_S + SLACK_S) / 0.1) + 20):
            sock.sendall(b"\r\n")
            time.sleep(0.1)
    assert time.monotonic() - answered <= KEEP_ALIVE_S + SLACK_S + 0.5


@pytest.mark.parametrize(
    ("request_bytes", "status", "fragment"),
    [
        (b"GET /" + b"a" * MAX_URL + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "request target"),
        (
            b"GET /v2/health/live HTTP/1.1\r\n"
            + b"".join(b"X-%d: 1\r\n" % i for i in range(MAX_HEADERS + 1))
            + b"\r\n",
            431,
            "header fields",
        ),
        (b"GARBAGE\r\n\r\n", 400, "invalid http request"),
    ],
    ids=["long request target", "too many headers", "not HTTP"],
)
def test_an_oversized_or_malformed_head_gets_its_json_error_and_the_connection_closes(
    guarded: RunningServer, request_bytes: bytes, status: int, fragment: str
) -> None:
    sock = connect(guarded)
    sock.sendall(request_bytes)
    waited, answer = until_closed(sock)
    assert waited < 1.0
    got_status, error = status_and_error(answer)
    assert got_status == status and fragment in error.lower(), (got_status, error)


def test_a_header_that_never_ends_is_refused_before_it_is_complete(guarded: RunningServer) -> None:
    # Without the limit the server reads all of it (httptools keeps a header until it ends); with it,
    # the server closes after MAX_HEADER_BYTES and one read, and the sends fail once the kernel's
    # buffers between the two sockets (a few MB on loopback) are full.
    sock = connect(guarded)
    sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nX-Big: ")
    sent = 0
    with pytest.raises(OSError):
        while sent < 64 * 2**20:
            sock.sendall(b"a" * 65536)
            sent += 65536
    sock.close()


def test_hundreds_of_slow_clients_are_all_closed_and_leave_no_memory_behind(guarded: RunningServer) -> None:
    before = tree_rss(guarded)
    sockets = []
    for number in range(400):  # slowloris: each sends a little of its head, or of its body
        sock = connect(guarded)
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\n"
            if number % 2
            else b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n" + b"1" * 60000
        )
        sockets.append(sock)
    ok = connect(guarded)  # served meanwhile
    ok.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n")
    assert ok.recv(65536).startswith(b"HTTP/1.1 200")
    ok.close()
    deadline = time.monotonic() + BODY_TIMEOUT_S + 5
    for sock in sockets:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        until_closed(sock)  # raises TimeoutError if the server kept it open
    time.sleep(0.5)
    grown = tree_rss(guarded) - before
    assert grown < 50 * 2**20, f"server tree grew by {grown / 2**20:.0f} MiB"


H2C = b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"


def test_an_upgrade_request_is_answered_over_http_1_1_and_closed(guarded: RunningServer) -> None:
    # What curl --http2 sends to an http:// URL. httptools stops parsing at the end of an upgrade
    # request's headers, so its body would be lost: such a request is refused; one without a body
    # is answered, and the connection closed after.
    with_body = connect(guarded)
    with_body.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n" + H2C + b"Content-Length: 2\r\n\r\n{}")
    _, answer = until_closed(with_body)
    status, error = status_and_error(answer)
    assert status == 400 and "upgrade" in error
    without_body = connect(guarded)
    without_body.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n" + H2C + b"\r\n")
    waited, answer = until_closed(without_body)
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b'{"live":true}') and waited < 1.0


def test_litserves_info_route_is_not_served(guarded: RunningServer) -> None:
    assert guarded.request("GET", "/info").status == 404


@pytest.fixture(scope="module")
def one_api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(Path(tmp_path_factory.mktemp("one-api-server")), "--api-servers", "1")
    yield running
    assert running.stop() == 0, running.log()


def _large_png(mode: str, side: int = 5000) -> bytes:
    image = Image.new(mode, (side, side), "white")
    ImageDraw.Draw(image).rectangle(
        (side * 46 // 100, side // 5, side * 54 // 100, side * 4 // 5), fill="black"
    )
    encoded = io.BytesIO()
    image.save(encoded, format="PNG", optimize=True)
    return encoded.getvalue()


def _large_image_requests() -> dict[str, tuple[bytes, str]]:
    rgba, gray = _large_png("RGBA"), _large_png("L", side=4000)
    assert len(gray) < 32 * 1024  # as small on the wire as an MNIST-sized upload
    as_json = json.dumps({"image": base64.b64encode(gray).decode()}).encode()
    return {
        "rgba-png": (rgba, "image/png"),
        "gray-png-under-32-kib": (gray, "image/png"),
        "base64-in-json": (as_json, "application/json"),
    }


@pytest.mark.parametrize("kind", ["rgba-png", "gray-png-under-32-kib", "base64-in-json"])
def test_a_large_image_being_decoded_does_not_stall_the_other_clients(
    one_api_server: RunningServer, kind: str
) -> None:
    # 4000x4000 and 5000x5000 pixels are 25 to 130 KB on the wire and up to ~0.8 s of decoding: in a
    # decode thread, not on the event loop that answers everyone else (one API server here, so every
    # client meets that loop). Where they go is decided by the pixels their header declares.
    guarded = one_api_server
    big, content_type = _large_image_requests()[kind]
    small = json.dumps({"pixels": [[0] * 28] * 14 + [[0] * 13 + [255] * 2 + [0] * 13] * 14}).encode()
    answers: list[int] = []

    def send_big() -> None:
        for _ in range(2):
            answers.append(guarded.request("POST", "/predict", big, {"content-type": content_type}).status)

    senders = [threading.Thread(target=send_big) for _ in range(2)]
    for sender in senders:
        sender.start()
    latencies = []
    while any(sender.is_alive() for sender in senders):
        started = time.monotonic()
        reply = guarded.request("POST", "/predict", small, {"content-type": "application/json"})
        latencies.append(time.monotonic() - started)
        assert reply.status == 200
    assert answers == [200] * 4
    assert len(latencies) > 5 and max(latencies) < 0.5, sorted(latencies)[-5:]


def test_an_image_past_its_decoding_budget_gets_413_and_others_are_served(guarded: RunningServer) -> None:
    reply = guarded.request("POST", "/predict", _large_png("RGBA"), {"content-type": "image/png"})
    assert reply.status == 413 and f"{DECODE_TIMEOUT_S:g} s decoding budget" in reply.json()["error"]
    small = io.BytesIO()
    Image.new("L", (28, 28)).save(small, format="PNG")
    assert guarded.request("POST", "/predict", small.getvalue(), {"content-type": "image/png"}).status == 200


def test_requests_the_parser_refuses_are_not_logged_one_line_each(guarded: RunningServer) -> None:
    def logged() -> int:
        return guarded.log().count("Invalid HTTP request received.")

    time.sleep(0.2)
    before = logged()
    for _ in range(50):
        sock = connect(guarded)
        sock.sendall(b"GARBAGE\r\n\r\n")
        assert status_and_error(until_closed(sock)[1])[0] == 400
    time.sleep(0.2)
    assert logged() >= 1 and logged() - before <= 2  # once per API server within the interval (10 s)


def test_bodies_held_while_they_arrive_are_bounded_across_connections(guarded: RunningServer) -> None:
    # Each of the two API servers holds at most 8 MiB of bodies: two of these 3 MiB partial bodies.
    def partial_body() -> socket.socket:  # 3 of a declared 4 MiB, then silent
        sock = connect(guarded)
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (4 * 2**20))
        sock.sendall(b"\x00" * (3 * 2**20))
        return sock

    for _ in range(2):  # the second round finds the first round's bytes given back
        sockets = [partial_body() for _ in range(6)]
        outcomes = []
        for sock in sockets:
            waited, answer = until_closed(sock)
            status, error = status_and_error(answer)
            outcomes.append(status)
            if status == 503:
                assert waited < BODY_TIMEOUT_S and "too many request bodies" in error
        assert set(outcomes) <= {408, 503} and outcomes.count(408) <= 2 * API_SERVERS, outcomes
