"""One HTTP attempt of a webhook delivery: vet the address, sign, POST, record what came back.

No redirect is followed (a 3xx is a failure: a redirect could lead anywhere, the guard's check
included), only 2xx counts as success, and the connection goes to the address the guard vetted
(with the URL's host in `Host` and, for https, in SNI and the certificate check).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from a3e import __version__
from a3e.webhooks.address import UnsafeAddress, vet
from a3e.webhooks.signing import signature_header

if TYPE_CHECKING:
    import ssl

    from a3e.core.settings import Settings

USER_AGENT = f"A3E-Webhooks/{__version__}"
RESPONSE_BODY_KEPT = 1024  # bytes of the receiver's answer kept in the delivery log


@dataclass(frozen=True)
class AttemptResult:
    succeeded: bool
    status_code: int | None
    error: str | None
    response_body: str | None
    duration_ms: int


def _describe(exc: BaseException) -> str:
    import httpx

    if isinstance(exc, httpx.ConnectTimeout):
        return "timed out connecting"
    if isinstance(exc, httpx.TimeoutException):
        return "timed out waiting for the answer"
    if isinstance(exc, httpx.ConnectError):
        return f"could not connect ({exc})"[:300]
    text = str(exc).strip()
    return f"{exc.__class__.__name__}: {text}"[:300] if text else exc.__class__.__name__


@functools.lru_cache(maxsize=4)
def _tls_context(extra_authorities: str | None) -> ssl.SSLContext:
    """The public authorities (certifi's, as httpx trusts by default), plus a campus's own; built
    once per process, since loading the bundle costs milliseconds."""
    import ssl

    import certifi

    context = ssl.create_default_context(cafile=certifi.where())
    if extra_authorities:
        context.load_verify_locations(cafile=extra_authorities)
    return context


def _host_header(host: str, port: int, scheme: str) -> str:
    shown = f"[{host}]" if ":" in host else host
    return shown if port == (443 if scheme == "https" else 80) else f"{shown}:{port}"


def attempt(
    settings: Settings, url: str, message_id: str, body: str, secrets_in_use: list[str], *, timestamp: int | None = None
) -> AttemptResult:
    """POST `body` to `url`, signed with every secret in `secrets_in_use`. Never raises for the
    receiver's faults: they are the result."""
    import httpx

    started = time.perf_counter()

    def elapsed() -> int:
        return int((time.perf_counter() - started) * 1000)

    try:
        target = vet(url, allow_http=settings.webhooks_http_allowed, allow_private=settings.webhooks_allow_private)
    except UnsafeAddress as exc:
        return AttemptResult(False, None, f"refused: the URL {exc}"[:500], None, elapsed())
    content = body.encode()
    stamp = int(time.time()) if timestamp is None else timestamp
    headers = {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": message_id,
        "webhook-timestamp": str(stamp),
        "webhook-signature": signature_header(secrets_in_use, message_id, stamp, content),
        "host": _host_header(target.host, target.port, target.scheme),
    }
    pinned = httpx.URL(url).copy_with(host=target.address)
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    timeout = httpx.Timeout(settings.webhooks_timeout, connect=settings.webhooks_connect_timeout)
    deadline = time.monotonic() + settings.webhooks_connect_timeout + settings.webhooks_timeout
    try:
        tls = _tls_context(str(settings.webhooks_ca_bundle) if settings.webhooks_ca_bundle else None)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        return AttemptResult(False, None, f"A3E_WEBHOOKS_CA_BUNDLE cannot be loaded ({exc})"[:500], None, elapsed())
    try:
        with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False, verify=tls) as client:
            request = client.build_request("POST", pinned, content=content, headers=headers, extensions=extensions)
            response = client.send(request, stream=True)
            try:
                kept = bytearray()
                # Only the first bytes are kept; a receiver trickling an endless answer is cut off.
                for chunk in response.iter_raw():
                    kept += chunk
                    if len(kept) >= RESPONSE_BODY_KEPT or time.monotonic() > deadline:
                        break
                status = response.status_code
            finally:
                response.close()
    except httpx.HTTPError as exc:
        return AttemptResult(False, None, _describe(exc), None, elapsed())
    text = bytes(kept[:RESPONSE_BODY_KEPT]).decode("utf-8", errors="replace") or None
    if 200 <= status < 300:
        return AttemptResult(True, status, None, text, elapsed())
    if 300 <= status < 400:
        error = f"HTTP {status}: redirects are not followed; register the final URL"
    else:
        error = f"HTTP {status}"
    return AttemptResult(False, status, error, text, elapsed())
