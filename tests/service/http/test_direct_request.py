"""The request view the direct HTTP path gives the inference handler (service.http.direct)."""

from __future__ import annotations

import pytest

from service.http.direct import _DirectRequest


def test_headers_are_read_from_the_raw_list_first_one_winning() -> None:
    raw = [(b"content-type", b"application/json"), (b"x-api-key", b"first"), (b"x-api-key", b"second")]
    request = _DirectRequest(b"include=pixels&include=x", raw)
    assert request.headers.get("x-api-key") == "first"
    assert request.headers["content-type"] == "application/json"
    assert request.headers.get("authorization", "") == "" and "authorization" not in request.headers
    with pytest.raises(KeyError):
        request.headers["authorization"]
    assert list(request.headers) == ["content-type", "x-api-key"] and len(request.headers) == 2
    assert request.query_string == b"include=pixels&include=x"
