"""What the benchmarks share: the request bodies clients send, and a free port."""

from __future__ import annotations

import io
import json
import socket
from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Body:
    name: str
    path: str
    data: bytes
    headers: dict[str, str]
    images: int


def bodies(images: np.ndarray) -> list[Body]:
    png = io.BytesIO()
    Image.fromarray(images[0]).save(png, format="PNG")
    boundary = "benchboundary"
    multipart = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="0.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + png.getvalue()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    v2_json = {
        "inputs": [
            {"name": "pixels", "datatype": "UINT8", "shape": [1, 784], "data": images[0].reshape(-1).tolist()}
        ]
    }
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "pixels",
                    "datatype": "UINT8",
                    "shape": [1, 784],
                    "parameters": {"binary_data_size": 784},
                }
            ]
        }
    ).encode()
    json_type = {"Content-Type": "application/json"}
    return [
        Body("json-pixels", "/predict", json.dumps({"pixels": images[0].tolist()}).encode(), json_type, 1),
        Body(
            "png-upload",
            "/predict",
            multipart,
            {"Content-Type": f"multipart/form-data; boundary={boundary}"},
            1,
        ),
        Body("v2-json", "/v2/models/mnist/infer", json.dumps(v2_json).encode(), json_type, 1),
        Body(
            "v2-binary",
            "/v2/models/mnist/infer",
            header + images[0].tobytes(),
            {"Inference-Header-Content-Length": str(len(header))},
            1,
        ),
        Body(
            "json-64-images", "/predict", json.dumps({"pixels": images[:64].tolist()}).encode(), json_type, 64
        ),
    ]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
