"""The isolated extraction worker: `python -m a3e.evidence.extraction.worker MEMORY_MB`.

It caps its own address space, then reads requests from stdin and writes results to stdout,
each a frame of a 4-byte big-endian length and UTF-8 JSON. JSON rather than pickle, so that a
worker subverted by a hostile file still cannot make the parent run code. The parent
(`isolation.py`) enforces the wall-clock timeout by killing the worker.
"""

from __future__ import annotations

import json
import resource
import struct
import sys
from pathlib import Path
from typing import IO, Any

EXIT_OUT_OF_MEMORY = 3
_HEADER = struct.Struct(">I")


def read_frame(stream: IO[bytes]) -> Any:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (length,) = _HEADER.unpack(header)
    data = stream.read(length)
    if len(data) < length:
        return None
    return json.loads(data)


def write_frame(stream: IO[bytes], payload: Any) -> None:
    data = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    stream.write(_HEADER.pack(len(data)))
    stream.write(data)
    stream.flush()


def _confine(memory_mb: int) -> None:
    limit = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash leaves no core file behind
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))  # reading needs no writing


def serve(memory_mb: int) -> int:
    protocol_in, protocol_out = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print from a library must not corrupt the protocol
    from a3e.evidence.extraction.base import ExtractionFailed, ExtractionLimits, Kind, UnsupportedFile
    from a3e.evidence.extraction.extractor import extract

    # Loaded before the cap and before "ready", so that no task pays for them.
    import lxml.etree  # noqa: F401
    import pypdfium2  # noqa: F401

    _confine(memory_mb)
    write_frame(protocol_out, {"ready": True})
    while True:
        request = read_frame(protocol_in)
        if request is None:
            return 0
        retire = False
        try:
            extracted = extract(Path(request["path"]), Kind(request["kind"]), ExtractionLimits(**request["limits"]))
            payload: dict[str, Any] = {"ok": True, "extracted": extracted.to_dict()}
            del extracted
        except UnsupportedFile as exc:
            payload = {"ok": False, "error": "unsupported", "reason": exc.reason}
        except ExtractionFailed as exc:
            payload = {"ok": False, "error": "failed", "reason": exc.reason}
        except MemoryError:
            payload = {"ok": False, "error": "memory", "reason": ""}
            retire = True  # the heap may be fragmented or half-built: start afresh
        except Exception as exc:  # never let one file end the worker silently
            reason = f"The extraction failed unexpectedly ({type(exc).__name__}: {exc})"
            payload = {"ok": False, "error": "failed", "reason": reason[:500]}
        try:
            write_frame(protocol_out, payload)
        except MemoryError:
            return EXIT_OUT_OF_MEMORY
        if retire:
            return EXIT_OUT_OF_MEMORY


def main() -> None:
    try:
        memory_mb = int(sys.argv[1])
    except (IndexError, ValueError):
        sys.stderr.write("usage: python -m a3e.evidence.extraction.worker MEMORY_MB\n")
        raise SystemExit(2) from None
    try:
        raise SystemExit(serve(memory_mb))
    except BrokenPipeError:
        raise SystemExit(0) from None


if __name__ == "__main__":
    main()
