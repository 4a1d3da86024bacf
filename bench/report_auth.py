"""Renders the `auth` section of bench/RESULTS.md (figures from bench/bench_auth.py)."""

from __future__ import annotations

from bench_auth import OLD_READ, READ_TARGET_P99_S, READ_TARGET_RPS, grouped
from lib import median
from report import _pct, _rps, _status, _table

KINDS = {"token": "access token", "api_key": "read-only API key"}


def _n(value: float | None, scale: float = 1.0) -> str:
    return "–" if value is None else f"{value * scale:.0f}"


def _foreign_warning(auth: dict) -> list[str]:
    runs = [r for store in (auth.get("reads") or {}, auth.get("whatifs") or {}, auth.get("logins") or {})
            for entry in store.values() for r in entry["runs"] if r.get("foreign_cpu") is not None]
    retried = sum(1 for r in runs if r.get("attempts", 1) > 1)
    waited = sum(r.get("waited_s", 0.0) for r in runs)
    out = []
    if retried:
        out.append(f"{retried} of {len(runs)} runs were done again because other processes took more than 25 % of a "
                   f"core meanwhile (after waiting {waited:.0f} s in all for the machine to be quiet); the tables show "
                   f"the last attempt.")
    values = [r["foreign_cpu"] for r in runs]
    if values and max(values) >= 0.2:
        busy = sum(1 for v in values if v >= 0.2)
        out.append(f"**Other work still ran on this machine during {busy} of {len(values)} runs** (up to "
                   f"{_pct(max(values))} of a core, median {_pct(median(values))}): those runs' figures are lower "
                   f"than the machine gives; compare within a round, and see the *other processes* column.")
    return [" ".join(out), ""] if out else []


def _server_cpu(f: dict) -> str:
    text = _pct(f["server_cpu"])
    if len(f.get("processes_cpu") or []) > 1:
        text += " (" + " + ".join(_pct(x) for x in f["processes_cpu"]) + ")"
    if f.get("kernel_share") is not None:
        text += f", {_pct(f['kernel_share'])} kernel"
    return text


def _ms(seconds: float | None, digits: int = 1) -> str:
    return "–" if seconds is None else f"{seconds * 1000:.{digits}f}"


def _servers(store: dict) -> list[tuple[str, dict]]:
    return sorted(store.items(), key=lambda item: item[1]["workers"])


def _meets(figures: list[dict]) -> bool:
    return all(f["rps"] >= READ_TARGET_RPS and f["p99"] <= READ_TARGET_P99_S and not f["errors"] for f in figures)


def _errors_note(figures: list[dict]) -> str:
    errors = sum(f["errors"] for f in figures)
    return f" ({errors} errors or non-2xx)" if errors else ""


def summary_rows(auth: dict) -> list[list[str]]:
    if auth.get("error"):
        return [["Login and authenticated read (PostgreSQL)", f"not measured: {auth['error']}", "–", "–", "–"]]
    rows = []
    figures = grouped(auth["reads"])
    conns = auth["read_connections"]
    for key, entry in _servers(auth["reads"]):
        workers = entry["workers"]
        for kind in ("token", "api_key"):
            mine = [figures[(key, kind, c)] for c in conns if (key, kind, c) in figures]
            if not mine:
                continue
            label = f"Read `GET /api/v1/workspaces/{{id}}`, {KINDS[kind]}, WEB_CONCURRENCY={workers}"
            counts = " / ".join(str(c) for c in conns)
            if kind == "token":
                rps_ok = all(f["rps"] >= READ_TARGET_RPS and not f["errors"] for f in mine)
                p99_ok = all(f["p99"] <= READ_TARGET_P99_S and not f["errors"] for f in mine)
                rows.append([f"{label}: req/s at {counts} connections",
                             " / ".join(_rps(f["rps"]) + (" (stalled)" if _stalled(f) else "") for f in mine)
                             + _errors_note(mine),
                             f"≥ {READ_TARGET_RPS:,.0f}", _status(rps_ok), f"{OLD_READ['rps']} req/s"])
                rows.append([f"{label}: p99 at {counts} connections",
                             " / ".join(f"{_ms(f['p99'])} ms" + (" (stalled)" if _stalled(f) else "") for f in mine),
                             f"≤ {READ_TARGET_P99_S * 1000:.0f} ms", _status(p99_ok), f"{OLD_READ['p99_ms']} ms"])
            else:
                rows.append([f"{label}: req/s; p99 at {counts} connections",
                             " / ".join(_rps(f["rps"]) + (" (stalled)" if _stalled(f) else "") for f in mine)
                             + " req/s; p99 " + " / ".join(f"{_ms(f['p99'])} ms" for f in mine) + _errors_note(mine),
                             f"≥ {READ_TARGET_RPS:,.0f} req/s, p99 ≤ {READ_TARGET_P99_S * 1000:.0f} ms",
                             _status(_meets(mine)), "–"])
    logins = grouped(auth["logins"])
    for key, entry in _servers(auth["logins"]):
        cells = []
        for c in auth["login_connections"]:
            f = logins.get((key, "login", c))
            if f:
                cells.append(f"{f['rps']:.1f} req/s, p50 {_ms(f['p50'], 0)} / p99 {_ms(f['p99'], 0)} ms"
                             + (f", {f['errors']} non-2xx" if f["errors"] else ""))
        rows.append([f"Login `POST /api/v1/auth/login`, WEB_CONCURRENCY={entry['workers']}, "
                     f"{' / '.join(str(c) for c in auth['login_connections'])} connections", "; ".join(cells),
                     "–", "–", "–"])
    argon = auth.get("argon2")
    if argon:
        rows.append([f"argon2id hash alone (t={argon['time_cost']}, {argon['memory_kib'] // 1024} MiB, "
                     f"p={argon['parallelism']}), in-process, median of {argon['runs']}",
                     f"{_ms(argon['hash']['wall_median'], 0)} ms wall, {_ms(argon['hash']['cpu_median'], 0)} ms CPU",
                     "–", "–", "–"])
    return rows


def render_auth(auth: dict, machine: dict) -> list[str]:
    out = ["## 6. Login and an authenticated, workspace-scoped read on PostgreSQL", ""]
    if auth.get("error"):
        return out + [f"Not measured: {auth['error']}", ""]
    pg = auth.get("postgres", {})
    argon = auth["argon2"]
    workers = ", ".join(str(w) for w in auth["workers"])
    out += [
        f"A throwaway PostgreSQL {pg.get('server_version', '?')} cluster (initdb, trust authentication on "
        f"127.0.0.1, run as an unprivileged user) with initdb's defaults — fsync={pg.get('fsync')}, "
        f"synchronous_commit={pg.get('synchronous_commit')}, full_page_writes={pg.get('full_page_writes')}, "
        f"shared_buffers={pg.get('shared_buffers')}, work_mem={pg.get('work_mem')} — except "
        f"max_connections={pg.get('max_connections')} (room for every server's pool at once); `a3e migrate`; "
        f"then `a3e serve` with WEB_CONCURRENCY={workers} side by side, configured as in production: "
        f"ENVIRONMENT=production, fixed 60-character SECRET_KEY and JWT_SECRET_KEY, CORS_ORIGINS set, "
        f"DATABASE_URL to the cluster, LOG_LEVEL=info (one JSON access-log line per request, stderr to a file), "
        f"default argon2id parameters and login limits. Seeded through the API: register, log in, create a "
        f"workspace, create a read-only API key (`POST /api/v1/workspaces/{{id}}/api-keys`, scope `read`), and "
        f"{auth['seed']['login_accounts']} accounts for the login load. Each server's answer is checked before "
        f"the load (200, the workspace's id and name, role `owner` for the token and null for the key).",
        "",
        f"**Nothing is pinned**: the machine has {auth['cpus']} CPUs, shared by the server under load, "
        f"PostgreSQL and wrk (1 thread), as an API server and its database share a small host. *server CPU* "
        f"and *PostgreSQL CPU* are psutil's user+system time of each process tree over the run's wall time (100 % "
        f"= one core; with two workers, each busy process in brackets, and the share spent in the kernel); "
        f"*wrk CPU* is the load generator's own; *other processes* is what the rest of the machine took meanwhile "
        f"(all cores' busy time minus those three): near 0 % when nothing else ran. The idle server of the other "
        f"configuration takes nothing meanwhile.",
        "",
        *_foreign_warning(auth),
        f"### Authenticated read: `GET /api/v1/workspaces/{{id}}`",
        "",
        f"wrk, 1 thread, `Authorization: Bearer …` header, {auth['duration']:g} s per run, {auth['rounds']} "
        f"interleaved rounds after a {auth['warmup']:g} s warm-up (each round: every connection count and both "
        f"credentials, the configurations back to back in a rotating order); medians over the rounds, min–max of "
        f"req/s and the worst round's p99 in brackets. Errors are wrk's connect/read/write/timeout errors plus "
        f"non-2xx answers. Target: ≥ {READ_TARGET_RPS:,.0f} req/s (5 × the old system's {OLD_READ['rps']}) "
        f"with p99 ≤ {READ_TARGET_P99_S * 1000:.0f} ms.",
        "",
    ]
    figures = grouped(auth["reads"])
    rows = []
    for kind in ("token", "api_key"):
        for key, entry in _servers(auth["reads"]):
            for c in auth["read_connections"]:
                f = figures.get((key, kind, c))
                if not f:
                    continue
                rows.append([KINDS[kind], str(entry["workers"]), str(c),
                             f"{_rps(f['rps'])} ({_rps(f['rps_min'])}–{_rps(f['rps_max'])})",
                             _ms(f["p50"]), _ms(f["p90"]), f"{_ms(f['p99'])} ({_ms(f['p99_max'])})", _ms(f["max"], 0),
                             str(f["errors"]), _server_cpu(f), _pct(f["pg_cpu"]), _pct(f.get("wrk_cpu")),
                             _pct(f.get("foreign_cpu")),
                             _n(f["server_us"]), _n(f["pg_us"]),
                             _status(f["rps"] >= READ_TARGET_RPS and f["p99"] <= READ_TARGET_P99_S
                                     and not f["errors"])])
    out += _table(["Credentials", "WEB_CONCURRENCY", "Conn.", "req/s median (min–max)", "p50 ms", "p90 ms",
                   "p99 ms (worst)", "max ms", "errors", "server CPU", "PostgreSQL CPU", "wrk CPU", "other processes",
                   "server CPU µs/req", "PostgreSQL CPU µs/req", "target"], rows)

    out += [
        "### Login: `POST /api/v1/auth/login` with the right password",
        "",
        f"argon2id with A³E's defaults (t={argon['time_cost']}, m={argon['memory_kib'] // 1024} MiB, "
        f"p={argon['parallelism']}), timed in-process (no server, the machine otherwise idle), median of "
        f"{argon['runs']}: **hash {_ms(argon['hash']['wall_median'], 0)} ms** wall "
        f"({_ms(argon['hash']['cpu_median'], 0)} ms of CPU over its {argon['parallelism']} lanes), verify "
        f"{_ms(argon['verify']['wall_median'], 0)} ms wall ({_ms(argon['verify']['cpu_median'], 0)} ms CPU). "
        f"A login verifies once; the CPU time bounds logins per second at about "
        f"{auth['cpus'] / argon['verify']['cpu_median']:.0f} on {auth['cpus']} cores, before anything else a "
        f"login does.",
        "",
        f"wrk, 1 thread, {auth['login_duration']:g} s per run, {auth['rounds']} interleaved rounds after a 2 s "
        f"warm-up; each request logs in as the next of {auth['seed']['login_accounts']} accounts (twice the "
        f"largest connection count: see the note on the throttle below). Every answer is counted by status.",
        "",
    ]
    logins = grouped(auth["logins"])
    rows = []
    for key, entry in _servers(auth["logins"]):
        for c in auth["login_connections"]:
            f = logins.get((key, "login", c))
            if not f:
                continue
            statuses = ", ".join(f"{n} × {s}" for s, n in sorted(f["statuses"].items())) or "–"
            rows.append([str(entry["workers"]), str(c), f"{f['rps']:.1f} ({f['rps_min']:.1f}–{f['rps_max']:.1f})",
                         _ms(f["p50"], 0), _ms(f["p90"], 0), _ms(f["p99"], 0), statuses, _pct(f["server_cpu"]),
                         _pct(f["pg_cpu"]), _pct(f.get("foreign_cpu")), _n(f["server_us"], 1e-3)])
    out += _table(["WEB_CONCURRENCY", "Conn.", "logins/s median (min–max)", "p50 ms", "p90 ms", "p99 ms",
                   "answers", "server CPU", "PostgreSQL CPU", "other processes", "server CPU ms/login"], rows)
    one = auth.get("login_one_account")
    if one:
        statuses = ", ".join(f"{n} × {s}" for s, n in sorted(one.get("statuses", {}).items(), key=lambda x: x[0]))
        refused = sum(n for s, n in one.get("statuses", {}).items() if str(s) == "429")
        limits = auth.get("login_limits", {})
        if refused:
            out += [
                f"**Correct logins were refused.** Diagnostic: {one['connections']} connections logging in to the "
                f"*same* account from one address for {auth['login_duration']:g} s: {statuses} — **{refused} refused "
                f"with 429** although no password was wrong. The throttle (`a3e.auth.throttle`) must let attempts "
                f"still being checked wait instead of refusing them.",
                "",
            ]
        else:
            out += [
                f"**Concurrent correct logins are not refused.** Diagnostic: {one['connections']} connections logging "
                f"in to the *same* account from one address for {auth['login_duration']:g} s: {statuses}. The "
                f"throttle (`a3e.auth.throttle`; limits {limits.get('per_account', '?')} per account and address, "
                f"{limits.get('per_address', '?')} per address) counts failures and attempts still being checked, "
                f"and an attempt that finds the limit reached only by attempts in flight waits for them instead "
                f"of being refused. The table above still logs in as {auth['seed']['login_accounts']} accounts in "
                f"turn, as in earlier runs, so that its figures compare.",
                "",
            ]

    out += _profile(auth.get("profile"), auth)
    out += _whatifs(auth)
    logs = auth.get("log_bytes")
    if logs:
        out += ["Access logs written during the section: "
                + ", ".join(f"{key} {size / 2**20:.0f} MB" for key, size in logs.items()) + ".", ""]
    return out


def _profile(prof: dict | None, auth: dict) -> list[str]:
    if not prof:
        if auth.get("target_met"):
            return ["The read target is met: nothing was profiled.", ""]
        return []
    if prof.get("error"):
        return [f"py-spy: {prof['error']}", ""]
    if not prof.get("samples"):
        return ["py-spy recorded no samples.", ""]
    out = [
        f"### Where the one-worker server's time goes on the read (py-spy)",
        "",
        f"py-spy sampled every thread of the WEB_CONCURRENCY=1 server at {prof['rate']} Hz for {prof['seconds']} s, "
        f"keeping only the samples of the thread **holding the GIL** (`--gil`), under wrk with the access token "
        f"at {prof['connections']} connections: {prof['samples']} samples. "
        f"**The GIL was held {_pct(prof.get('gil_busy'))} of the time** (a floor: py-spy can fall behind) and the "
        f"process used {_pct(prof.get('server_cpu'))} of a core"
        + (f", serving {prof['rps_while_profiled']:,.0f} req/s while sampled (py-spy slows it)"
           if prof.get("rps_while_profiled") else "")
        + ". The gap between the two is CPU spent without the GIL: in the kernel (thread wake-ups, futexes, "
        "sockets), in C code that released it, and in handing it from thread to thread. "
        "Shares below are of the GIL-holding samples; a sample goes to the innermost layer of its stack (time in "
        "C or the standard library goes to the layer that called it; anything under logging counts as the "
        "access log).",
        "",
    ]
    out += _table(["Thread", "Share"], [[name, _pct(share)] for name, share in prof["threads"]])
    out += _table(["Layer", "Share of GIL time"], [[name, _pct(share)] for name, share in prof["buckets"]])
    out += ["Inclusive shares of some functions (overlapping; the event loop's and the worker threads' stacks are "
            "separate, so a dependency's time is under its own name, not under solve_dependencies):", ""]
    out += _table(["Function", "Share of GIL time"], [[name.replace("  ", "↳ "), _pct(share)]
                                                      for name, share in prof["hotspots"]])
    out += ["Functions with the most samples of their own:", ""]
    out += _table(["Function (file)", "Self"], [[f"`{frame}`", _pct(share)] for frame, share in prof["top_self"]])
    return out


# (what-if key, the key it is compared with, what it changes, the suggestion it measures)
STEPS = [
    ('gate', 'a3e_w1', 'an admission gate of pool size in front of the unchanged app', 'deadlock'),
    ('noping', 'a3e_w1', 'no `pool_pre_ping`', 'preping'),
    ('freeze', 'a3e_w1', '`gc.collect(); gc.freeze()` once the app is built', 'gcfreeze'),
    ('fused_noping', 'noping', 'the whole read in one thread-pool hop (one sync call, no sync dependencies)', 'hops'),
    ('onequery_noping', 'fused_noping', 'one SELECT (user LEFT JOIN membership LEFT JOIN workspace) instead of two', 'onequery'),
    ('sync_lean', 'onequery_noping', 'raw psycopg on an autocommit connection instead of an ORM Session with BEGIN/COMMIT (same SELECT, same one hop)', 'lean'),
    ('async_lean', 'sync_lean', 'an `async def` route on async psycopg instead of a sync route in the thread pool', 'async'),
    ('async_lean_freeze', 'async_lean', '`gc.freeze()` on the lean path', 'gcfreeze'),
    ('async_lean_freeze_quiet', 'async_lean_freeze', 'no access-log line (LOG_LEVEL=warning)', 'accesslog'),
    ('async_lean_freeze_w2', 'async_lean_freeze', 'WEB_CONCURRENCY=2', 'workers'),
]

# The suggestions for src/, each measured by one or more steps.
SUGGESTIONS = {
    'deadlock': (
        "**Never let a request hold a pooled connection while it waits for a thread — it stalls under load.** "
        "A request's session keeps its connection from its first query to its end, across several thread-pool "
        "hops, and each hop needs one of anyio's thread tokens (40 by default). With more requests in flight per "
        "worker than tokens + connections, all the tokens can end up held by threads blocked in the pool's "
        "checkout while every connection belongs to a request waiting for a token: nothing moves until "
        "`pool_timeout` (A3E_DB_CONNECT_TIMEOUT, 3 s) fails the waiters with 503 `database_unavailable` — the "
        "stalled runs above. Any of: admit at most as many requests that use the database as the pool has "
        "connections, the rest waiting on the event loop (the `gate` what-if; an `asyncio.Semaphore` in a "
        "pure-ASGI middleware); or do a request's database work in one hop (check out, query, commit and release "
        "inside one sync call — the `fused` what-ifs never stall); raising `pool_size`/`max_overflow` alone only "
        "moves the threshold."
    ),
    'preping': (
        '**Stop pinging on every checkout** (`build_engine`: `pool_pre_ping=True`): each request pays a '
        '`SELECT 1` round trip before its first query, with a GIL release and re-acquire around it. Keep the '
        'protection where it matters — after idle time, when a firewall or a database restart may have cut '
        'the connection — with a `checkout` event that pings only connections idle for more than ~30 s (note '
        'the time in `connection_record.info` on `checkin`; raise `sqlalchemy.exc.DisconnectionError` when '
        'the ping fails and the pool retries with a fresh connection), or rely on `pool_recycle` and '
        "SQLAlchemy's invalidation of the pool on a disconnect error."
    ),
    'gcfreeze': (
        "**`gc.freeze()` once the app is built** (end of `create_app`, or the lifespan's start, in each "
        'worker): the start-up objects — FastAPI, pydantic, SQLAlchemy, the routes and models — are moved '
        "out of the collector's generations, so the full collections that a busy server triggers every few "
        'seconds no longer walk them. One line, no behaviour change; it shortens the tail above all (see the '
        'p99 columns, and the same step on the lean path below).'
    ),
    'hops': (
        "**Fewer hops to the thread pool per request.** FastAPI runs every sync `def` dependency and endpoint in "
        "the thread pool, each a separate hop (a future, a worker-thread wake-up, an event-loop wake-up, a GIL "
        "hand-over each way), and a sync generator dependency costs one hop in and one out. The `fused` what-ifs "
        "do the whole read — session, authentication, scoping, query, commit, release — in one sync call: make "
        "endpoints that only shape loaded objects `async def`, open the session on the event loop (no I/O), and "
        "resolve principal and access in one sync dependency."
    ),
    'onequery': (
        '**One query for the principal and the workspace access**: `get_principal` loads the user and '
        '`workspace_access` then joins workspace and membership — two round trips and two ORM loads. One '
        '`SELECT … FROM users LEFT JOIN memberships … LEFT JOIN workspaces … WHERE users.id = :sub` answers '
        'both (no row: 401; no membership: 404), as bench/whatif_auth_app.py does.'
    ),
    'lean': (
        '**A lighter data path for the per-request authentication and scoping**: the ORM `Session` (identity '
        "map, ORM loading of three entities, the unit of work's commit) and the transaction's BEGIN and "
        'COMMIT round trips cost more than the query itself. For the lookups every request makes, SQLAlchemy '
        'Core `select()` of the few columns needed, on a connection with `isolation_level="AUTOCOMMIT"` (a '
        'read needs no transaction), keeps the ORM for the writes that need it.'
    ),
    'async': (
        "**Take the hot read path off the thread pool**: an async route on an async driver (psycopg's "
        "`AsyncConnection`, or SQLAlchemy's asyncio extension — which needs `greenlet`, not installed here, "
        'hence psycopg directly in the what-if) avoids the thread hop, the GIL hand-overs between threads '
        'and the blocking waits.'
    ),
    'accesslog': (
        "**The access-log line** costs a measurable share per request once the rest is lean: see §5's "
        'suggestions on the logging path (a formatter that writes the few fields directly, the per-record '
        'switches).'
    ),
    'workers': (
        '**Two workers** (WEB_CONCURRENCY=2) once a worker is lean: on this 2-core machine they share the '
        'cores with PostgreSQL and wrk.'
    ),
}


STALL_RPS = 50


def _stalled(f: dict) -> bool:
    return f["rps"] < STALL_RPS or f["errors"] > 0.01 * max(f["requests"], 1)


def _runs_by_round(store: dict, key: str, conns: int) -> dict:
    return {r["round"]: r for r in store.get(key, {}).get("runs", []) if r["connections"] == conns}


def _ratio(store: dict, key: str, base: str, conns: int) -> float | None:
    """Median over the rounds of key's req/s over base's, at `conns` connections."""
    mine, theirs = _runs_by_round(store, key, conns), _runs_by_round(store, base, conns)
    ratios = [mine[r]["rps"] / theirs[r]["rps"] for r in mine if r in theirs and theirs[r]["rps"]]
    return median(ratios) if ratios else None


def _whatifs(auth: dict) -> list[str]:
    store = auth.get("whatifs") or {}
    out = []
    if auth.get("whatifs_error"):
        out += [f"What-ifs: {auth['whatifs_error']}", ""]
    if not store:
        return out
    figures = grouped(store)
    counts = sorted({r["connections"] for entry in store.values() for r in entry["runs"]})
    seconds = auth.get("whatif_duration", auth["duration"])
    out += [
        "### What-ifs: what each suggestion buys (bench/whatif_auth_app.py)",
        "",
        f"A³E's real app built from the same environment, with one change each (nothing in src/ is changed; the "
        f"module's docstring says exactly what each variant does), loaded like the read above with the access "
        f"token, {seconds:g} s per run, {auth['rounds']} interleaved rounds together with the unchanged "
        f"one-worker server. *vs A³E* is the median over the rounds of the ratio of req/s within a round.",
        "",
    ]
    labels = {"a3e_w1": "A³E as it is (`a3e serve`, WEB_CONCURRENCY=1)"}
    rows = []
    for key, entry in store.items():
        for c in counts:
            f = figures.get((key, "token", c))
            if not f:
                continue
            ratio = _ratio(store, key, "a3e_w1", c)
            rows.append([labels.get(key, entry["label"]), str(entry["workers"]), str(c),
                         f"{_rps(f['rps'])} ({_rps(f['rps_min'])}–{_rps(f['rps_max'])})",
                         "–" if ratio is None else f"{ratio:.2f} ×", _ms(f["p50"]), _ms(f["p99"]), str(f["errors"]),
                         _pct(f["server_cpu"]), _pct(f["pg_cpu"]), _n(f["server_us"]), _n(f["pg_us"]),
                         _status(f["rps"] >= READ_TARGET_RPS and f["p99"] <= READ_TARGET_P99_S and not f["errors"])])
    out += _table(["Server", "Workers", "Conn.", "req/s median (min–max)", "vs A³E", "p50 ms", "p99 ms", "errors",
                   "server CPU", "PostgreSQL CPU", "server CPU µs/req", "PostgreSQL CPU µs/req", "target"], rows)

    ladder: list[list[str]] = []
    measured: dict[str, dict] = {}  # suggestion → {"score", "fixes", "cells"}
    for key, base, change, suggestion in STEPS:
        if key not in store or base not in store:
            continue
        base_label = "A³E as it is" if base == "a3e_w1" else store[base]["label"]
        cells, score, fixes = [], 0.0, False
        for c in counts:
            mine, theirs = figures.get((key, "token", c)), figures.get((base, "token", c))
            if not mine or not theirs:
                cells.append("–")
                continue
            errors = f", errors {theirs['errors']} → {mine['errors']}" if theirs["errors"] or mine["errors"] else ""
            if _stalled(theirs) and not _stalled(mine):
                fixes = True
                cells.append(f"**stall removed**: {_rps(theirs['rps'])} → {_rps(mine['rps'])} req/s{errors}, p99 "
                             f"{_ms(mine['p99'], 0)} ms")
                continue
            if _stalled(theirs) and _stalled(mine):
                cells.append(f"both stalled ({_rps(theirs['rps'])} and {_rps(mine['rps'])} req/s{errors})")
                continue
            ratio = _ratio(store, key, base, c)
            if ratio is None:
                cells.append("–")
                continue
            cells.append(f"{ratio:.2f} × req/s, p99 {_ms(theirs['p99'], 0)} → {_ms(mine['p99'], 0)} ms{errors}")
            if not _stalled(theirs):
                score = max(score, ratio)
        ladder.append([change, base_label, *cells])
        entry = measured.setdefault(suggestion, {"score": 0.0, "fixes": False, "evidence": []})
        entry["score"] = max(entry["score"], score)
        entry["fixes"] = entry["fixes"] or fixes
        entry["evidence"].append(f"{change}, against {base_label}: "
                                 + "; ".join(f"{c} conn. {cell}" for c, cell in zip(counts, cells)))
    out += ["Each change against the server it adds to (same rounds; a server is *stalled* when fewer than "
            f"{STALL_RPS} req/s or more than 1 % of its answers failed):", ""]
    out += _table(["Change", "compared with", *[f"{c} connections" for c in counts]], ladder)
    a3e_stalled = any(_stalled(f) for (key, _, _), f in grouped(auth.get("reads") or {}).items())
    ranked = sorted(((entry["fixes"], name == "deadlock", entry["score"], name) for name, entry in measured.items()
                     if name in SUGGESTIONS and (name != "deadlock" or a3e_stalled)), reverse=True)
    if ranked:
        out += ["### Suggestions for src/ (not made here), by measured payoff",
                "",
                "First what removes failures under load, then by the largest throughput gain the what-ifs measured "
                "(the tail's gains are in the evidence)"
                + ("" if a3e_stalled else "; A³E did not stall in the runs above, so no fix for stalls is listed")
                + ":",
                ""]
        for index, (_, _, _, name) in enumerate(ranked, 1):
            evidence = " ".join(f"*Measured — {text}.*" for text in measured[name]["evidence"])
            out.append(f"{index}. {SUGGESTIONS[name]} {evidence}")
        out.append("")
    return out
