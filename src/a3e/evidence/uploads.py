"""Receiving a multipart upload as it streams in.

The body is never held in memory: python-multipart's streaming parser is fed from
`request.stream()`, each file part goes to a temporary file while its SHA-256 and size are
computed, and reading stops the moment the files' bytes pass the limit (413), a text field passes
its own (413) or there are too many parts (400) — the rest of the body is never read. Temporary
files are deleted on any failure, a client that disconnects included, and when the caller's
`async with` block ends:

    async with receive_upload(request, max_files=1) as upload:
        received = upload.files[0]
        await anyio.to_thread.run_sync(store.put_file, received.sha256, received.path, received.content_type)
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import tempfile
import unicodedata
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from starlette.requests import ClientDisconnect

from a3e.core.errors import AppError, RequestTooLarge

try:
    from python_multipart.exceptions import FormParserError
    from python_multipart.multipart import MultipartParser, parse_options_header
except ImportError:  # python-multipart before 0.0.13 named its module `multipart`
    from multipart.exceptions import FormParserError  # type: ignore[no-redef]
    from multipart.multipart import MultipartParser, parse_options_header  # type: ignore[no-redef]

HEAD_BYTES = 8 * 1024
DEFAULT_MAX_FILES = 1
DEFAULT_MAX_FIELDS = 16
DEFAULT_MAX_FIELD_BYTES = 64 * 1024
MAX_PART_HEADER_BYTES = 8 * 1024
# File data is handed to a worker thread (hashing and writing) in batches of about this size.
_FLUSH_BYTES = 1024 * 1024
TMP_DIR_NAME = "uploads-tmp"
_MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}")
MAX_FILENAME_BYTES = 255


@dataclass(frozen=True)
class ReceivedFile:
    field_name: str
    filename: str  # sanitized basename, never a path
    content_type: str  # as the client declared it (the media type only); not to be trusted
    path: Path  # the temporary file; deleted when the `async with` block ends
    size: int
    sha256: str
    head: bytes  # the first bytes (up to 8 KiB), for sniffing the real type


@dataclass
class ReceivedUpload:
    files: list[ReceivedFile] = field(default_factory=list)
    fields: dict[str, str] = field(default_factory=dict)


class UnsupportedMediaType(AppError):
    status_code = 415
    code = "unsupported_media_type"


class MalformedUpload(AppError):
    status_code = 400
    code = "malformed_multipart"


class TooManyParts(AppError):
    status_code = 400
    code = "too_many_parts"


class ClientDisconnected(AppError):
    # No one reads this answer; it keeps a client that went away out of the error log.
    status_code = 400
    code = "client_disconnected"


def sanitize_filename(raw: str) -> str:
    """A basename safe to show and to use in Content-Disposition: no directories, no control or
    bidi-override characters, no leading dots, at most 255 bytes of UTF-8 (keeping the extension)."""
    name = unicodedata.normalize("NFC", raw).replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if not unicodedata.category(ch).startswith("C"))
    name = name.strip().lstrip(".").rstrip(". ")
    if not name:
        return "upload"
    if len(name.encode()) > MAX_FILENAME_BYTES:
        stem, dot, extension = name.rpartition(".")
        if not dot or len(extension.encode()) > 16:
            stem, extension = name, ""
        budget = MAX_FILENAME_BYTES - len(extension.encode()) - (1 if extension else 0)
        stem = stem.encode()[:budget].decode(errors="ignore")
        name = f"{stem}.{extension}" if extension else stem
    return name


def _media_type(raw: bytes | None) -> str:
    if not raw:
        return "application/octet-stream"
    value, _ = parse_options_header(raw.decode("latin-1"))
    text = value.decode("latin-1").strip().lower()
    return text if _MEDIA_TYPE.fullmatch(text) else "application/octet-stream"


@dataclass
class _FileInProgress:
    field_name: str
    filename: str
    content_type: str
    path: Path | None = None
    handle: Any = None
    digest: Any = field(default_factory=hashlib.sha256)
    size: int = 0
    head: bytearray = field(default_factory=bytearray)
    pending: bytearray = field(default_factory=bytearray)
    finished: bool = False
    nameless: bool = False  # the client sent filename=""

    def open(self, tmp_dir: Path) -> None:
        # Created at once (a quick call), so that a cancelled upload never leaves a file created later.
        fd, name = tempfile.mkstemp(dir=tmp_dir, prefix="upload-", suffix=".part")
        self.path = Path(name)
        self.handle = os.fdopen(fd, "wb")

    @property
    def written(self) -> bool:
        return self.handle is not None and self.handle.closed

    def flush(self) -> None:
        """In a worker thread: hash and write what has arrived since the last flush."""
        data = bytes(self.pending)
        self.pending.clear()
        self.digest.update(data)
        self.handle.write(data)
        if self.finished:
            self.handle.close()

    def close_and_delete(self) -> None:
        if self.handle is not None and not self.handle.closed:
            self.handle.close()
        if self.path is not None:
            self.path.unlink(missing_ok=True)


class _Receiver:
    """python-multipart callbacks; they only collect (no I/O): the caller does the writing."""

    def __init__(
        self, *, max_bytes: int, max_files: int, max_fields: int, max_field_bytes: int, charset: str, tmp_dir: Path
    ) -> None:
        self.tmp_dir = tmp_dir
        self.max_bytes = max_bytes
        self.max_files = max_files
        self.max_fields = max_fields
        self.max_field_bytes = max_field_bytes
        self.charset = charset
        self.files: list[_FileInProgress] = []
        self.fields: dict[str, str] = {}
        self.file_bytes = 0
        self.field_count = 0
        self.ended = False
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._header_bytes = 0
        self._headers: dict[bytes, bytes] = {}
        self._file: _FileInProgress | None = None
        self._field_name: str | None = None
        self._text = bytearray()

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_end": self.on_end,
        }

    def on_part_begin(self) -> None:
        self._headers = {}
        self._header_bytes = 0
        self._file = None
        self._field_name = None
        self._text = bytearray()

    def _count_header(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > MAX_PART_HEADER_BYTES:
            raise MalformedUpload(f"A part's headers are longer than {MAX_PART_HEADER_BYTES} bytes")

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[bytes(self._header_name).lower()] = bytes(self._header_value)
        self._header_name.clear()
        self._header_value.clear()

    def on_headers_finished(self) -> None:
        disposition, options = parse_options_header(self._headers.get(b"content-disposition", b"").decode("latin-1"))
        if disposition != b"form-data" or b"name" not in options:
            raise MalformedUpload('Every part needs a "Content-Disposition: form-data; name=…" header')
        name = self._decode(options[b"name"])
        if b"filename" in options:
            if len(self.files) >= self.max_files:
                raise TooManyParts(
                    f"Too many files: at most {self.max_files} in one upload",
                    details={"max_files": self.max_files},
                )
            raw_filename = self._decode(options[b"filename"])
            self._file = _FileInProgress(
                field_name=name,
                filename=sanitize_filename(raw_filename),
                content_type=_media_type(self._headers.get(b"content-type")),
                nameless=not raw_filename.strip(),
            )
            self.files.append(self._file)
            self._file.open(self.tmp_dir)
        else:
            self.field_count += 1
            if self.field_count > self.max_fields:
                raise TooManyParts(
                    f"Too many form fields: at most {self.max_fields} in one upload",
                    details={"max_fields": self.max_fields},
                )
            self._field_name = name

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        size = end - start
        if self._file is not None:
            self.file_bytes += size
            if self.file_bytes > self.max_bytes:  # checked before a byte past the limit is kept
                raise RequestTooLarge(
                    f"The upload is larger than the limit of {_human(self.max_bytes)}",
                    details={"limit_bytes": self.max_bytes},
                )
            chunk = data[start:end]
            self._file.size += size
            if len(self._file.head) < HEAD_BYTES:
                self._file.head += chunk[: HEAD_BYTES - len(self._file.head)]
            self._file.pending += chunk
        else:
            if len(self._text) + size > self.max_field_bytes:
                raise RequestTooLarge(
                    f"The form field {self._field_name!r} is longer than {_human(self.max_field_bytes)}",
                    details={"field": self._field_name, "limit_bytes": self.max_field_bytes},
                )
            self._text += data[start:end]

    def on_part_end(self) -> None:
        if self._file is not None:
            self._file.finished = True
            return
        assert self._field_name is not None
        try:
            value = self._text.decode(self.charset)
        except UnicodeDecodeError:
            # Raised mid-body, so an AppError (which closes the connection) in the shape of a validation error.
            raise AppError(
                f"Invalid request: {self._field_name}: is not valid {self.charset} text",
                code="validation_error",
                status_code=422,
                details=[{"location": ["body", self._field_name], "message": "is not valid text", "type": "string_unicode"}],
            ) from None
        self.fields[self._field_name] = value

    def on_end(self) -> None:
        self.ended = True

    def _decode(self, raw: bytes) -> str:
        # Header parameters arrive as latin-1 code points of the client's (UTF-8) bytes.
        return raw.decode(self.charset, errors="replace")


def _human(size: int) -> str:
    if size >= 1024 * 1024 and size % (1024 * 1024) == 0:
        return f"{size // (1024 * 1024)} MB"
    if size >= 1024 and size % 1024 == 0:
        return f"{size // 1024} KB"
    return f"{size} bytes"


def _boundary_and_charset(request: Request) -> tuple[bytes, str]:
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data":
        shown = content_type.decode("latin-1") or "no Content-Type"
        raise UnsupportedMediaType(f"Send the file as multipart/form-data, not {shown}")
    boundary = options.get(b"boundary")
    if not boundary or len(boundary) > 200:
        raise MalformedUpload("The multipart Content-Type has no valid boundary")
    charset = options.get(b"charset", b"utf-8").decode("latin-1")
    try:
        "".encode(charset)
    except LookupError:
        charset = "utf-8"
    return boundary, charset


def _default_max_bytes(request: Request) -> int:
    settings = getattr(request.app.state, "settings", None)
    if settings is None:
        raise ValueError("receive_upload needs max_bytes when the app has no settings")
    return int(settings.max_upload_mb) * 1024 * 1024


def _default_tmp_dir(request: Request) -> Path:
    settings = getattr(request.app.state, "settings", None)
    return Path(settings.data_dir) / TMP_DIR_NAME if settings is not None else Path(tempfile.gettempdir())


@asynccontextmanager
async def receive_upload(
    request: Request,
    *,
    max_bytes: int | None = None,
    max_files: int = DEFAULT_MAX_FILES,
    max_fields: int = DEFAULT_MAX_FIELDS,
    max_field_bytes: int = DEFAULT_MAX_FIELD_BYTES,
    min_files: int = 1,
    tmp_dir: Path | None = None,
) -> AsyncIterator[ReceivedUpload]:
    """Receive the request's multipart body into temporary files; they live until the block ends.

    `max_bytes` bounds the files' bytes together (default A3E_MAX_UPLOAD_MB, which the request
    guard also enforces, with room for the multipart framing and text fields on top).
    """
    limit = _default_max_bytes(request) if max_bytes is None else max_bytes
    directory = _default_tmp_dir(request) if tmp_dir is None else Path(tmp_dir)
    receiver: _Receiver | None = None
    try:
        boundary, charset = _boundary_and_charset(request)
        receiver = _Receiver(
            max_bytes=limit,
            max_files=max_files,
            max_fields=max_fields,
            max_field_bytes=max_field_bytes,
            charset=charset,
            tmp_dir=directory,
        )
        await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
        await _receive(request, receiver, boundary)
    except AppError as exc:
        _discard(receiver)
        # The rest of the body is never read. Without this, the server would keep the connection
        # and read (and drop) whatever the client still sends, however much that is.
        exc.headers.setdefault("Connection", "close")
        raise
    except BaseException:
        _discard(receiver)
        raise
    try:
        upload = _collect(receiver, min_files)
    except BaseException:
        _discard(receiver)
        raise
    try:
        yield upload
    finally:
        _discard(receiver)


async def _receive(request: Request, receiver: _Receiver, boundary: bytes) -> None:
    parser = MultipartParser(boundary, receiver.callbacks())
    try:
        async for chunk in request.stream():
            if not chunk:
                continue
            parser.write(chunk)
            for in_progress in receiver.files:
                if not in_progress.written and (in_progress.finished or len(in_progress.pending) >= _FLUSH_BYTES):
                    await asyncio.to_thread(in_progress.flush)
        parser.finalize()
    except ClientDisconnect:
        raise ClientDisconnected("The client went away before the upload was complete") from None
    except FormParserError:
        raise MalformedUpload("The multipart body is malformed") from None
    if not receiver.ended:
        raise MalformedUpload("The multipart body ended before its closing boundary")


def _collect(receiver: _Receiver, min_files: int) -> ReceivedUpload:
    upload = ReceivedUpload(fields=dict(receiver.fields))
    for in_progress in list(receiver.files):
        if in_progress.size == 0 and in_progress.nameless:
            # A browser sends an empty, nameless part for a file input left empty: not a file.
            in_progress.close_and_delete()
            receiver.files.remove(in_progress)
            continue
        assert in_progress.path is not None
        upload.files.append(
            ReceivedFile(
                field_name=in_progress.field_name,
                filename=in_progress.filename,
                content_type=in_progress.content_type,
                path=in_progress.path,
                size=in_progress.size,
                sha256=in_progress.digest.hexdigest(),
                head=bytes(in_progress.head),
            )
        )
    if len(upload.files) < min_files:
        message = "the upload has no file part" if min_files == 1 else f"the upload needs at least {min_files} files"
        raise RequestValidationError([{"type": "missing", "loc": ("body",), "msg": message, "input": None}])
    return upload


def _discard(receiver: _Receiver | None) -> None:
    # Synchronous on purpose: it also runs when the task is being cancelled, where awaiting is not possible.
    for in_progress in receiver.files if receiver is not None else ():
        in_progress.close_and_delete()
