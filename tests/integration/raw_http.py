"""HTTP/1.1 over raw sockets, for clients no HTTP library would be: partial, oversized, malformed."""

from __future__ import annotations

import json
import socket
import time

import psutil

from .harness import RunningServer


def connect(server: RunningServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=30)


def until_closed(sock: socket.socket) -> tuple[float, bytes]:
    """Seconds until the server closed the connection, and everything it sent before."""
    started, received = time.monotonic(), b""
    with sock:
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
    return time.monotonic() - started, received


def read_answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One answer on a connection that stays usable: status, headers (lower-case names), body."""
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(65536)
        assert chunk, f"closed before an answer: {received[:200]!r}"
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "closed in the middle of an answer"
        body += chunk
    assert len(body) == length, "more bytes than the answer's Content-Length"
    return int(lines[0].split()[1]), headers, body


def status_and_error(answer: bytes) -> tuple[int, str]:
    """The status and JSON error of the last answer before the server closed the connection."""
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    assert headers["content-type"] == "application/json" and headers["connection"] == "close", headers
    return int(lines[0].split()[1]), json.loads(body)["error"]


def tree_rss(server: RunningServer) -> int:
    """Resident bytes of the server's whole process tree."""
    root = psutil.Process(server.process.pid)
    return sum(process.memory_info().rss for process in [root, *root.children(recursive=True)])
