"""Logging: one line per event, JSON in production, and secrets masked on the way out."""

from __future__ import annotations

import atexit
import contextvars
import json
import logging
import os
import re
import sys
import threading
import time
from typing import Any

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("a3e_request_id", default=None)

# Shapes of credentials that must never reach a log line, whoever logs them.
_TOKEN_PATTERNS = [
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"),
    re.compile(r"(?i)((?:password|passwd|secret|token|api[_-]?key|authorization)[\"']?\s*[:=]\s*[\"']?)[^\s\"',&}]+"),
    re.compile(r"\b(?:sk|rk|pk)_(?:test|live)_[A-Za-z0-9]+"),
    re.compile(r"\bwhsec_[A-Za-z0-9+/=]+"),
    re.compile(r"\ba3e_[A-Za-z0-9_-]{32,}"),  # our API keys
    re.compile(r"(postgres(?:ql)?(?:\+\w+)?://[^:/@\s]+:)[^@\s]+(@)"),
]
MASK = "***"


class RedactingFilter(logging.Filter):
    """Masks known secret values and anything shaped like a credential."""

    def __init__(self, secrets: list[str] | None = None) -> None:
        super().__init__()
        self.secrets = sorted(set(secrets or []), key=len, reverse=True)

    def redact(self, text: str) -> str:
        for value in self.secrets:
            if value in text:
                text = text.replace(value, MASK)
        for pattern in _TOKEN_PATTERNS:
            text = pattern.sub(_mask_match, text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "redacted", False):
            return True
        message = record.getMessage()
        redacted = self.redact(message)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if redacted != message or record.args:
            record.msg, record.args = redacted, None
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            record.fields = {k: self.redact(v) if isinstance(v, str) else v for k, v in fields.items()}
        return True


def _mask_match(match: re.Match[str]) -> str:
    groups = [g for g in match.groups() if g is not None]
    if len(groups) == 2:
        return f"{groups[0]}{MASK}{groups[1]}"
    if groups:
        return f"{groups[0]}{MASK}"
    return MASK


class _SecondCache:
    """strftime once per second, not once per line: access logs write thousands a second."""

    def __init__(self, convert) -> None:
        self.convert = convert
        self.second = -1
        self.text = ""

    def __call__(self, created: float, fmt: str) -> str:
        second = int(created)
        if second != self.second:
            self.second, self.text = second, time.strftime(fmt, self.convert(created))
        return self.text


class JsonFormatter(logging.Formatter):
    _utc_second = None

    def format(self, record: logging.LogRecord) -> str:
        if self._utc_second is None:
            self._utc_second = _SecondCache(time.gmtime)
        payload: dict[str, Any] = {
            "ts": self._utc_second(record.created, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or request_id_var.get()
        if request_id:
            payload["request_id"] = request_id
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            payload.update(fields)
        if record.exc_text:
            payload["exception"] = record.exc_text
        return json.dumps(payload, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s [%(process)d] %(name)s: %(message)s")
        self._local_second = _SecondCache(time.localtime)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return f"{self._local_second(record.created, '%Y-%m-%d %H:%M:%S')},{int(record.msecs):03d}"

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict) and fields:
            line += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        return line


class AccessLog:
    """One line per request, in the same format as every other line, written without the logging
    module's per-record machinery (which costs more than the rest of a health probe).

    Lines are built from the method, the masked path, numbers and the validated request id (so
    there is nothing to redact) and written in batches: when `BATCH` lines wait, every
    `FLUSH_SECONDS` (the app's lifespan runs `flush_periodically`), and at shutdown and exit.
    """

    FLUSH_SECONDS = 0.2
    BATCH = 256

    def __init__(self) -> None:
        self.enabled = True
        self.json = False
        self.stream: Any = None
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._pid = 0
        self._local_second = _SecondCache(time.localtime)
        self._utc_second = _SecondCache(time.gmtime)

    def configure(self, *, enabled: bool, json_format: bool, stream: Any) -> None:
        self.flush()
        self.enabled, self.json, self.stream = enabled, json_format, stream
        self._pid = os.getpid()

    def write(self, request_id: str, method: str, path: str, status: int, duration_ms: float) -> None:
        if not self.enabled:
            return
        now = time.time()
        millis = int((now % 1) * 1000)
        message = f"{method} {path} {status}"
        if self.json:
            line = (
                f'{{"ts": "{self._utc_second(now, "%Y-%m-%dT%H:%M:%S")}.{millis:03d}Z", "level": "info", '
                f'"logger": "a3e.access", "pid": {self._pid}, "message": {json.dumps(message)}, '
                f'"request_id": "{request_id}", "method": {json.dumps(method)}, "path": {json.dumps(path)}, '
                f'"status": {status}, "duration_ms": {duration_ms}}}\n'
            )
        else:
            line = (
                f"{self._local_second(now, '%Y-%m-%d %H:%M:%S')},{millis:03d} INFO    [{self._pid}] a3e.access: "
                f"{message} request_id={request_id} method={method} path={path} status={status} "
                f"duration_ms={duration_ms}\n"
            )
        lines = self._lines
        # Written from the event loop's thread only; flush() swaps the list under the lock.
        lines.append(line)
        if len(lines) >= self.BATCH:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            lines, self._lines = self._lines, []
        if lines and self.stream is not None:
            try:
                self.stream.write("".join(lines))
                self.stream.flush()
            except (OSError, ValueError):  # a closed stream at exit: nothing left to tell
                pass

    async def flush_periodically(self) -> None:
        """Run by the app's lifespan: quiet periods still see their lines within a moment. (An
        event-loop task rather than a thread, so that it never competes for the GIL mid-request.)"""
        import asyncio

        while True:
            await asyncio.sleep(self.FLUSH_SECONDS)
            if self._lines:
                self.flush()


access_log = AccessLog()
atexit.register(access_log.flush)

_configured_handler: logging.Handler | None = None


def configure_logging(level: str = "info", fmt: str = "text", secrets: list[str] | None = None) -> None:
    """Route our logs and uvicorn's through one handler on stderr. Safe to call again."""
    global _configured_handler
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RedactingFilter(secrets))
    root = logging.getLogger()
    if _configured_handler is not None:
        root.removeHandler(_configured_handler)
    root.addHandler(handler)
    root.setLevel(level.upper())
    _configured_handler = handler
    access_log.configure(
        enabled=logging.getLogger("a3e.access").isEnabledFor(logging.INFO), json_format=fmt == "json", stream=handler.stream
    )
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    # Libraries that narrate routine work (alembic logs its context on every readiness check).
    for name in ("alembic", "httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # Our middleware writes the access log, with the request id and without query strings.
    logging.getLogger("uvicorn.access").disabled = True


def log_fields(logger: logging.Logger, level: int, message: str, **fields: Any) -> None:
    logger.log(level, message, extra={"fields": fields})
