"""Opening ZIP containers (OOXML files and bulk uploads) without trusting them.

Before `zipfile` builds an entry per member we read the member count from the end-of-central-
directory record; declared sizes and ratios are checked before anything is decompressed; and
the bytes actually produced are counted while decompressing, since headers can lie.
"""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path
from typing import IO

from a3e.evidence.extraction.base import ExtractionFailed, ExtractionLimits, megabytes

_EOCD = b"PK\x05\x06"
_ZIP64_LOCATOR = b"PK\x06\x07"
_ZIP64_EOCD = b"PK\x06\x06"
# Members smaller than this cannot be bombs whatever their ratio (a page of spaces compresses 1000:1).
RATIO_CHECK_FLOOR = 1_000_000
_READ_CHUNK = 1 << 20


def declared_member_count(path: Path) -> int | None:
    """The entry count the archive declares, read from its last 64 KiB; None when there is no
    end-of-central-directory record (not a readable ZIP)."""
    with path.open("rb") as handle:
        handle.seek(0, 2)
        size = handle.tell()
        tail_start = max(0, size - (65_535 + 22 + 20))
        handle.seek(tail_start)
        tail = handle.read()
        position = tail.rfind(_EOCD)
        if position < 0 or len(tail) - position < 22:
            return None
        entries = struct.unpack("<H", tail[position + 10 : position + 12])[0]
        if entries != 0xFFFF:
            return entries
        locator = position - 20
        if locator < 0 or tail[locator : locator + 4] != _ZIP64_LOCATOR:
            return entries
        zip64_offset = struct.unpack("<Q", tail[locator + 8 : locator + 16])[0]
        if zip64_offset > size - 56:
            return None
        handle.seek(zip64_offset)
        record = handle.read(56)
        if record[:4] != _ZIP64_EOCD:
            return None
        return struct.unpack("<Q", record[32:40])[0]


def open_checked_zip(path: Path, limits: ExtractionLimits, what: str) -> zipfile.ZipFile:
    """Open `path` as a ZIP after checking member count, total declared size and ratios.
    `what` names the file in messages ("DOCX", "ZIP")."""
    count = declared_member_count(path)
    if count is None:
        raise ExtractionFailed(f"The file is corrupt: the {what} is not a readable ZIP container (it may be truncated)")
    if count > limits.max_zip_members:
        raise ExtractionFailed(f"The {what} contains {count:,} files; the limit is {limits.max_zip_members:,}")
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError) as exc:
        raise ExtractionFailed(f"The file is corrupt: the {what} is not a readable ZIP container ({exc})") from None
    try:
        check_declared_sizes(archive.infolist(), limits, what)
    except BaseException:
        archive.close()
        raise
    return archive


def bomb_error(what: str, limits: ExtractionLimits) -> ExtractionFailed:
    return ExtractionFailed(
        f"The {what} expands to more than {megabytes(limits.max_uncompressed_bytes)} when decompressed "
        "— refused as a possible decompression bomb"
    )


def check_declared_sizes(members: list[zipfile.ZipInfo], limits: ExtractionLimits, what: str) -> None:
    total = 0
    for member in members:
        # No compression method makes data much bigger (deflate adds at most 0.03%): a member whose
        # compressed data outweighs its declared size has forged headers, the classic bomb disguise.
        if member.compress_size > member.file_size + member.file_size // 100 + 1024:
            raise ExtractionFailed(
                f"The {what}'s member {member.filename!r} declares {member.file_size:,} bytes but holds "
                f"{member.compress_size:,} bytes of compressed data — its headers are forged; refused"
            )
        total += member.file_size
        if total > limits.max_uncompressed_bytes:
            raise bomb_error(what, limits)
        if member.file_size > RATIO_CHECK_FLOOR:
            ratio = member.file_size / max(member.compress_size, 1)
            if ratio > limits.max_compression_ratio:
                raise ExtractionFailed(
                    f"The {what}'s member {member.filename!r} is compressed {ratio:,.0f} to 1 (the limit is "
                    f"{limits.max_compression_ratio:,.0f} to 1) — refused as a possible decompression bomb"
                )


class ByteBudget:
    """The uncompressed bytes one file may still produce, shared by all its members."""

    def __init__(self, limits: ExtractionLimits, what: str) -> None:
        self.remaining = limits.max_uncompressed_bytes
        self._limits = limits
        self._what = what

    def spend(self, count: int) -> None:
        self.remaining -= count
        if self.remaining < 0:
            raise bomb_error(self._what, self._limits)


class CountingReader:
    """A read-only stream over one member that stops when it produces more than its declared
    size or the file's budget; corrupt data becomes ExtractionFailed."""

    def __init__(self, archive: zipfile.ZipFile, member: zipfile.ZipInfo, budget: ByteBudget, what: str) -> None:
        self._member = member
        self._budget = budget
        self._what = what
        self._produced = 0
        try:
            self._stream: IO[bytes] = archive.open(member)
        except (zipfile.BadZipFile, NotImplementedError, RuntimeError, ValueError, OSError) as exc:
            raise corrupt_member(what, member, exc) from None

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = _READ_CHUNK
        try:
            data = self._stream.read(size)
        except (zipfile.BadZipFile, EOFError, ValueError, OSError) as exc:
            raise corrupt_member(self._what, self._member, exc) from None
        except Exception as exc:  # zlib.error and friends
            raise corrupt_member(self._what, self._member, exc) from None
        self._produced += len(data)
        if self._produced > self._member.file_size:
            raise ExtractionFailed(
                f"The {self._what}'s member {self._member.filename!r} decompresses to more than its declared "
                "size — refused as a possible decompression bomb"
            )
        self._budget.spend(len(data))
        return data

    def read_all(self) -> bytes:
        chunks = []
        while chunk := self.read(_READ_CHUNK):
            chunks.append(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        self._stream.close()

    def __enter__(self) -> CountingReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def corrupt_member(what: str, member: zipfile.ZipInfo, exc: BaseException) -> ExtractionFailed:
    if isinstance(exc, (NotImplementedError, RuntimeError)) or member.flag_bits & 0x1:
        return ExtractionFailed(f"The {what}'s member {member.filename!r} is encrypted or uses an unsupported compression")
    return ExtractionFailed(f"The file is corrupt: the {what}'s member {member.filename!r} cannot be read ({exc})")
