"""Turn what clients send into the model's input: uint8 ``[28, 28]``, white digit on black.

Image files of any size are decoded to grayscale, and the digit in them is found and put through the
recipe the original MNIST was made with (service.inputs.digit_finder), so that a photo or scan of a
digit on paper or a board, under uneven light, looks to the model like an MNIST sample. A 28x28
image already in MNIST convention (dark background) passes through unchanged, as do pixel arrays,
which are raw model input by contract.
"""

from __future__ import annotations

import io
import math
import struct
import time
import zlib

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from service.errors import BadRequest, PayloadTooLarge, Unprocessable
from service.inputs.digit_finder import SIDE, find_digit

SUPPORTED_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF")
DEFAULT_MAX_PIXELS = 25_000_000
# Larger images are shrunk (box average, on 8-bit pixels) to at most this side right after decoding:
# the digit ends up 20 pixels tall, and the float steps of the recipe on a 5000x5000 RGBA image took
# 1.7 GB and 5.8 s.
MAX_WORKING_SIDE = 1024


# The size limit is ours (DecodeBudget, checked after the header is read and before any pixel is
# decompressed); PIL's own global limit would only add a warning filter to every decode.
Image.MAX_IMAGE_PIXELS = None


class DecodeElsewhere(Exception):
    """An image declares more pixels than its caller decodes on its own thread (an API server's
    event loop, which every other client shares); raised before any pixel is decoded."""


class DecodeBudget:
    """What decoding one request's images may cost: pixels per image (413 from the image's header,
    before anything is decompressed), wall time in all (413 once spent: checked between the decoder's
    reads and after each step, so one step may overrun it), and optionally pixels in all on the
    calling thread (beyond them, ``DecodeElsewhere``)."""

    __slots__ = ("deadline", "max_pixels", "pixels_here", "seconds")

    def __init__(
        self, max_pixels: int = DEFAULT_MAX_PIXELS, seconds: float = math.inf, pixels_here: float = math.inf
    ) -> None:
        self.max_pixels = max_pixels
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds
        self.pixels_here = pixels_here

    def elsewhere(self) -> DecodeBudget:
        """The same budget for a thread of its own: the same deadline, no cap on pixels in all."""
        budget = DecodeBudget(self.max_pixels, self.seconds)
        budget.deadline = self.deadline
        return budget

    def admit(self, width: int, height: int) -> None:
        pixels = width * height
        if pixels > self.max_pixels:
            raise PayloadTooLarge(
                f"image is {width}x{height} pixels; the limit is {self.max_pixels:,} pixels"
            )
        if pixels > self.pixels_here:
            raise DecodeElsewhere
        self.pixels_here -= pixels

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise PayloadTooLarge(f"image takes more than the {self.seconds:g} s decoding budget")


class _TimedReader(io.BytesIO):
    """The image file as Pillow's decoders read it, a block at a time: the decoding budget is checked
    before each block."""

    def __init__(self, data: bytes, budget: DecodeBudget) -> None:
        super().__init__(data)
        self.budget = budget

    def read(self, size: int | None = -1) -> bytes:
        self.budget.check_time()
        return super().read(size)


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_GRAY, PNG_RGB = 0, 2


PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # by colour type
MAX_PNG_CHUNKS = 10_000  # libpng writes 8 KiB IDAT chunks: about 1,000 in an 8 MiB body


def _check_png_data(data: bytes, width: int, height: int, budget: DecodeBudget) -> None:
    """Refuse a PNG whose image data inflates to more than its header needs. Decoders inflate all of
    it (libpng reads the stream to its end after the last row), so 8 MB of deflated zeros behind a
    28x28 header took an API server 19 s and 8 GB of inflating. One bounded pass of zlib: it stops
    at the size the header needs, so it costs about what the decoder's own inflating does."""
    depth, colour, _, _, interlace = struct.unpack(">BBBBB", data[24:29])
    channels = PNG_CHANNELS.get(colour)
    if channels is None or depth not in (1, 2, 4, 8, 16):
        return  # the decoder refuses it, with its own words
    needed = height * ((width * channels * depth + 7) // 8 + 1)  # a filter byte per row
    if interlace:
        needed += 7 * (height + 8)  # each of the 7 passes has its own rows, each its filter byte
    idat, offset = [], 8
    for _ in range(MAX_PNG_CHUNKS):
        if offset + 8 > len(data):
            break
        length, kind = struct.unpack(">I4s", data[offset : offset + 8])
        if kind == b"IDAT":
            idat.append(data[offset + 8 : offset + 8 + length])
        elif kind == b"IEND":
            break
        offset += 12 + length
    else:
        raise BadRequest(f"PNG has more than {MAX_PNG_CHUNKS:,} chunks")
    inflater, pending, inflated = zlib.decompressobj(), b"".join(idat), 0
    try:
        while pending and not inflater.eof:  # 64 KiB at a time, none of it kept
            inflated += len(inflater.decompress(pending, 1 << 16))
            if inflated > needed:
                raise PayloadTooLarge(
                    f"PNG image data inflates to more than its {width}x{height} header needs"
                )
            pending = inflater.unconsumed_tail
            budget.check_time()
    except zlib.error:
        return  # corrupt: the decoder words the error


def _fast_png(data: bytes) -> np.ndarray | None:
    """8-bit grayscale or RGB PNGs (no alpha) through OpenCV, pixel-identical to Pillow up to
    MAX_WORKING_SIDE (larger ones are shrunk in colour first, as Pillow's path does); else None.

    Pillow spends ~40 µs of Python per small image before and after decoding; OpenCV ~8 µs.
    """
    depth, colour = data[24], data[25]
    if depth != 8 or colour not in (PNG_GRAY, PNG_RGB):
        return None
    array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None:
        return None  # let Pillow produce the precise error
    if colour == PNG_GRAY and array.ndim == 2:
        return _shrunk_array(array)
    if colour == PNG_RGB and array.ndim == 3 and array.shape[2] == 3:
        # Shrunk first: the luma below takes 12 bytes a pixel (1.2 GB for 25 MP at full size).
        bgr = _shrunk_array(array).astype(np.uint32)
        # Pillow's RGB -> L: ITU-R 601-2 luma in 16-bit fixed point, rounded.
        luma = (bgr[..., 2] * 19595 + bgr[..., 1] * 38470 + bgr[..., 0] * 7471 + 0x8000) >> 16
        return luma.astype(np.uint8)
    return None


def decode_image(data: bytes, budget: DecodeBudget | None = None) -> np.ndarray:
    """Decode an image file to grayscale in [0, 255] (uint8, or float64 for other depths), within
    ``budget``: its size is checked from the header, before anything is decompressed."""
    budget = budget or DecodeBudget()
    if not data:
        raise BadRequest("empty image")
    png = len(data) >= 33 and data.startswith(PNG_SIGNATURE) and data[12:16] == b"IHDR"
    if png:
        width, height = struct.unpack(">II", data[16:24])
        budget.admit(width, height)
        _check_png_data(data, width, height, budget)
        fast = _fast_png(data)
        if fast is not None:
            budget.check_time()
            return fast
    try:
        image = Image.open(_TimedReader(data, budget), formats=SUPPORTED_FORMATS)
        if not png:  # a PNG was admitted from its header above
            budget.admit(*image.size)
        if getattr(image, "n_frames", 1) > 1:
            image.seek(0)  # first frame of an animation
        image.draft(None, (MAX_WORKING_SIDE, MAX_WORKING_SIDE))  # a JPEG decodes at 1/2..1/8 scale
        image.load()
        budget.check_time()
        gray = _to_gray(_shrunk_image(image))
    except (PayloadTooLarge, BadRequest, DecodeElsewhere):
        raise
    except UnidentifiedImageError as error:
        raise BadRequest(f"cannot decode image: not one of ({', '.join(SUPPORTED_FORMATS)})") from error
    except (OSError, ValueError, SyntaxError, EOFError, struct.error, MemoryError) as error:
        raise BadRequest(f"cannot decode image: {error}") from error
    budget.check_time()
    return gray


def _shrink_factor(width: int, height: int) -> int:
    return -(-max(width, height) // MAX_WORKING_SIDE)  # ceiling: 1 for images that fit


def _shrunk_image(image: Image.Image) -> Image.Image:
    factor = _shrink_factor(*image.size)
    if factor == 1 or image.mode not in ("L", "LA", "RGB", "RGBA", "P", "PA", "CMYK"):
        return image
    if image.mode in ("P", "PA"):  # box averages need colours, not palette indices
        image = image.convert("RGBA" if "transparency" in image.info or image.mode == "PA" else "RGB")
    return image.reduce(factor)


def _shrunk_array(array: np.ndarray) -> np.ndarray:
    factor = _shrink_factor(array.shape[1], array.shape[0])
    if factor == 1:
        return array
    size = (-(-array.shape[1] // factor), -(-array.shape[0] // factor))
    return cv2.resize(array, size, interpolation=cv2.INTER_AREA)


def _to_gray(image: Image.Image) -> np.ndarray:
    if image.mode == "L":
        return np.asarray(image)  # the common case, kept in uint8: no conversion at all
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        values = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or values.max() > 255 else 255.0
        return _finite(np.clip(values / peak * 255.0, 0, 255))
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float64)
        gray = rgba[..., :3] @ np.array([0.299, 0.587, 0.114])
        alpha = rgba[..., 3] / 255.0
        # Transparent areas become the background: light behind dark ink, dark behind light ink.
        opaque = alpha > 0.5
        ink_is_dark = opaque.any() and float(gray[opaque].mean()) < 128
        background = 255.0 if ink_is_dark else 0.0
        return gray * alpha + background * (1 - alpha)
    return np.asarray(
        ImageOps.grayscale(image.convert("RGB") if image.mode == "CMYK" else image), dtype=np.float64
    )


def _finite(values: np.ndarray) -> np.ndarray:
    if not np.isfinite(values).all():
        raise Unprocessable("image has NaN or infinite pixel values")
    return values


def _dark_background(gray: np.ndarray) -> bool:
    """Most of the border is dark (the median border pixel is below mid-grey)."""
    height, width = gray.shape
    dark = np.count_nonzero(gray[[0, -1]] < 128) + np.count_nonzero(gray[1:-1, [0, -1]] < 128)
    return int(dark) > height + width - 2  # more than half of the 2 * (h + w - 2) border pixels


def to_mnist(gray: np.ndarray) -> np.ndarray:
    """Find the digit in a grayscale image of any size and apply the MNIST recipe; uint8 [28, 28]."""
    if gray.shape == (SIDE, SIDE) and _dark_background(gray):  # already MNIST: unchanged
        return gray if gray.dtype == np.uint8 else np.clip(np.rint(gray), 0, 255).astype(np.uint8)
    return find_digit(gray)


def image_to_pixels(data: bytes, budget: DecodeBudget | None = None) -> np.ndarray:
    """Image file bytes -> uint8 [28, 28] in MNIST convention."""
    return to_mnist(decode_image(data, budget))
