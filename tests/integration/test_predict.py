"""POST /predict with every input form, against the real server process."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from service.inputs.images import image_to_pixels
from service.model.backends import load_backend
from service.model.repository import resolve
from training.data import MnistArrays

from .harness import DEFAULT_VERSION, ROOT, RunningServer
from .images import b64, encode, multipart, paper_photo, png


@pytest.fixture(scope="module")
def offline() -> object:
    model = resolve(ROOT / "models", "mnist", "latest", "onnx")
    return load_backend(model, "onnx", "cpu")


@pytest.fixture(scope="module")
def digits(mnist: MnistArrays) -> tuple[np.ndarray, np.ndarray]:
    return mnist.test_images[:64].numpy(), mnist.test_labels[:64].numpy()


def _probabilities(reply_json: dict) -> np.ndarray:
    return np.array([p["probabilities"] for p in reply_json["predictions"]], dtype=np.float32)


def test_png_uploads_answer_like_the_offline_backend(server: RunningServer, digits, offline) -> None:
    images, labels = digits
    body, content_type = multipart([(f"{i}.png", png(img), "image/png") for i, img in enumerate(images[:16])])
    reply = server.request("POST", "/predict", body, {"content-type": content_type})
    assert reply.status == 200, reply.body
    payload = reply.json()
    assert len(payload["predictions"]) == 16
    expected = offline.predict(images[:16, None])
    np.testing.assert_allclose(_probabilities(payload), expected, atol=1e-6)
    assert [p["digit"] for p in payload["predictions"]] == expected.argmax(1).tolist()
    assert (expected.argmax(1) == labels[:16]).mean() >= 0.9
    first = payload["predictions"][0]
    assert first["confidence"] == pytest.approx(max(first["probabilities"]))
    model = {"name": "mnist", "version": DEFAULT_VERSION, "backend": "onnx", "device": "cpu"}
    assert payload["model"] == model


@pytest.mark.parametrize(
    "image_format,content_type",
    [
        ("PNG", "image/png"),
        ("BMP", "image/bmp"),
        ("GIF", "image/gif"),
        ("TIFF", "image/tiff"),
        ("WEBP", "image/webp"),
        ("JPEG", "image/jpeg"),
    ],
)
def test_raw_image_bodies_in_every_supported_format(
    server: RunningServer, digits, image_format, content_type
) -> None:
    images, labels = digits
    reply = server.request(
        "POST", "/predict", encode(images[0], image_format), {"content-type": content_type}
    )
    assert reply.status == 200, reply.body
    (prediction,) = reply.json()["predictions"]
    assert prediction["digit"] == labels[0]


def test_json_base64_and_pixel_arrays_agree(server: RunningServer, digits, offline) -> None:
    images, _ = digits
    expected = offline.predict(images[:4, None])
    by_base64 = server.post_json("/predict", {"images": [b64(png(img)) for img in images[:4]]})
    one_base64 = server.post_json("/predict", {"image": "data:image/png;base64," + b64(png(images[0]))})
    nested = server.post_json("/predict", {"pixels": images[:4].tolist()})
    flat = server.post_json("/predict", {"pixels": images[:4].reshape(4, 784).tolist()})
    single = server.post_json("/predict", {"pixels": images[0].tolist()})
    for reply in (by_base64, nested, flat):
        assert reply.status == 200, reply.body
        np.testing.assert_allclose(_probabilities(reply.json()), expected, atol=1e-6)
    for reply in (one_base64, single):
        assert reply.status == 200, reply.body
        np.testing.assert_allclose(_probabilities(reply.json()), expected[:1], atol=1e-6)


def test_concurrent_requests_are_batched_and_all_answered(server: RunningServer, digits, offline) -> None:
    images, _ = digits
    expected = offline.predict(images[:, None])

    def one(i: int) -> tuple[int, list[float]]:
        reply = server.post_json("/predict", {"pixels": images[i].tolist()})
        assert reply.status == 200, reply.body
        return i, reply.json()["predictions"][0]["probabilities"]

    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(one, list(range(64)) * 4))
    for i, probabilities in answers:
        np.testing.assert_allclose(probabilities, expected[i], atol=1e-6)  # each answer is its own request's
    buckets = server.scrape().buckets("mnist_batch_requests")
    multi_request_batches = buckets[float("inf")] - buckets[1]
    assert multi_request_batches > 0, "no batch ever combined two requests"


def test_one_bad_request_does_not_fail_the_ones_batched_with_it(server: RunningServer, digits) -> None:
    images, _ = digits
    good = {"pixels": images[1].tolist()}
    bad_bodies = [
        {"pixels": [[300] * 28] * 28},
        {"pixels": [1, 2, 3]},
        {"images": ["not base64!"]},
        {"image": b64(b"GIF89a-truncated")},
    ]

    def send(payload: dict) -> int:
        return server.post_json("/predict", payload).status

    with ThreadPoolExecutor(24) as pool:
        statuses = list(pool.map(send, [good, *bad_bodies] * 12))
    good_statuses = statuses[0::5]
    assert good_statuses == [200] * 12
    assert all(400 <= s < 500 for i, s in enumerate(statuses) if i % 5)


def test_answers_equal_offline_backend_over_many_test_digits(
    server: RunningServer, mnist: MnistArrays, offline
) -> None:
    images = mnist.test_images[:1000].numpy()
    labels = mnist.test_labels[:1000].numpy()
    reply = server.post_json("/predict", {"pixels": images[:256].tolist()})
    assert reply.status == 200
    served = _probabilities(reply.json())
    np.testing.assert_allclose(served, offline.predict(images[:256, None]), atol=1e-6)
    assert (served.argmax(1) == labels[:256]).mean() >= 0.99


def test_include_pixels_returns_the_28x28_image_the_model_saw(server: RunningServer, digits) -> None:
    images, labels = digits
    scan = paper_photo(images[0])
    reply = server.request("POST", "/predict?include=pixels", png(scan), {"content-type": "image/png"})
    assert reply.status == 200, reply.body
    (prediction,) = reply.json()["predictions"]
    assert prediction["digit"] == labels[0]
    assert np.array_equal(np.array(prediction["pixels"]), image_to_pixels(png(scan)))
    plain = server.post_json("/predict", {"pixels": images[0].tolist()}).json()["predictions"][0]
    assert "pixels" not in plain


def test_unknown_include_is_a_clear_400(server: RunningServer, digits) -> None:
    images, _ = digits
    reply = server.post_json("/predict?include=pixels,heatmap", {"pixels": images[0].tolist()})
    assert reply.status == 400
    assert "heatmap" in reply.json()["error"] and "pixels" in reply.json()["error"]
