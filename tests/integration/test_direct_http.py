"""The inference routes' direct HTTP path (service/http/direct.py) over raw sockets: keep-alive,
pipelining, Connection: close, HTTP/1.0, chunked bodies, Expect: 100-continue, size limits, errors,
clients that leave before their answer."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from training.data import MnistArrays

from .harness import RunningServer, start_server

MAX_BYTES = 20_000


def _body(mnist: MnistArrays, index: int = 0) -> bytes:
    return json.dumps({"pixels": mnist.test_images[index].tolist()}).encode()


def _post(body: bytes, path: str = "/predict", extra: str = "", version: str = "1.1") -> bytes:
    return (
        f"POST {path} HTTP/{version}\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


class Reader:
    """Reads HTTP/1.1 responses with a Content-Length off one socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def response(self) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buffer:
            self._more()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers["content-length"])
        while len(self.buffer) < length:
            self._more()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return int(lines[0].split()[1]), headers, body

    def closed(self) -> bool:
        self.sock.settimeout(10)
        return self.sock.recv(1) == b""

    def _more(self) -> None:
        data = self.sock.recv(65536)
        assert data, "connection closed early"
        self.buffer += data


@pytest.fixture(scope="module")
def small_limit_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(Path(tmp_path_factory.mktemp("fast-http")), "--max-request-bytes", str(MAX_BYTES))
    yield running
    assert running.stop() == 0, running.log()


def _connect(server: RunningServer) -> Reader:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    return Reader(sock)


def test_keep_alive_answers_many_requests_on_one_connection(
    server: RunningServer, mnist: MnistArrays
) -> None:
    reader = _connect(server)
    for index in range(5):
        reader.sock.sendall(_post(_body(mnist, index)))
        status, headers, body = reader.response()
        assert status == 200 and headers["content-type"] == "application/json"
        assert "date" in headers and "connection" not in headers
        assert json.loads(body)["predictions"][0]["digit"] == int(mnist.test_labels[index])
    reader.sock.close()


KEEP_ALIVE_S = 5  # uvicorn's default, which the server keeps


def test_an_idle_connection_is_closed_after_the_keep_alive_timeout_and_an_active_one_is_not(
    server: RunningServer, mnist: MnistArrays
) -> None:
    reader = _connect(server)
    for _ in range(3):  # a request every 3 s: the timer armed after the first answer finds it busy
        reader.sock.sendall(_post(_body(mnist)))
        assert reader.response()[0] == 200
        last_answer = time.monotonic()
        time.sleep(3)
    reader.sock.settimeout(KEEP_ALIVE_S + 5)
    assert reader.sock.recv(1) == b""  # closed by the server, with nothing sent
    idle = time.monotonic() - last_answer
    assert KEEP_ALIVE_S - 0.5 <= idle <= KEEP_ALIVE_S + 1.5, idle


def test_pipelined_requests_are_answered_in_order(server: RunningServer, mnist: MnistArrays) -> None:
    reader = _connect(server)
    health = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n"
    v2 = json.dumps(
        {
            "inputs": [
                {
                    "name": "pixels",
                    "datatype": "UINT8",
                    "shape": [1, 784],
                    "data": mnist.test_images[3].reshape(-1).tolist(),
                }
            ]
        }
    ).encode()
    reader.sock.sendall(
        _post(_body(mnist, 1)) + health + _post(v2, "/v2/models/mnist/infer") + _post(_body(mnist, 2))
    )
    first, second, third, fourth = (reader.response() for _ in range(4))
    assert json.loads(first[2])["predictions"][0]["digit"] == int(mnist.test_labels[1])
    assert json.loads(second[2]) == {"live": True}
    outputs = json.loads(third[2])["outputs"][0]["data"]
    assert int(np.argmax(outputs)) == int(mnist.test_labels[3])
    assert json.loads(fourth[2])["predictions"][0]["digit"] == int(mnist.test_labels[2])
    reader.sock.close()


def test_connection_close_and_http_1_0_close_after_the_answer(
    server: RunningServer, mnist: MnistArrays
) -> None:
    for request in (_post(_body(mnist), extra="Connection: close\r\n"), _post(_body(mnist), version="1.0")):
        reader = _connect(server)
        reader.sock.sendall(request)
        status, headers, _ = reader.response()
        assert status == 200 and headers["connection"] == "close"
        assert reader.closed()


def test_chunked_bodies_and_expect_100_continue(server: RunningServer, mnist: MnistArrays) -> None:
    body = _body(mnist, 4)
    reader = _connect(server)
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:100], body[100:]))
    reader.sock.sendall(
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"
    )
    status, _, answer = reader.response()
    assert status == 200 and json.loads(answer)["predictions"][0]["digit"] == int(mnist.test_labels[4])
    head = _post(body, extra="Expect: 100-continue\r\n")[: -len(body)]
    reader.sock.sendall(head)  # the body follows only after the server said 100 Continue
    assert reader.sock.recv(64).startswith(b"HTTP/1.1 100 Continue")
    reader.sock.sendall(body)
    status, _, answer = reader.response()
    assert status == 200 and json.loads(answer)["predictions"][0]["digit"] == int(mnist.test_labels[4])
    reader.sock.close()


def test_bad_bodies_get_their_error_and_the_connection_stays_usable(
    server: RunningServer, mnist: MnistArrays
) -> None:
    reader = _connect(server)
    reader.sock.sendall(_post(b"{not json") + _post(_body(mnist, 5)))
    status, _, body = reader.response()
    assert status == 400 and "malformed JSON" in json.loads(body)["error"]
    status, _, body = reader.response()
    assert status == 200 and json.loads(body)["predictions"][0]["digit"] == int(mnist.test_labels[5])
    reader.sock.close()


def test_requests_arriving_in_small_pieces_are_put_together(
    server: RunningServer, mnist: MnistArrays
) -> None:
    reader = _connect(server)
    reader.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    stream = _post(_body(mnist, 6)) + _post(_body(mnist, 7))
    for start in range(0, len(stream), 997):  # odd pieces split the head, the body and the boundary
        reader.sock.sendall(stream[start : start + 997])
    for index in (6, 7):
        status, _, body = reader.response()
        assert status == 200 and json.loads(body)["predictions"][0]["digit"] == int(mnist.test_labels[index])
    reader.sock.close()


def test_a_client_gone_mid_request_does_not_disturb_the_others(
    server: RunningServer, mnist: MnistArrays
) -> None:
    for cut in (10, 200):  # inside the head, inside the body
        gone = _connect(server)
        gone.sock.sendall(_post(_body(mnist, 8))[:cut])
        gone.sock.close()
    answered = _connect(server)  # sent its request and left before the answer
    answered.sock.sendall(_post(_body(mnist, 8)))
    answered.sock.close()
    reader = _connect(server)
    reader.sock.sendall(_post(_body(mnist, 9)))
    status, _, body = reader.response()
    assert status == 200 and json.loads(body)["predictions"][0]["digit"] == int(mnist.test_labels[9])
    reader.sock.close()


def test_oversized_bodies_are_refused_and_the_connection_closed(small_limit_server: RunningServer) -> None:
    declared = _connect(small_limit_server)  # refused from its Content-Length, before the body is sent
    declared.sock.sendall(
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 50000\r\n\r\n"
    )
    status, headers, body = declared.response()
    assert status == 413 and headers["connection"] == "close"
    assert json.loads(body)["error"] == f"request body of 50000 bytes exceeds {MAX_BYTES} bytes"
    declared.sock.sendall(b"1" * 50000)  # read and dropped (no reset), then the connection is closed
    assert declared.closed()
    streamed = _connect(small_limit_server)  # chunked: refused once the bytes received pass the limit
    streamed.sock.sendall(
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    with contextlib.suppress(OSError):  # the server may close while we are still sending
        for _ in range(40):
            streamed.sock.sendall(b"3e8\r\n" + b"1" * 1000 + b"\r\n")
    status, _, body = streamed.response()
    assert status == 413
    streamed.sock.sendall(b"0\r\n\r\n")
    assert streamed.closed()
    ok = _connect(small_limit_server)
    ok.sock.sendall(_post(json.dumps({"pixels": [[0] * 28] * 28}).encode()))
    assert ok.response()[0] == 200


KEY = "s3cret"


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(
        Path(tmp_path_factory.mktemp("keyed-http")),
        "--max-request-bytes",
        str(MAX_BYTES),
        env={"MNIST_API_KEY": KEY},
    )
    yield running
    assert running.stop() == 0, running.log()


def test_the_api_key_is_checked_from_the_headers_before_any_of_the_body(
    keyed_server: RunningServer, mnist: MnistArrays
) -> None:
    reader = _connect(keyed_server)
    # A body declared far over the limit: 401, not 413, and without waiting for the body.
    reader.sock.sendall(
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000000000\r\n\r\n"
    )
    status, _, body = reader.response()
    assert status == 401 and "API key" in json.loads(body)["error"]
    reader.sock.close()
    for headers, expected in (("", 401), (f"X-API-Key: {KEY}\r\n", 400)):  # the key before the body's checks
        reader = _connect(keyed_server)
        reader.sock.sendall(_post(b"{not json", extra=headers))
        assert reader.response()[0] == expected
        reader.sock.sendall(_post(_body(mnist, 4), extra=f"X-API-Key: {KEY}\r\n"))  # still usable
        status, _, body = reader.response()
        assert status == 200 and json.loads(body)["predictions"][0]["digit"] == int(mnist.test_labels[4])
        reader.sock.close()


def test_a_request_refused_at_its_headers_keeps_its_connection_and_keep_alive_timer(
    server: RunningServer, mnist: MnistArrays
) -> None:
    reader = _connect(server)
    v2 = _post(b"{}", "/v2/models/no-such-model/infer")
    reader.sock.sendall(v2[:-2])  # the headers and half the body
    status, headers, body = reader.response()
    assert status == 404 and "connection" not in headers and "no-such-model" in json.loads(body)["error"]
    reader.sock.sendall(v2[-2:] + _post(_body(mnist, 5)))  # the rest, dropped; then the next request
    status, _, body = reader.response()
    assert status == 200 and json.loads(body)["predictions"][0]["digit"] == int(mnist.test_labels[5])
    reader.sock.sendall(v2)  # refused whole; then idle: closed after the keep-alive timeout
    assert reader.response()[0] == 404
    answered = time.monotonic()
    reader.sock.settimeout(KEEP_ALIVE_S + 5)
    assert reader.sock.recv(1) == b""
    assert time.monotonic() - answered <= KEEP_ALIVE_S + 1.5


def _metric(server: RunningServer, sample: str) -> float:
    return server.scrape().value(sample)


@pytest.mark.parametrize("path", [(), ("--access-log", "true")], ids=["direct path", "uvicorn's ASGI path"])
def test_a_client_that_leaves_gives_its_queue_slot_back_at_once(
    path: tuple[str, ...], tmp_path: Path, mnist: MnistArrays
) -> None:
    # One slot, and a worker that waits 3 s for its batch to fill: the first request holds the slot
    # until then unless leaving gives it back. With the access log on, the inference routes take
    # uvicorn's ASGI path (service.http.asgi.InferenceRoutes) instead of service.http.direct.
    flags = ("--queue-limit", "1", "--batch-timeout", "3", "--request-timeout", "10", "--api-servers", "1")
    running = start_server(tmp_path, *flags, *path)
    try:
        gone = _connect(running)
        gone.sock.sendall(_post(_body(mnist, 1)))
        deadline = time.monotonic() + 2
        while _metric(running, "mnist_in_flight_requests") < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _metric(running, "mnist_in_flight_requests") == 1
        left_at = time.monotonic()
        gone.sock.close()
        while _metric(running, "mnist_in_flight_requests") > 0 and time.monotonic() - left_at < 2:
            time.sleep(0.02)
        assert _metric(running, "mnist_in_flight_requests") == 0  # well before the 3 s batch is computed
        assert time.monotonic() - left_at < 2
        reader = _connect(running)  # admitted, not refused with a 503 for the slot the other one held
        reader.sock.sendall(_post(_body(mnist, 2)))
        status, _, body = reader.response()
        assert status == 200 and json.loads(body)["predictions"][0]["digit"] == int(mnist.test_labels[2])
        reader.sock.close()
        assert _metric(running, 'mnist_requests_total{code="499",method="POST",route="/predict"}') == 1
        assert _metric(running, 'mnist_requests_total{code="200",method="POST",route="/predict"}') == 1
    finally:
        assert running.stop() == 0, running.log()


def test_every_form_of_request_target_reaches_its_route(server: RunningServer, mnist: MnistArrays) -> None:
    # The direct path reads a plain path itself and parses query strings and absolute URLs; every
    # distinct path is matched on its own.
    reader = _connect(server)
    reader.sock.sendall(_post(_body(mnist, 3), "/predict?include=pixels"))
    status, _, body = reader.response()
    assert status == 200 and len(json.loads(body)["predictions"][0]["pixels"]) == 28
    reader.sock.sendall(_post(_body(mnist, 3), f"http://127.0.0.1:{server.port}/predict"))
    status, _, body = reader.response()
    assert status == 200 and "pixels" not in json.loads(body)["predictions"][0]
    v2 = json.dumps(
        {"inputs": [{"name": "pixels", "shape": [1, 784], "datatype": "UINT8", "data": [0] * 784}]}
    ).encode()
    for index in range(40):
        reader.sock.sendall(_post(v2, f"/v2/models/other-{index}/infer"))
        status, _, body = reader.response()
        assert status == 404 and f"'other-{index}'" in json.loads(body)["error"]
    reader.sock.sendall(_post(v2, "/v2/models/mnist/infer"))
    status, _, body = reader.response()
    assert status == 200 and json.loads(body)["outputs"][0]["shape"] == [1, 10]
    reader.sock.close()


def test_a_client_that_retries_at_once_after_a_503_waits_its_retry_after(
    tmp_path: Path, mnist: MnistArrays
) -> None:
    # Clients that ignore Retry-After would otherwise take the CPU the admitted requests need.
    running = start_server(tmp_path, "--queue-limit", "1", "--batch-timeout", "3")
    try:
        holder = _connect(running)  # takes the only slot for the 3 s batch window
        holder.sock.sendall(_post(_body(mnist)))
        time.sleep(0.5)
        retrying = _connect(running)
        times = []
        started = time.monotonic()
        request = _post(_body(mnist))
        head, body = request[: request.index(b"\r\n\r\n") + 4], request[request.index(b"\r\n\r\n") + 4 :]
        for attempt in range(3):
            retrying.sock.sendall(head)
            if attempt == 0:  # refused at its headers: answered before its body is even sent
                status, _, _ = retrying.response()
                assert status == 503
                times.append(time.monotonic() - started)
                retrying.sock.sendall(body)  # dropped; the connection goes on
                continue
            retrying.sock.sendall(body)
            status, headers, _ = retrying.response()
            assert status == 503 and headers.get("retry-after") == "1", (status, headers)
            times.append(time.monotonic() - started)
        assert times[0] < 0.5  # the first refusal at once
        assert times[1] >= 0.9 and times[2] - times[1] >= 0.9, times  # then once per Retry-After
        assert holder.response()[0] == 200
    finally:
        assert running.stop() == 0, running.log()
