"""MNIST digits as the files and bodies clients send."""

from __future__ import annotations

import base64
import io
import uuid

import numpy as np
from PIL import Image


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def encode(pixels: np.ndarray, image_format: str, mode: str = "L") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(pixels, dtype=np.uint8)).convert(mode).save(buffer, format=image_format)
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def multipart(files: list[tuple[str, bytes, str]], field: str = "files") -> tuple[bytes, str]:
    """A multipart/form-data body with one part per (filename, bytes, content type)."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, data, content_type in files:
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{name}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n".encode()
            + data
            + b"\r\n"
        )
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def paper_photo(pixels: np.ndarray, scale: int = 9, seed: int = 0) -> np.ndarray:
    """An MNIST digit as a large, off-centre dark-on-light 'scan' with uneven paper and noise."""
    rng = np.random.default_rng(seed)
    big = np.asarray(
        Image.fromarray(pixels).resize((28 * scale, 28 * scale), Image.Resampling.BICUBIC), float
    )
    canvas = np.zeros((28 * scale + 90, 28 * scale + 140))
    canvas[30 : 30 + big.shape[0], 100 : 100 + big.shape[1]] = big
    paper = 225 + 15 * np.linspace(-1, 1, canvas.shape[1])[None, :] + rng.normal(0, 4, canvas.shape)
    ink_colour = 35.0
    photo = paper - (paper - ink_colour) * (canvas / 255.0)
    return np.clip(photo, 0, 255).astype(np.uint8)
