"""Bulk uploads: the documents inside a ZIP, unpacked safely into a temporary directory.

Refused as a whole: too many members, too much uncompressed data (declared or actually
produced), a suspicious compression ratio, an unsafe name (absolute, or climbing out with
".."). Skipped with a reason: nested archives (never unpacked), encrypted members, links.
Ignored silently: directories and operating-system debris (__MACOSX/, .DS_Store, hidden files).
"""

from __future__ import annotations

import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from a3e.evidence.extraction.base import DEFAULT_LIMITS, ExtractionFailed, ExtractionLimits
from a3e.evidence.extraction.zipsafe import ByteBudget, CountingReader, open_checked_zip

_JUNK_NAMES = frozenset({".ds_store", "thumbs.db", "desktop.ini", "ehthumbs.db"})
_ARCHIVE_SUFFIXES = frozenset({".zip", ".7z", ".rar", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".zst"})
_WINDOWS_DRIVE = 2  # "C:" prefix length


@dataclass(frozen=True)
class ZipDocument:
    name: str  # the member's path inside the archive, e.g. "Reports/2024/budget.xlsx"
    path: Path  # where it was unpacked (inside the temporary directory)


@dataclass(frozen=True)
class SkippedMember:
    name: str
    reason: str


@dataclass
class ZipContents:
    documents: list[ZipDocument] = field(default_factory=list)
    skipped: list[SkippedMember] = field(default_factory=list)


def _safe_name(raw: str) -> str:
    """The member name as a relative POSIX path; ExtractionFailed if it points outside the archive."""
    name = raw.replace("\\", "/")
    if name.startswith("/") or (len(name) >= _WINDOWS_DRIVE and name[1] == ":") or "\x00" in name:
        raise ExtractionFailed(f"The ZIP contains a file with an absolute path ({raw!r}) — refused as unsafe")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise ExtractionFailed(f"The ZIP contains a file whose name points outside the archive ({raw!r}) — refused as unsafe")
    return "/".join(parts)


def _is_junk(name: str) -> bool:
    parts = name.split("/")
    if parts[0] == "__MACOSX":
        return True
    return any(part.startswith(".") for part in parts) or parts[-1].lower() in _JUNK_NAMES or parts[-1].startswith("~$")


@contextmanager
def unpack_zip(path: Path, limits: ExtractionLimits = DEFAULT_LIMITS) -> Iterator[ZipContents]:
    """Unpack the documents of a bulk-upload ZIP into a temporary directory that is removed when
    the block ends. Each document still has to go through sniff() and extraction."""
    archive = open_checked_zip(Path(path), limits, "ZIP")
    directory = Path(tempfile.mkdtemp(prefix="a3e-zip-"))
    try:
        with archive:
            contents = ZipContents()
            members = archive.infolist()
            names = [_safe_name(member.filename) for member in members]  # all checked before anything is written
            budget = ByteBudget(limits, "ZIP")
            for index, (member, name) in enumerate(zip(members, names)):
                if member.is_dir() or not name or _is_junk(name):
                    continue
                mode = member.external_attr >> 16
                suffix = PurePosixPath(name).suffix.lower()
                if stat.S_ISLNK(mode):
                    contents.skipped.append(SkippedMember(name, "a symbolic link, not a file"))
                elif suffix in _ARCHIVE_SUFFIXES:
                    contents.skipped.append(SkippedMember(name, "an archive inside the archive; nested archives are not unpacked"))
                elif member.flag_bits & 0x1:
                    contents.skipped.append(SkippedMember(name, "encrypted (password protected)"))
                else:
                    target = directory / f"{index:06d}{suffix if suffix.isascii() and len(suffix) <= 10 else ''}"
                    with CountingReader(archive, member, budget, "ZIP") as source, target.open("xb") as sink:
                        while chunk := source.read(1 << 20):
                            sink.write(chunk)
                    contents.documents.append(ZipDocument(name, target))
            yield contents
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def iter_zip_documents(path: Path, limits: ExtractionLimits = DEFAULT_LIMITS) -> Iterator[tuple[str, Path]]:
    """(name inside the archive, unpacked path) for each document; the files exist until the
    iteration ends. Skipped members are not reported here: use unpack_zip() for those."""
    with unpack_zip(path, limits) as contents:
        for document in contents.documents:
            yield document.name, document.path
