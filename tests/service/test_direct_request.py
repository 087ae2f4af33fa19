"""The request view the direct HTTP path gives the job makers (service.fast_http)."""

from __future__ import annotations

import pytest

from service.fast_http import _DirectRequest


def test_headers_are_read_from_the_raw_list_first_one_winning() -> None:
    raw = [(b"content-type", b"application/json"), (b"x-api-key", b"first"), (b"x-api-key", b"second")]
    request = _DirectRequest(b"include=pixels&include=x", raw)
    assert request.headers.get("x-api-key") == "first"
    assert request.headers["content-type"] == "application/json"
    assert request.headers.get("authorization", "") == "" and "authorization" not in request.headers
    with pytest.raises(KeyError):
        request.headers["authorization"]
    assert list(request.headers) == ["content-type", "x-api-key"] and len(request.headers) == 2
    assert request.scope["query_string"] == b"include=pixels&include=x"
    assert request.query_params.getlist("include") == ["pixels", "x"]
