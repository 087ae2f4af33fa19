"""Every row of the error table, as a client meets it, and each counted in the metrics."""

from __future__ import annotations

import io
import json
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from .harness import RunningServer
from .images import b64, multipart, png

BLANK = np.zeros((28, 28), np.uint8)


def _rejected(server: RunningServer, reason: str) -> float:
    return server.scrape().value(f'mnist_rejected_requests_total{{reason="{reason}"}}')


def _bomb_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (12_000, 12_000), 255).save(buffer, format="PNG")  # 144 MP, a few hundred KB on the wire
    return buffer.getvalue()


JSON = {"content-type": "application/json"}
TRUE_PIXELS = json.dumps([[True] * 28] * 28).encode()
MIXED_PIXELS = json.dumps([[0] * 27 + [True]] + [[0] * 28] * 27).encode()  # one true among numbers
LONG_BOUNDARY_BODY = b"--" + b"b" * 300 + b"--\r\n"  # python-multipart refuses boundaries over 256 bytes


def _v2_header(shape: list[int], datatype: str = "UINT8", **fields: object) -> bytes:
    """A v2 infer request's JSON: ``data=...`` for a JSON tensor, ``binary_data_size=...`` for binary."""
    spec: dict[str, object] = {"name": "pixels", "datatype": datatype, "shape": shape}
    if "data" in fields:
        spec["data"] = fields["data"]
    else:
        spec["parameters"] = fields
    return json.dumps({"inputs": [spec]}).encode()


CASES = [
    # (status, reason, method, path, body, headers, message fragment)
    (
        400,
        "bad_request",
        "POST",
        "/predict",
        b"{not json",
        {"content-type": "application/json"},
        "malformed JSON",
    ),
    (
        400,
        "bad_request",
        "POST",
        "/predict",
        b"\x89PNG\r\n\x1a\n broken",
        {"content-type": "image/png"},
        "decode",
    ),
    (
        400,
        "bad_request",
        "POST",
        "/predict",
        b'{"images": ["%%%"]}',
        {"content-type": "application/json"},
        "base64",
    ),
    (
        415,
        "unsupported_media_type",
        "POST",
        "/predict",
        b"hello",
        {"content-type": "text/plain"},
        "content type",
    ),
    (415, "unsupported_media_type", "POST", "/predict", b"{}", {}, "content type"),
    (
        422,
        "invalid_input",
        "POST",
        "/predict",
        b'{"pixels": [[1, 2], [3, 4]]}',
        {"content-type": "application/json"},
        "shape",
    ),
    (
        422,
        "invalid_input",
        "POST",
        "/predict",
        ('{"pixels": %s}' % ([[0.5] * 28] * 28)).encode(),
        {"content-type": "application/json"},
        "whole numbers",
    ),
    (
        422,
        "invalid_input",
        "POST",
        "/predict",
        ('{"pixels": %s}' % ([[256] * 28] * 28)).encode(),
        {"content-type": "application/json"},
        "0..255",
    ),
    (
        422,
        "invalid_input",
        "POST",
        "/predict",
        b'{"something": 1}',
        {"content-type": "application/json"},
        "pixels",
    ),
    (
        404,
        "not_found",
        "POST",
        "/v2/models/other/infer",
        b"{}",
        {"content-type": "application/json"},
        "not served",
    ),
    (404, "not_found", "GET", "/v2/models/mnist/versions/7", None, {}, "not served"),
    # Inputs that once reached a 500: each is the client's mistake, so a 4xx.
    (
        400,
        "bad_request",
        "POST",
        "/v2/models/mnist/infer",
        _v2_header([1, 784], binary_data_size=784) + bytes(784),
        {"inference-header-content-length": "\u00b2"},  # a digit to str.isdigit(), not to int()
        "inference-header-content-length",
    ),
    *(
        (422, "invalid_input", "POST", "/v2/models/mnist/infer", _v2_header(shape, data=[]), JSON, "shape")
        for shape in ([2**63, 0], [0, 2**40, 2**40], [2**31 - 1, 2**31 - 1, 0], [0] * 5000)
    ),
    (
        400,
        "bad_request",
        "POST",
        "/predict",
        LONG_BOUNDARY_BODY,
        {"content-type": "multipart/form-data; boundary=" + "b" * 300},
        "boundary",
    ),
    (422, "invalid_input", "POST", "/predict", b'{"pixels": %s}' % TRUE_PIXELS, JSON, "true or false"),
    (422, "invalid_input", "POST", "/predict", b'{"pixels": %s}' % MIXED_PIXELS, JSON, "true or false"),
    *(
        (
            422,
            "invalid_input",
            "POST",
            "/v2/models/mnist/infer",
            _v2_header([1, 784], datatype, data=[True] * 784),
            JSON,
            "true or false",
        )
        for datatype in ("UINT8", "FP32")
    ),
    *(
        (
            422,
            "invalid_input",
            "POST",
            "/v2/models/mnist/infer",
            _v2_header([1, 784], datatype, data=[0] * 783 + [True]),
            JSON,
            "true or false",
        )
        for datatype in ("UINT8", "FP32")
    ),
    (404, "not_found", "GET", "/v2/models/..%2F..%2Fetc/ready", None, {}, ""),
]


@pytest.mark.parametrize("status,reason,method,path,body,headers,fragment", CASES)
def test_error_table(server: RunningServer, status, reason, method, path, body, headers, fragment) -> None:
    before = _rejected(server, reason)
    reply = server.request(method, path, body, headers)
    assert reply.status == status, reply.body
    assert reply.headers["content-type"].startswith("application/json")
    assert fragment.lower() in reply.json()["error"].lower()
    assert _rejected(server, reason) >= before + 1


def test_blank_image_is_422_not_a_confident_guess(server: RunningServer) -> None:
    white = np.full((200, 200), 255, np.uint8)
    reply = server.request("POST", "/predict", png(white), {"content-type": "image/png"})
    assert reply.status == 422 and "no digit" in reply.json()["error"]


def _inflating_png() -> bytes:
    """A 28x28 header in front of 256 MiB of deflated zeros (260 KB)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 28, 28, 8, 0, 0, 0, 0)
    data = zlib.compress(bytes(256 * 2**20), 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("bomb", "fragment"),
    [(_bomb_png, "pixels"), (_inflating_png, "inflates to more than")],
    ids=["declared too large", "inflates past its header"],
)
def test_decompression_bomb_is_413(server: RunningServer, bomb, fragment: str) -> None:
    before = _rejected(server, "too_large")
    reply = server.request("POST", "/predict", bomb(), {"content-type": "image/png"})
    assert reply.status == 413 and fragment in reply.json()["error"]
    assert _rejected(server, "too_large") == before + 1


def test_too_many_images_is_413(server: RunningServer) -> None:
    reply = server.post_json("/predict", {"pixels": np.zeros((257, 784), int).tolist()})
    assert reply.status == 413 and "limit is 256" in reply.json()["error"]
    body, content_type = multipart([(f"{i}.png", png(BLANK), "image/png") for i in range(257)])
    reply = server.request("POST", "/predict", body, {"content-type": content_type})
    assert reply.status == 413


def test_too_many_bytes_is_413_before_reading_the_body(server: RunningServer) -> None:
    huge = b"0" * (8 * 1024 * 1024 + 1)
    reply = server.request("POST", "/predict", huge, {"content-type": "application/json"})
    assert reply.status == 413 and "exceeds" in reply.json()["error"]


def test_base64_list_must_be_strings(server: RunningServer) -> None:
    reply = server.post_json("/predict", {"images": [b64(png(BLANK)), 7]})
    assert reply.status == 422


def test_user_input_never_causes_a_500(server: RunningServer) -> None:
    bodies = [
        b"",
        b"null",
        b"[]",
        b'{"pixels": null}',
        b'{"pixels": "abc"}',
        b'{"pixels": [[]]}',
        b'{"pixels": [NaN]}',
        b'{"images": null}',
        b'{"image": ""}',
        b'{"pixels": [[1e400]]}',
        b'{"pixels": ' + str([[float("nan")] * 28] * 28).replace("nan", "NaN").encode() + b"}",
    ]
    for body in bodies:
        reply = server.request("POST", "/predict", body, {"content-type": "application/json"})
        assert 400 <= reply.status < 500, (body[:40], reply.status, reply.body)
    for body in bodies:
        reply = server.request("POST", "/v2/models/mnist/infer", body, {"content-type": "application/json"})
        assert 400 <= reply.status < 500, (body[:40], reply.status, reply.body)
