"""uploaded_files must find exactly the files Starlette's form parser finds, and refuse what it refuses."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.datastructures import UploadFile
from starlette.requests import Request

from service.errors import BadRequest, PayloadTooLarge, ServiceError
from service.http.multipart import uploaded_files

BOUNDARY = "x7Kq-boundary"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


def _body(parts: list[tuple[str, str | None, bytes]], boundary: str = BOUNDARY) -> bytes:
    """(field name, filename or None, content) per part."""
    chunks = []
    for name, filename, content in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        head = f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
        if filename:
            head += "Content-Type: application/octet-stream\r\n"
        chunks.append(head.encode() + b"\r\n" + content + b"\r\n")
    return b"".join(chunks) + f"--{boundary}--\r\n".encode()


def _starlette_files(body: bytes, content_type: str) -> list[bytes]:
    async def parse() -> list[bytes]:
        async def receive() -> dict[str, object]:
            return {"type": "http.request", "body": body, "more_body": False}

        scope = {"type": "http", "method": "POST", "headers": [(b"content-type", content_type.encode())]}
        async with Request(scope, receive).form() as form:
            return [await v.read() for _, v in form.multi_items() if isinstance(v, UploadFile)]

    return asyncio.run(parse())


PART = st.tuples(
    st.sampled_from(["file", "files", "note", "x"]),
    st.one_of(st.none(), st.sampled_from(["a.png", "b.bin", "photo 1.jpg"])),
    st.binary(max_size=300).filter(lambda content: BOUNDARY.encode() not in content),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(PART, max_size=6))
def test_the_same_files_as_starlettes_form_parser(parts: list[tuple[str, str | None, bytes]]) -> None:
    body = _body(parts)
    assert uploaded_files(body, CONTENT_TYPE, max_files=10, max_fields=10) == _starlette_files(
        body, CONTENT_TYPE
    )
    assert uploaded_files(body, CONTENT_TYPE, 10, 10) == [content for _, name, content in parts if name]


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bodies_are_files_or_a_4xx(body: bytes) -> None:
    try:
        files = uploaded_files(b"--" + BOUNDARY.encode() + b"\r\n" + body, CONTENT_TYPE, 10, 10)
    except ServiceError as error:
        assert 400 <= error.status < 500
    else:
        assert all(isinstance(content, bytes) for content in files)


def test_limits_on_files_and_fields_are_413() -> None:
    three_files = _body([("f", f"{i}.png", b"png") for i in range(3)])
    assert len(uploaded_files(three_files, CONTENT_TYPE, max_files=3, max_fields=0)) == 3
    with pytest.raises(PayloadTooLarge, match="more than 2 files"):
        uploaded_files(three_files, CONTENT_TYPE, max_files=2, max_fields=0)
    with pytest.raises(PayloadTooLarge, match="more than 1 fields"):
        uploaded_files(_body([("a", None, b"1"), ("b", None, b"2")]), CONTENT_TYPE, max_files=2, max_fields=1)
    with pytest.raises(PayloadTooLarge, match="larger than 1024 KiB"):
        uploaded_files(_body([("a", None, b"x" * (1024 * 1024 + 1))]), CONTENT_TYPE, 2, 2)


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (_body([("f", "a.png", b"png")]), "multipart/form-data", "no boundary"),
        (_body([("f", "a.png", b"png")]).replace(b' name="f";', b""), CONTENT_TYPE, 'no "name"'),
        (b"--" + BOUNDARY.encode() + b"\r\nno colon here\r\n\r\nx", CONTENT_TYPE, "malformed"),
    ],
)
def test_malformed_bodies_are_400(body: bytes, content_type: str, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        uploaded_files(body, content_type, 10, 10)
