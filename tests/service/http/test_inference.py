"""The inference handler's pure parts: which paths are inference routes, and ``?include=``."""

from __future__ import annotations

import pytest

from service.errors import BadRequest
from service.http import inference
from service.http.inference import PREDICT, V2_INFER, V2_VERSION_INFER, Route, _include_pixels, match


@pytest.mark.parametrize(
    ("path", "route"),
    [
        ("/predict", Route(PREDICT)),
        ("/v2/models/mnist/infer", Route(V2_INFER, "mnist")),
        ("/v2/models/mnist/versions/3/infer", Route(V2_VERSION_INFER, "mnist", "3")),
        ("/v2/models//infer", None),
        ("/v2/models/mnist/versions//infer", None),
        ("/v2/models/mnist", None),
        ("/v2/models/mnist/ready", None),
        ("/predict/", None),
        ("/", None),
    ],
)
def test_inference_routes_are_matched_by_path(path: str, route: Route | None) -> None:
    assert match(path) == route
    assert match(path) == route  # the second time from the cache


def test_client_paths_are_cached_within_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    matched = inference.BoundedCache[str, Route](max_entries=4, max_key_bytes=32)
    monkeypatch.setattr(inference, "_matched", matched)
    long = "/v2/models/" + "m" * 40 + "/infer"
    assert match(long) == Route(V2_INFER, "m" * 40) and len(matched) == 0  # matched, not kept
    for number in range(10):
        assert match(f"/scan/{number}") is None
    assert len(matched) <= 4


@pytest.mark.parametrize(
    ("query", "included"),
    [(b"", False), (b"include=pixels", True), (b"include=&other=1", False), (b"include=pixels,", True)],
)
def test_include_pixels_is_read_from_the_query(query: bytes, included: bool) -> None:
    assert _include_pixels(query) is included


def test_an_unknown_include_is_a_400() -> None:
    with pytest.raises(BadRequest, match="unknown include"):
        _include_pixels(b"include=pixels&include=logits")
