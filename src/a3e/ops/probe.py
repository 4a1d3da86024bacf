"""`a3e probe URL`: check a deployment from outside, as an operator chasing a browser's
"CORS error" would, and say which of four things is true:

* **backend down** (exit 2): nothing answers, the name does not resolve, TLS fails, or a proxy
  answers 502/503/504 (or anything else that is not A³E) in front of a dead process;
* **not ready** (exit 3): A³E answers /health, but with `ready: false` — and which check fails;
* **cors not allowed** (exit 4): A³E is ready, but a front-end origin is refused;
* **healthy** (exit 0).

Every request is bounded by the timeout, redirects are reported rather than followed, and
nothing that could be a secret is printed: the URL is shown without credentials or query, and
only an allowlist of response headers is recorded.
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

import httpx

HEALTHY = "healthy"
BACKEND_DOWN = "backend down"
NOT_READY = "not ready"
CORS_NOT_ALLOWED = "cors not allowed"
INVALID_INPUT = "invalid input"

EXIT_CODES = {HEALTHY: 0, BACKEND_DOWN: 2, NOT_READY: 3, CORS_NOT_ALLOWED: 4, INVALID_INPUT: 64}

PREFLIGHT_METHOD = "POST"
PREFLIGHT_HEADERS = ("authorization", "content-type")
MAX_BODY_BYTES = 64 * 1024
PROXY_DOWN_STATUSES = (502, 503, 504)

# Response headers worth showing; never Set-Cookie or anything else that may carry a secret.
RECORDED_HEADERS = (
    "content-type",
    "location",
    "server",
    "via",
    "retry-after",
    "vary",
    "x-request-id",
    "access-control-allow-origin",
    "access-control-allow-credentials",
    "access-control-allow-methods",
    "access-control-allow-headers",
    "access-control-expose-headers",
    "access-control-max-age",
)

DOWN_HINT = (
    "the process is not running or crashed at start: check the deploy logs and run "
    "`a3e doctor` with the same environment"
)


# ---------------------------------------------------------------------------------------------
# Classifying a failed connection.


@dataclass(frozen=True)
class ConnectionFailure:
    kind: str  # "refused" | "dns" | "tls" | "timeout" | "other"
    detail: str


_DNS_MESSAGES = (
    "name or service not known",
    "nodename nor servname",
    "temporary failure in name resolution",
    "no address associated with hostname",
    "getaddrinfo failed",
    "name resolution",
    "name does not resolve",
)
_REFUSED_MESSAGES = ("connection refused", "errno 111]", "errno 61]", "10061", "actively refused")
_TLS_MESSAGES = ("[ssl", "ssl:", "certificate", "tls")


def _exception_chain(exc: BaseException, limit: int = 10) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(chain) < limit and all(current is not seen for seen in chain):
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _tls_detail(error: ssl.SSLError) -> str:
    verify_message = getattr(error, "verify_message", None)
    if verify_message:
        return f"certificate not accepted: {verify_message}"
    reason = getattr(error, "reason", None)
    if reason:
        return f"TLS handshake failed: {str(reason).replace('_', ' ').lower()}"
    return f"TLS handshake failed: {error}"


def classify_exception(exc: BaseException) -> ConnectionFailure:
    """Map an httpx exception (and what it wraps) to refused, dns, tls, timeout or other.

    httpx raises e.g. `ConnectError` from httpcore's `ConnectError` from the `OSError` the socket
    raised, so the chain is searched for the underlying type first, then its message.
    """
    chain = _exception_chain(exc)
    for error in chain:
        if isinstance(error, httpx.ConnectTimeout):
            return ConnectionFailure("timeout", "no connection within the timeout")
        if isinstance(error, httpx.PoolTimeout):
            return ConnectionFailure("timeout", "no connection became free within the timeout")
        if isinstance(error, (httpx.ReadTimeout, httpx.WriteTimeout)):
            return ConnectionFailure("timeout", "connected, but no response within the timeout")
        if isinstance(error, (httpx.TimeoutException, TimeoutError)):
            return ConnectionFailure("timeout", "timed out")
        if isinstance(error, ssl.SSLError):
            return ConnectionFailure("tls", _tls_detail(error))
        if isinstance(error, socket.gaierror):
            return ConnectionFailure("dns", f"the name does not resolve ({error.strerror or error})")
        if isinstance(error, ConnectionRefusedError):
            return ConnectionFailure("refused", "connection refused: nothing listens on that port")
    messages = " | ".join(str(error) for error in chain)
    lowered = messages.lower()
    if any(text in lowered for text in _DNS_MESSAGES):
        return ConnectionFailure("dns", f"the name does not resolve ({messages})")
    if any(text in lowered for text in _REFUSED_MESSAGES):
        return ConnectionFailure("refused", "connection refused: nothing listens on that port")
    if any(text in lowered for text in _TLS_MESSAGES):
        return ConnectionFailure("tls", f"TLS handshake failed: {messages}")
    if "timed out" in lowered:
        return ConnectionFailure("timeout", "timed out")
    if isinstance(exc, httpx.RemoteProtocolError):
        return ConnectionFailure("other", f"the connection closed without a valid HTTP response ({exc})")
    text = str(exc) or type(exc).__name__
    return ConnectionFailure("other", f"{type(exc).__name__}: {text}")


# ---------------------------------------------------------------------------------------------
# One bounded request.


@dataclass
class Exchange:
    """One request and what came back (or why nothing did)."""

    method: str
    path: str
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    truncated: bool = False
    elapsed_ms: float = 0.0
    failure: ConnectionFailure | None = None

    @property
    def request_id(self) -> str | None:
        return self.headers.get("x-request-id")

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def json(self) -> Any:
        if self.truncated or not self.body:
            return None
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError):
            return None

    def summary(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "request": f"{self.method} {self.path}",
            "status_code": self.status,
            "elapsed_ms": self.elapsed_ms,
        }
        if self.failure:
            data["error"] = asdict(self.failure)
        else:
            data["headers"] = dict(self.headers)
        return data


def _request(
    client: httpx.Client, method: str, url: httpx.URL, path: str, timeout: float, headers: dict[str, str]
) -> Exchange:
    exchange = Exchange(method, path)
    started = time.monotonic()
    deadline = started + timeout
    try:
        with client.stream(method, url, headers=headers) as response:
            exchange.status = response.status_code
            for name in RECORDED_HEADERS:
                values = response.headers.get_list(name)
                if values:
                    value = ", ".join(values)
                    exchange.headers[name] = mask_url(value) if name == "location" else value
            chunks, size = [], 0
            for chunk in response.iter_bytes():
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    exchange.truncated = True
                    break
                if time.monotonic() > deadline:
                    raise httpx.ReadTimeout("the body did not arrive within the timeout")
            exchange.body = b"".join(chunks)[:MAX_BODY_BYTES]
    except httpx.HTTPError as exc:
        exchange.status = None
        exchange.headers = {}
        exchange.failure = classify_exception(exc)
    except OSError as exc:  # pragma: no cover - httpx maps these, but be safe
        exchange.failure = classify_exception(exc)
    exchange.elapsed_ms = round((time.monotonic() - started) * 1000, 1)
    return exchange


# ---------------------------------------------------------------------------------------------
# Results.


@dataclass
class Check:
    name: str  # "connection" | "health" | "docs" | "cors"
    status: str  # "ok" | "warn" | "fail" | "skip"
    summary: str
    hint: str | None = None
    request_id: str | None = None
    origin: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.origin is None:
            del data["origin"]
        return data


@dataclass
class ProbeResult:
    url: str
    origins: list[str]
    checks: list[Check]
    verdict: str
    reason: str = ""
    hint: str | None = None
    failed_origins: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]

    def check(self, name: str, origin: str | None = None) -> Check | None:
        for check in self.checks:
            if check.name == name and (origin is None or check.origin == origin):
                return check
        return None

    def as_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "verdict": self.verdict,
            "exit_code": self.exit_code,
            "reason": self.reason,
            "hint": self.hint,
            "origins": list(self.origins),
            "failed_origins": list(self.failed_origins),
            "notes": list(self.notes),
            "checks": [check.as_dict() for check in self.checks],
        }


# ---------------------------------------------------------------------------------------------
# Inputs.


_USERINFO = re.compile(r"//[^/@\s]*@")


def mask_url(text: str) -> str:
    """A URL as it may be shown: no credentials, no query string, no fragment."""
    return _USERINFO.sub("//***@", text.split("?", 1)[0].split("#", 1)[0])


def normalize_base_url(raw: str) -> tuple[httpx.URL, str, list[str]]:
    """The base URL to probe, how to show it (no credentials, no query), and notes."""
    notes: list[str] = []
    text = raw.strip()
    if not text:
        raise ValueError("the URL is empty; give the deployment's base URL, e.g. https://api.example.edu")
    if "://" not in text:
        text = "https://" + text
        notes.append("no scheme given: assumed https://")
    try:
        url = httpx.URL(text)
    except httpx.InvalidURL as exc:
        raise ValueError(f"{mask_url(raw)!r} is not a URL ({exc})") from None
    if url.scheme not in ("http", "https"):
        raise ValueError(f"{mask_url(raw)!r} is not an http:// or https:// URL")
    if not url.host:
        raise ValueError(f"{mask_url(raw)!r} has no host name")
    if url.query or url.fragment:
        notes.append("the query and fragment of the URL are ignored")
    url = url.copy_with(path=url.path.rstrip("/") or "", query=None, fragment=None)
    host = f"[{url.host}]" if ":" in url.host else url.host
    display = f"{url.scheme}://{host}" + (f":{url.port}" if url.port else "") + url.path.rstrip("/")
    return url, display, notes


def normalize_probe_origin(raw: str) -> str:
    """`https://App.Example.edu/` -> `https://app.example.edu`, as the server compares them."""
    from a3e.core.settings import normalize_origin

    origin = normalize_origin(raw)
    if origin == "*":
        raise ValueError("'*' is not an origin; give a front end's scheme://host[:port]")
    return origin


def _endpoint(base: httpx.URL, path: str) -> httpx.URL:
    return base.copy_with(path=base.path.rstrip("/") + path)


# ---------------------------------------------------------------------------------------------
# Reading /health.


def _is_health_body(body: Any) -> bool:
    return (
        isinstance(body, dict)
        and isinstance(body.get("ready"), bool)
        and isinstance(body.get("checks"), dict)
        and isinstance(body.get("status"), str)
    )


def _error_envelope(body: Any) -> dict[str, Any] | None:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        if isinstance(error.get("code"), str) and isinstance(error.get("message"), str):
            return error
    return None


_TITLE = re.compile(rb"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[^>]+>")


def describe_body(exchange: Exchange, limit: int = 120) -> str:
    """A short, one-line description of a body that is not A³E's: an HTML title or the text."""
    if not exchange.body:
        return "an empty body"
    match = _TITLE.search(exchange.body)
    if match:
        text = match.group(1).decode("utf-8", "replace")
    else:
        text = exchange.body[:2048].decode("utf-8", "replace")
        if "<" in text:
            text = _TAG.sub(" ", text)
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    kind = (exchange.header("content-type") or "").split(";")[0].strip() or "a body"
    return f'{kind} "{text}"' if text else kind


def _failing_checks(body: dict[str, Any]) -> list[str]:
    failing = []
    for name, check in body.get("checks", {}).items():
        if isinstance(check, dict) and check.get("status") != "ok":
            detail = check.get("detail") or check.get("status") or "failing"
            failing.append(f"{name}: {detail}")
    return failing


def _not_ready_hint(body: dict[str, Any]) -> str:
    checks = body.get("checks", {})
    hints = []
    database = checks.get("database") if isinstance(checks.get("database"), dict) else {}
    migrations = checks.get("migrations") if isinstance(checks.get("migrations"), dict) else {}
    if database and database.get("status") != "ok":
        hints.append(
            "the database does not answer: check DATABASE_URL and that the database service is up "
            "(`a3e doctor` with the same environment says why)"
        )
    elif migrations and migrations.get("status") != "ok":
        hints.append(
            "run `a3e migrate` with the deployment's DATABASE_URL (or set A3E_AUTO_MIGRATE=true), "
            "then check /health again"
        )
    return "; ".join(hints) or "check the deploy logs and run `a3e doctor` with the same environment"


def _failed_features(body: dict[str, Any]) -> list[str]:
    features = body.get("features")
    if not isinstance(features, dict):
        return []
    failed = []
    for name, entry in features.items():
        if isinstance(entry, dict) and entry.get("status") == "failed":
            reason = entry.get("reason") or entry.get("detail")
            failed.append(f"{name} ({reason})" if reason else name)
    return failed


@dataclass
class HealthReading:
    check: Check
    verdict: str | None  # BACKEND_DOWN, NOT_READY, or None when ready
    reason: str = ""
    hint: str | None = None


def read_health(exchange: Exchange, display_url: str) -> HealthReading:
    """Judge a `GET /health` response that did arrive."""
    status = exchange.status
    assert status is not None
    body = exchange.json()
    details: dict[str, Any] = exchange.summary()
    rid = exchange.request_id
    prefix = f"GET /health → {status}"

    if 300 <= status < 400:
        location = mask_url(exchange.header("location") or "")
        details["kind"] = "redirect"
        summary = f"{prefix} redirect to {location or '(no Location header)'}; A³E itself never redirects /health"
        target = location[: -len("/health")] if location.endswith("/health") else location
        hint = (
            f"probe {target or 'the URL it redirects to'} instead; the front end must call that URL too "
            "(a preflight cannot follow a redirect)"
        )
        return HealthReading(Check("health", "fail", summary, hint, rid, details=details), BACKEND_DOWN, summary, hint)

    if _is_health_body(body):
        details["kind"] = "a3e-health"
        details["body"] = body
        facts = f"status {body.get('status')}, ready {str(body['ready']).lower()}"
        about = ", ".join(
            f"{key} {body[key]}" for key in ("version", "environment") if body.get(key) is not None
        )
        if body.get("uptime_seconds") is not None:
            about += f", up {body['uptime_seconds']}s"
        if body["ready"] and status == 200:
            failed = _failed_features(body)
            if failed:
                summary = f"{prefix}: {facts}; {about}; failed features: {', '.join(failed)}"
                hint = "a failed optional feature does not stop the API; see its reason and the logs"
                return HealthReading(Check("health", "warn", summary, hint, rid, details=details), None)
            return HealthReading(Check("health", "ok", f"{prefix}: {facts}; {about}", None, rid, details=details), None)
        failing = _failing_checks(body)
        why = "; ".join(failing) or f"/health answered {status} with ready {str(body['ready']).lower()}"
        summary = f"{prefix}: {facts}; not ready — {why}"
        hint = _not_ready_hint(body)
        return HealthReading(Check("health", "fail", summary, hint, rid, details=details), NOT_READY, why, hint)

    envelope = _error_envelope(body)
    if envelope is not None:
        details["kind"] = "a3e-error"
        details["body"] = body
        rid = rid or envelope.get("request_id")
        message = f"{envelope['code']}: {envelope['message']}"
        if status >= 500:
            summary = f"{prefix} from A³E: {message}"
            hint = "A³E runs but cannot answer /health: find the request id in the logs"
            return HealthReading(Check("health", "fail", summary, hint, rid, details=details), NOT_READY, message, hint)
        summary = f"{prefix} from A³E ({message}): there is no health endpoint at {display_url}/health"
        hint = "give the base URL A³E is served at (without a path such as /api, unless a proxy adds one)"
        return HealthReading(Check("health", "fail", summary, hint, rid, details=details), BACKEND_DOWN, summary, hint)

    details["kind"] = "other"
    details["body_excerpt"] = describe_body(exchange, limit=300)
    seen = describe_body(exchange)
    if status in PROXY_DOWN_STATUSES:
        summary = f"{prefix} with {seen}, not A³E's health JSON: the backend is down behind a proxy"
        hint = f"{DOWN_HINT}; also check that it listens on the port the platform routes to ($PORT)"
        reason = f"a proxy answered {status} for {display_url}/health: the A³E process behind it does not respond"
        return HealthReading(Check("health", "fail", summary, hint, rid, details=details), BACKEND_DOWN, reason, hint)
    summary = f"{prefix} with {seen}, not A³E's health JSON"
    hint = "is this the URL of the A³E API (not the front end or another service)? check the URL and the routing"
    reason = f"{display_url} does not answer like A³E (/health answered {status} with {seen})"
    return HealthReading(Check("health", "fail", summary, hint, rid, details=details), BACKEND_DOWN, reason, hint)


def _connection_hint(failure: ConnectionFailure, url: httpx.URL, timeout: float) -> str:
    where = f"{url.host}:{url.port or (443 if url.scheme == 'https' else 80)}"
    if failure.kind == "refused":
        return f"nothing listens on {where}: {DOWN_HINT}"
    if failure.kind == "dns":
        return f"{url.host} does not resolve: check the spelling of the URL and the deployment's domain/DNS record"
    if failure.kind == "tls":
        plain = " (or use http:// if the server does not speak TLS)" if url.scheme == "https" else ""
        return f"check the certificate served for {url.host}: expired, wrong name or self-signed{plain}"
    if failure.kind == "timeout":
        if failure.detail.startswith("connected"):
            return (
                f"{where} accepted the connection but did not answer within {timeout:g}s: the process may be "
                "hung or overloaded; check the logs, or retry with a larger --timeout"
            )
        return f"no answer from {where} within {timeout:g}s: a firewall, a wrong port, or the host is down"
    return f"check the URL; {DOWN_HINT}"


# ---------------------------------------------------------------------------------------------
# CORS.


def _allow_origin_problem(value: str | None, origin: str, what: str) -> tuple[str, str] | None:
    """(status, problem) when `Access-Control-Allow-Origin` does not allow `origin`; None when it does."""
    if value is None:
        return "fail", f"{what} carried no Access-Control-Allow-Origin"
    values = [part.strip() for part in value.split(",") if part.strip()]
    if len(values) > 1:
        return "fail", (
            f"{what} carried Access-Control-Allow-Origin {len(values)} times ({value}): the app and a proxy "
            "both add CORS headers, and browsers refuse that"
        )
    if value == "*":
        return "warn", (
            f"{what} answered Access-Control-Allow-Origin: *, which browsers refuse for requests with "
            "credentials (A³E allows credentials)"
        )
    if value != origin:
        trailing = " (mind the trailing slash)" if value.rstrip("/") == origin else ""
        return "fail", f"{what} allowed {value}, not {origin}{trailing}"
    return None


def cors_origins_hint(origins: list[str]) -> str:
    listed = " and ".join(origins)
    return (
        f"add {listed} to CORS_ORIGINS (comma-separated, each exactly scheme://host[:port], "
        "no trailing slash) and restart"
    )


def evaluate_cors(origin: str, preflight: Exchange, simple: Exchange) -> Check:
    """Would a browser at `origin` be allowed a credentialed POST with Authorization and JSON?"""
    problems: list[tuple[str, str]] = []  # (what is wrong, how to fix it)
    warnings: list[str] = []
    not_listed = False
    in_front = (
        "something in front of A³E (a proxy, CDN or firewall) answers the preflight itself: "
        "let OPTIONS through to A³E"
    )

    # The preflight: OPTIONS with Access-Control-Request-Method and -Headers.
    if preflight.failure:
        problems.append(
            (
                f"the preflight (OPTIONS /health) failed: {preflight.failure.detail}",
                "retry, and check the deploy logs",
            )
        )
    elif 300 <= preflight.status < 400:  # type: ignore[operator]
        problems.append(
            (
                f"the preflight answered {preflight.status} redirect to "
                f"{mask_url(preflight.header('location') or '')}: browsers do not follow redirects on a preflight",
                "make the front end call the URL the API redirects to (often https:// instead of http://)",
            )
        )
    else:
        status = preflight.status
        allow_origin = preflight.header("access-control-allow-origin")
        envelope = _error_envelope(preflight.json())
        if not 200 <= status < 300:  # type: ignore[operator]
            if envelope and envelope["code"] == "cors_origin_not_allowed":
                not_listed = True
                problems.append(
                    (
                        f"the preflight answered {status} with no Access-Control-Allow-Origin: "
                        "the origin is not in CORS_ORIGINS",
                        cors_origins_hint([origin]),
                    )
                )
            elif envelope:
                problems.append(
                    (
                        f"the preflight answered {status}: {envelope['message']}",
                        "the front end asks for a method or header that A³E does not allow",
                    )
                )
            else:
                seen = "no Access-Control-Allow-Origin" if allow_origin is None else f"Access-Control-Allow-Origin {allow_origin}"
                problems.append(
                    (
                        f"the preflight answered {status} with {seen} and {describe_body(preflight)}, "
                        "which is not A³E's answer; browsers need a 2xx",
                        in_front,
                    )
                )
        else:
            problem = _allow_origin_problem(allow_origin, origin, f"the preflight ({status})")
            if problem and problem[0] == "warn":
                warnings.append(problem[1])
            elif problem and allow_origin is None:
                problems.append((problem[1] + ", which A³E never does for a preflight it accepts", in_front))
            elif problem:
                problems.append(
                    (
                        problem[1],
                        "send one exact Access-Control-Allow-Origin: remove CORS headers that a proxy adds "
                        "(A³E sends its own for each allowed origin)",
                    )
                )
            if allow_origin == origin and preflight.header("access-control-allow-credentials") != "true":
                warnings.append(
                    "the preflight has no Access-Control-Allow-Credentials: true, so requests with credentials fail"
                )
            allowed_headers = {
                part.strip().lower()
                for part in (preflight.header("access-control-allow-headers") or "").split(",")
                if part.strip()
            }
            # "*" never covers Authorization, and covers the others only for requests without credentials.
            wildcard = "*" in allowed_headers
            missing = [
                name
                for name in PREFLIGHT_HEADERS
                if name not in allowed_headers and not (wildcard and name != "authorization")
            ]
            if allow_origin is not None and missing:
                problems.append(
                    (
                        f"the preflight does not allow the request headers {', '.join(missing)} "
                        f"(Access-Control-Allow-Headers: {preflight.header('access-control-allow-headers') or 'absent'})",
                        in_front,
                    )
                )

    # The simple request: GET /health with Origin.
    if simple.failure:
        problems.append((f"GET /health with Origin failed: {simple.failure.detail}", "retry, and check the deploy logs"))
    else:
        allow_origin = simple.header("access-control-allow-origin")
        problem = _allow_origin_problem(allow_origin, origin, f"GET /health ({simple.status})")
        if problem is None:
            pass
        elif problem[0] == "warn":
            warnings.append(problem[1])
        elif allow_origin is None:
            if not problems:  # a refusal already explained by the preflight is not repeated
                problems.append(
                    (
                        f"the preflight allowed it, but GET /health ({simple.status}) carried no "
                        "Access-Control-Allow-Origin: something in front strips CORS headers from responses",
                        "make the proxy or CDN pass the Access-Control-* and Vary headers through",
                    )
                )
        else:
            problems.append(
                (
                    problem[1],
                    "send one exact Access-Control-Allow-Origin: remove CORS headers that a proxy adds "
                    "(A³E sends its own for each allowed origin)",
                )
            )
        if allow_origin == origin:
            vary = {part.strip().lower() for part in (simple.header("vary") or "").split(",")}
            if "origin" not in vary:
                warnings.append("GET /health lacks Vary: Origin, so a cache may serve one origin's answer to another")

    details: dict[str, Any] = {
        "allowed": not problems,
        "not_in_cors_origins": not_listed,
        "problems": [text for text, _ in problems],
        "warnings": warnings,
        "requested_method": PREFLIGHT_METHOD,
        "requested_headers": list(PREFLIGHT_HEADERS),
        "preflight": preflight.summary(),
        "simple": simple.summary(),
    }
    request_id = preflight.request_id or simple.request_id
    if problems:
        summary = f"{origin}: " + "; ".join([text for text, _ in problems] + warnings)
        return Check("cors", "fail", summary, problems[0][1], request_id, origin, details)
    statuses = f"preflight {preflight.status}, GET /health {simple.status}"
    if warnings:
        summary = f"{origin}: allowed ({statuses}), but " + "; ".join(warnings)
        return Check("cors", "warn", summary, None, request_id, origin, details)
    return Check("cors", "ok", f"{origin}: allowed ({statuses}, with credentials)", None, request_id, origin, details)


# ---------------------------------------------------------------------------------------------
# The probe.


def run_probe(
    url: str,
    *,
    origins: list[str] | tuple[str, ...] = (),
    timeout: float = 5.0,
    trust_env: bool = True,
) -> ProbeResult:
    try:
        base, display, notes = normalize_base_url(url)
        normalized: list[str] = []
        for raw in origins:
            try:
                origin = normalize_probe_origin(raw)
            except ValueError as exc:
                raise ValueError(f"--origin {exc}") from None
            if origin != raw.strip():
                notes.append(f"origin {raw.strip()} normalised to {origin}")
            if origin not in normalized:
                normalized.append(origin)
        if not timeout or timeout <= 0:
            raise ValueError("--timeout must be a positive number of seconds")
    except ValueError as exc:
        return ProbeResult(
            url=mask_url(url), origins=list(origins), checks=[], verdict=INVALID_INPUT, reason=str(exc),
            hint="usage: a3e probe https://api.example.edu --origin https://app.example.edu",
        )

    from a3e import __version__

    probe_id = f"a3e-probe-{uuid.uuid4().hex[:12]}"
    common = {"User-Agent": f"a3e-probe/{__version__}", "Accept": "application/json, */*;q=0.5"}
    checks: list[Check] = []
    result = ProbeResult(url=display, origins=normalized, checks=checks, verdict=HEALTHY, notes=notes)

    with httpx.Client(
        timeout=httpx.Timeout(timeout), follow_redirects=False, trust_env=trust_env, headers=common
    ) as client:

        def request(method: str, path: str, name: str, extra: dict[str, str] | None = None) -> Exchange:
            headers = {"X-Request-ID": f"{probe_id}-{name}", **(extra or {})}
            return _request(client, method, _endpoint(base, path), path, timeout, headers)

        # 1 and 2: the connection, and /health.
        health = request("GET", "/health", "health")
        if health.failure:
            failure = health.failure
            hint = _connection_hint(failure, base, timeout)
            summary = f"{display}: {failure.kind}: {failure.detail}"
            checks.append(Check("connection", "fail", summary, hint, details={"kind": failure.kind, **health.summary()}))
            checks.append(Check("health", "skip", "not reached"))
            checks.append(Check("docs", "skip", "not reached"))
            result.verdict, result.reason, result.hint = BACKEND_DOWN, summary, hint
        else:
            checks.append(
                Check("connection", "ok", f"{display} answered ({health.elapsed_ms:g} ms)", details={"kind": "ok"})
            )
            reading = read_health(health, display)
            checks.append(reading.check)
            if reading.verdict:
                result.verdict, result.reason, result.hint = reading.verdict, reading.reason, reading.hint

            # 3: /docs, a warning at most.
            if result.verdict == BACKEND_DOWN:
                checks.append(Check("docs", "skip", "not checked: no A³E answers at this URL"))
            else:
                docs = request("GET", "/docs", "docs")
                checks.append(_docs_check(docs))

        # 4: CORS, for each origin.
        if result.verdict == BACKEND_DOWN:
            for origin in normalized:
                checks.append(
                    Check(
                        "cors", "skip",
                        f"{origin}: not checked: no A³E answers at this URL (a browser reports this as a "
                        "CORS error, because an error page from a proxy carries no CORS headers)",
                        origin=origin,
                    )
                )
        else:
            for index, origin in enumerate(normalized, start=1):
                preflight = request(
                    "OPTIONS", "/health", f"preflight-{index}",
                    {
                        "Origin": origin,
                        "Access-Control-Request-Method": PREFLIGHT_METHOD,
                        "Access-Control-Request-Headers": ", ".join(PREFLIGHT_HEADERS),
                    },
                )
                simple = request("GET", "/health", f"cors-{index}", {"Origin": origin})
                check = evaluate_cors(origin, preflight, simple)
                checks.append(check)
                if check.status == "fail":
                    result.failed_origins.append(origin)
            if not normalized:
                checks.append(
                    Check("cors", "skip", "no --origin given: pass --origin https://your-front-end to check CORS")
                )

    if result.verdict == HEALTHY and result.failed_origins:
        failed = ", ".join(result.failed_origins)
        result.verdict = CORS_NOT_ALLOWED
        result.reason = f"not allowed: {failed}"
        failing = [check for check in checks if check.name == "cors" and check.status == "fail"]
        not_listed = [check.origin for check in failing if check.details.get("not_in_cors_origins")]
        hints = [cors_origins_hint(not_listed)] if not_listed else []
        for check in failing:
            if not check.details.get("not_in_cors_origins") and check.hint and check.hint not in hints:
                hints.append(check.hint)
        result.hint = "; ".join(hints)
    return result


def _docs_check(docs: Exchange) -> Check:
    details = docs.summary()
    if docs.failure:
        return Check("docs", "warn", f"GET /docs failed: {docs.failure.detail}", None, details=details)
    if docs.status == 200:
        return Check("docs", "ok", "GET /docs → 200", None, docs.request_id, details=details)
    if 300 <= docs.status < 400:  # type: ignore[operator]
        summary = f"GET /docs → {docs.status} redirect to {mask_url(docs.header('location') or '')}"
    else:
        summary = f"GET /docs → {docs.status}"
    hint = "the API docs are not served at /docs here (a proxy may route only some paths)"
    return Check("docs", "warn", summary, hint, docs.request_id, details=details)


# ---------------------------------------------------------------------------------------------
# Output.


def render(result: ProbeResult) -> str:
    lines = [f"probe {result.url}"]
    for note in result.notes:
        lines.append(f"  note  {note}")
    for check in result.checks:
        line = f"  {check.status:<5} {check.name:<10} {check.summary}"
        if check.request_id:
            line += f"  [request id {check.request_id}]"
        lines.append(line)
        if check.hint and check.status in ("fail", "warn"):
            lines.append(f"  {'':<5} {'':<10} fix: {check.hint}")
    if result.verdict != HEALTHY:
        lines.append(f"why: {result.reason}")
        shown = {check.hint for check in result.checks if check.status in ("fail", "warn")}
        if result.hint and result.hint not in shown:
            lines.append(f"fix: {result.hint}")
    lines.append(f"verdict: {result.verdict}")
    return "\n".join(lines)


def print_probe(result: ProbeResult, *, as_json: bool = False, file: TextIO | None = None) -> None:
    out = file or sys.stdout
    if as_json:
        print(json.dumps(result.as_dict(), indent=2, ensure_ascii=False), file=out)
    else:
        print(render(result), file=out)
