"""Reading a fine-tune asset upload (multipart `file_name` + `file`) as it streams in.

The `file` part goes straight to a file on disk and is refused the moment it passes the size
limit, so an oversized upload costs neither memory nor a full read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO

from fastapi import Request
from python_multipart.multipart import MultipartParser, parse_options_header

from server import errors

if TYPE_CHECKING:  # python-multipart declares its callbacks' type for type checkers only
    from python_multipart.multipart import MultipartCallbacks

FILE_FIELD = "file"
MAX_TEXT_FIELD = 4096  # file_name and any other small field
FORM_OVERHEAD = 1024 * 1024  # boundaries, part headers and text fields around the file


@dataclass
class _Part:
    name: str = ""
    header_name: bytes = b""
    header_value: bytes = b""
    disposition: bytes = b""
    text: bytearray = field(default_factory=bytearray)


class AssetForm:
    """Collects text fields and writes the `file` part to `sink`, within `limit` bytes."""

    def __init__(self, sink: BinaryIO, limit: int):
        self.sink = sink
        self.limit = limit
        self.fields: dict[str, str] = {}
        self.file_bytes = 0
        self.has_file = False
        self._part = _Part()

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self._begin,
            "on_header_field": lambda data, start, end: self._header(name=data[start:end]),
            "on_header_value": lambda data, start, end: self._header(value=data[start:end]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._data,
            "on_part_end": self._end,
        }

    def _begin(self) -> None:
        self._part = _Part()

    def _header(self, name: bytes = b"", value: bytes = b"") -> None:
        self._part.header_name += name
        self._part.header_value += value

    def _header_end(self) -> None:
        if self._part.header_name.lower() == b"content-disposition":
            self._part.disposition = self._part.header_value
        self._part.header_name = self._part.header_value = b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._part.disposition)
        self._part.name = options.get(b"name", b"").decode("utf-8", "replace")
        if self._part.name == FILE_FIELD:
            if self.has_file:
                raise errors.bad_input("send one file per request (one 'file' field)", param="file")
            self.has_file = True

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self._part.name == FILE_FIELD:
            self.file_bytes += end - start
            if self.file_bytes > self.limit:
                raise errors.finetune_file_too_large(self.limit)
            self.sink.write(data[start:end])
        else:
            self._part.text += data[start:end]
            if len(self._part.text) > MAX_TEXT_FIELD:
                raise errors.bad_input(f"form field '{self._part.name}' is longer than {MAX_TEXT_FIELD} bytes")

    def _end(self) -> None:
        if self._part.name != FILE_FIELD:
            self.fields[self._part.name] = self._part.text.decode("utf-8", "replace")


async def read_asset_form(request: Request, sink: BinaryIO, limit: int) -> AssetForm:
    """Parse the multipart body, writing `file` to `sink`; 413 as soon as it passes `limit`."""
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or b"boundary" not in options:
        raise errors.bad_input("the body must be multipart/form-data with the fields 'file_name' and 'file'")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit + FORM_OVERHEAD:
        raise errors.finetune_file_too_large(limit)
    form = AssetForm(sink, limit)
    parser = MultipartParser(options[b"boundary"], form.callbacks())
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except errors.WaiError:
        raise
    except Exception as exc:  # python-multipart's own errors for a malformed body
        raise errors.bad_input(f"the multipart body is malformed: {exc}") from exc
    sink.flush()
    return form
