"""A multipart/form-data body -> the files it carries, as bytes.

Starlette's form parser spools every file into a temporary file object and wraps it in an
``UploadFile``: ~50 µs for a one-image upload, three times the cost of decoding the PNG. The body here
is already in memory and bounded (``--max-request-bytes``), so the parts' bytes are collected directly
from python-multipart's parser (the one Starlette uses): ~22 µs. Which parts are files, the limits on
files and fields, and the refusals follow Starlette's rules.
"""

from __future__ import annotations

from python_multipart.exceptions import FormParserError, MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from service.errors import BadRequest, PayloadTooLarge

MAX_FIELD_BYTES = 1024 * 1024  # a non-file part (Starlette's max_part_size)


class _Part:
    __slots__ = ("data", "headers")

    def __init__(self) -> None:
        self.headers: dict[bytes, bytes] = {}
        self.data = bytearray()


def uploaded_files(body: bytes, content_type: str, max_files: int, max_fields: int) -> list[bytes]:
    """The contents of the parts that carry a filename, in order. Too many files or fields, or a field
    over 1 MiB: 413. No boundary, a part without a name, or a malformed body: 400."""
    _, parameters = parse_options_header(content_type)
    boundary = parameters.get(b"boundary")
    if not boundary:
        raise BadRequest("malformed multipart body: no boundary in its Content-Type")
    parts: list[_Part] = []
    field, value = bytearray(), bytearray()

    def on_header_end() -> None:
        parts[-1].headers[bytes(field).lower()] = bytes(value)
        field.clear()
        value.clear()

    try:
        parser = MultipartParser(
            boundary,
            callbacks={
                "on_part_begin": lambda: parts.append(_Part()),
                "on_part_data": lambda data, start, end: parts[-1].data.extend(data[start:end]),
                "on_header_field": lambda data, start, end: field.extend(data[start:end]),
                "on_header_value": lambda data, start, end: value.extend(data[start:end]),
                "on_header_end": on_header_end,
            },
        )
    except FormParserError as error:  # e.g. a boundary over 256 bytes
        raise BadRequest(f"malformed multipart body: {error}") from error
    try:
        parser.write(body)
        parser.finalize()
    except MultipartParseError as error:
        raise BadRequest(f"malformed multipart body: {error}") from error
    files: list[bytes] = []
    fields = 0
    for part in parts:
        _, options = parse_options_header(part.headers.get(b"content-disposition"))
        if b"name" not in options:
            raise BadRequest('malformed multipart body: a part\'s Content-Disposition has no "name"')
        if b"filename" in options:
            files.append(bytes(part.data))
            if len(files) > max_files:
                raise PayloadTooLarge(f"too many parts in the multipart body: more than {max_files} files")
            continue
        fields += 1
        if fields > max_fields:
            raise PayloadTooLarge(f"too many parts in the multipart body: more than {max_fields} fields")
        if len(part.data) > MAX_FIELD_BYTES:
            raise PayloadTooLarge(f"a multipart field is larger than {MAX_FIELD_BYTES // 1024} KiB")
    return files
