from __future__ import annotations

import io
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image, ImageDraw

from service.errors import BadRequest, PayloadTooLarge, Unprocessable
from service.inputs.images import DecodeBudget, DecodeElsewhere, decode_image, image_to_pixels, to_mnist
from service.inputs.pixel_arrays import array_to_pixels, tensor_to_pixels
from service.model.backends import load_backend
from service.model.repository import resolve
from training.data import MnistArrays

from ...conftest import ROOT
from ...integration.images import encode, paper_photo, png


def _save(image: Image.Image, image_format: str = "PNG", **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def test_mnist_samples_pass_through_unchanged(mnist: MnistArrays) -> None:
    for pixels in mnist.test_images[:50].numpy():
        np.testing.assert_array_equal(image_to_pixels(png(pixels)), pixels)


def test_photos_of_dark_digits_on_paper_classify_like_mnist(mnist: MnistArrays) -> None:
    backend = load_backend(resolve(ROOT / "models", "mnist", "latest", "onnx"), "onnx", "cpu")
    images, labels = mnist.test_images[:300].numpy(), mnist.test_labels[:300].numpy()
    photos = np.stack(
        [image_to_pixels(encode(paper_photo(img, seed=i), "JPEG")) for i, img in enumerate(images)]
    )
    original_accuracy = (backend.predict(images[:, None]).argmax(1) == labels).mean()
    photo_accuracy = (backend.predict(photos[:, None]).argmax(1) == labels).mean()
    assert photo_accuracy >= original_accuracy - 0.02 and photo_accuracy >= 0.97


def test_recipe_fits_the_digit_in_20_px_and_centres_its_mass() -> None:
    tall = np.full((400, 300), 250.0)
    tall[50:350, 120:160] = 10  # a dark vertical bar, like a "1"
    pixels = to_mnist(tall)
    ink_rows = np.flatnonzero(pixels.max(1) > 40)
    ink_cols = np.flatnonzero(pixels.max(0) > 40)
    assert ink_rows[-1] - ink_rows[0] + 1 in (19, 20, 21)
    assert ink_cols[-1] - ink_cols[0] + 1 <= 5  # aspect ratio kept
    ys, xs = np.indices(pixels.shape)
    mass = pixels.astype(float)
    assert abs((ys * mass).sum() / mass.sum() - 14) < 1 and abs((xs * mass).sum() / mass.sum() - 14) < 1
    assert pixels[0].max() == 0 and pixels[:, 0].max() == 0  # background is black after inversion


def test_transparent_canvas_drawings_work_both_ways() -> None:
    stroke = np.zeros((100, 100, 4), np.uint8)
    stroke[20:80, 45:55] = (0, 0, 0, 255)  # black ink on a transparent canvas
    dark = image_to_pixels(_save(Image.fromarray(stroke)))
    stroke[20:80, 45:55] = (255, 255, 255, 255)  # white ink on a transparent canvas
    light = image_to_pixels(_save(Image.fromarray(stroke)))
    assert dark.max() > 200 and light.max() > 200
    np.testing.assert_array_equal(dark > 100, light > 100)


def test_sixteen_bit_and_palette_images_are_understood() -> None:
    wide = np.zeros((56, 56), np.uint16)
    wide[10:46, 24:32] = 60000
    sixteen_bit = Image.fromarray(wide)
    assert sixteen_bit.mode.startswith("I;16")
    sixteen = image_to_pixels(_save(sixteen_bit))
    palette = image_to_pixels(_save(Image.fromarray((wide // 256).astype(np.uint8)).convert("P")))
    assert sixteen.max() > 200 and palette.max() > 200


def test_undecodable_and_hostile_images() -> None:
    with pytest.raises(BadRequest):
        decode_image(b"")
    with pytest.raises(BadRequest):
        decode_image(b"definitely not an image")
    with pytest.raises(BadRequest):
        decode_image(png(np.zeros((28, 28), np.uint8))[:40])  # truncated
    bomb = _save(Image.new("L", (6000, 6000)))
    with pytest.raises(PayloadTooLarge):
        decode_image(bomb, DecodeBudget(max_pixels=1_000_000))
    with pytest.raises(Unprocessable, match="no digit"):
        image_to_pixels(png(np.full((50, 50), 128, np.uint8)))


@pytest.mark.parametrize("shape", [(28, 28), (784,), (3, 28, 28), (3, 784), (3, 1, 28, 28)])
def test_pixel_arrays_of_every_accepted_shape(shape: tuple[int, ...]) -> None:
    values = np.arange(int(np.prod(shape))) % 256
    pixels = array_to_pixels(values.reshape(shape).tolist(), max_images=8)
    assert pixels.dtype == np.uint8 and pixels.shape[1:] == (1, 28, 28)
    np.testing.assert_array_equal(pixels.reshape(-1), values)


def test_integer_floats_give_the_same_pixels_as_integers() -> None:
    # JSON integers take a faster path than JSON floats; both must give the same answer.
    values = (np.arange(784) % 256).reshape(28, 28)
    as_ints = array_to_pixels(values.tolist(), max_images=8)
    as_floats = array_to_pixels(values.astype(float).tolist(), max_images=8)
    np.testing.assert_array_equal(as_ints, as_floats)


@pytest.mark.parametrize(
    ("values", "error", "fragment"),
    [
        ([[1, 2], [3, 4]], Unprocessable, "shape"),
        ([[0.5] * 28] * 28, Unprocessable, "whole numbers"),
        ([[-1] * 28] * 28, Unprocessable, "0..255"),
        ([[float("nan")] * 28] * 28, Unprocessable, "NaN"),
        ([[1, 2], [3]], Unprocessable, "rectangular"),
        ("abc", Unprocessable, "not strings"),
        ([[True] * 28] * 28, Unprocessable, "not true or false"),  # numpy would read them as 1 and 0
        ([[0] * 784] * 9, PayloadTooLarge, "limit is 8"),
        ([], Unprocessable, "shape"),
        ([[256] * 28] * 28, Unprocessable, "0..255"),
        ([[2**70] * 28] * 28, Unprocessable, "0..255"),
        ([["7"] * 28] * 28, Unprocessable, "not strings"),
        ([[None] * 28] * 28, Unprocessable, "NaN"),
    ],
)
def test_bad_pixel_arrays(values: object, error: type[Exception], fragment: str) -> None:
    with pytest.raises(error, match=fragment):
        array_to_pixels(values, max_images=8)


def test_fp32_tensors_are_rounded_but_uint8_must_be_whole() -> None:
    floats = np.full((1, 784), 254.6)
    assert tensor_to_pixels(floats, 4, whole_numbers=False).max() == 255
    with pytest.raises(Unprocessable):
        tensor_to_pixels(floats, 4, whole_numbers=True)


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_fast_png_path_is_pixel_identical_to_pillow(mode: str) -> None:
    from service.inputs.images import _fast_png

    rng = np.random.default_rng(1)
    shape = (37, 53) if mode == "L" else (37, 53, 3)
    image = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8))
    data = _save(image)
    fast = _fast_png(data)
    assert fast is not None and fast.dtype == np.uint8
    np.testing.assert_array_equal(fast, np.asarray(image.convert("L")))
    np.testing.assert_array_equal(decode_image(data), fast)
    with pytest.raises(PayloadTooLarge):
        decode_image(data, DecodeBudget(max_pixels=100))
    assert _fast_png(_save(image.convert("RGBA"))) is None  # alpha: Pillow's path


def _png(width: int, height: int, image_data: bytes) -> bytes:
    """A grayscale PNG whose IDAT holds ``image_data`` (deflated) whatever its header says."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(image_data, 9))
        + chunk(b"IEND", b"")
    )


def test_a_png_whose_data_inflates_past_its_header_is_refused_without_inflating_it() -> None:
    # 256 MiB of zeros behind a 28x28 header: 260 KB on the wire. Decoders inflate all of it.
    bomb = _png(28, 28, bytes(256 * 2**20))
    started = time.perf_counter()
    with pytest.raises(PayloadTooLarge, match="inflates to more than its 28x28 header needs"):
        decode_image(bomb)
    assert time.perf_counter() - started < 0.5
    exact = _png(28, 28, b"".join(b"\x00" + bytes([row]) * 28 for row in range(28)))  # filter byte + row
    np.testing.assert_array_equal(
        decode_image(exact), np.repeat(np.arange(28, dtype=np.uint8), 28).reshape(28, 28)
    )


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA"])  # L and RGB take the OpenCV path, RGBA Pillow's
def test_a_large_image_is_shrunk_right_after_decoding_and_keeps_its_digit(mode: str) -> None:
    # The recipe's float steps on a 5000x5000 RGBA image took 1.7 GB; shrunk to 1024 they take little.
    image = Image.new(mode, (4100, 3000), "white")
    ImageDraw.Draw(image).rectangle((1800, 500, 2200, 2500), fill="black")
    encoded = io.BytesIO()
    image.save(encoded, format="PNG")
    decoded = decode_image(encoded.getvalue())
    assert max(decoded.shape) <= 1024 and decoded.shape[0] < decoded.shape[1]
    full_size = to_mnist(np.asarray(image.convert("L")))  # the recipe without the shrinking
    shrunk = image_to_pixels(encoded.getvalue())
    assert np.abs(shrunk.astype(int) - full_size.astype(int)).mean() < 8


@pytest.mark.parametrize("image_format", ["PNG", "JPEG", "GIF"])  # the OpenCV path, Pillow's, a palette
def test_images_over_the_callers_pixel_cap_are_left_for_another_thread_before_decoding(
    image_format: str,
) -> None:
    small = _save(Image.new("RGB" if image_format == "JPEG" else "L", (400, 400), "white"), image_format)
    budget = DecodeBudget(pixels_here=512 * 512)
    assert image_to_pixels(_save(_digit_on_paper((400, 400)), image_format), budget).shape == (28, 28)
    with pytest.raises(DecodeElsewhere):  # the request's second 400x400 image: over the cap in all
        decode_image(small, budget)
    with pytest.raises(DecodeElsewhere):
        decode_image(_save(Image.new("L", (600, 600)), image_format), DecodeBudget(pixels_here=512 * 512))
    assert image_to_pixels(_save(_digit_on_paper((600, 600)), image_format), budget.elsewhere()).shape == (
        28,
        28,
    )


def _digit_on_paper(size: tuple[int, int]) -> Image.Image:
    image = Image.new("L", size, "white")
    width, height = size
    ImageDraw.Draw(image).rectangle((width * 4 // 10, height // 5, width * 6 // 10, height * 4 // 5), fill=0)
    return image


@pytest.mark.parametrize("mode", ["L", "RGBA", "JPEG"])  # the OpenCV path, Pillow's PNG and JPEG
def test_decoding_stops_with_413_once_its_time_budget_is_spent(mode: str) -> None:
    image = _digit_on_paper((2000, 2000))
    data = _save(image.convert("RGB"), "JPEG") if mode == "JPEG" else _save(image.convert(mode))
    spent = DecodeBudget(seconds=1.0)
    spent.deadline = time.monotonic() - 1  # spent before the first read: nothing is decoded
    with pytest.raises(PayloadTooLarge, match="1 s decoding budget"):
        decode_image(data, spent)
    assert decode_image(data, DecodeBudget(seconds=60)).shape[0] <= 1024


def test_a_png_bomb_is_stopped_by_the_time_budget_while_it_is_checked() -> None:
    # 100 MB of inflating for the check alone: the budget is looked at every 64 KiB of it.
    data = _save(Image.new("RGBA", (5000, 5000), "white"))
    started = time.perf_counter()
    with pytest.raises(PayloadTooLarge, match="decoding budget"):
        decode_image(data, DecodeBudget(seconds=0.01))
    assert time.perf_counter() - started < 0.2
