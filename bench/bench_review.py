"""The `review` section: the matrix and gaps endpoints (issue 5: p95 ≤ 200 ms for 1,000 documents ×
500 standards on PostgreSQL).

Steps: start a throwaway PostgreSQL cluster (bench_auth's); `a3e migrate`; start `a3e serve` with
WEB_CONCURRENCY=1 and =2 side by side; through the real API register an owner, create a
workspace and a read-only API key, and import a custom catalog of 500 standards (10 sections of
1 + 49); then insert the evidence straight into the database with SQLAlchemy Core through a3e's
own tables (blobs, documents, ready current revisions, ~10 passages each, suggestions, evidence
links, statuses), seeded so the run is reproducible. Before and after the load, every standard's
row of the CSV export and of /gaps is checked against the traffic light, counts and lint computed
here, independently, from the seeded data. Then wrk (with a Lua reporter that also gives p95) on:
GET /matrix (first page), /matrix?gap=amber, /gaps and /matrix/export?format=csv, at 4 and 16
connections, interleaved rounds, with the server's and PostgreSQL's CPU measured by psutil; then
the judged reads again while one standard's status is changed through the API once a second (each
change makes every server compute the matrix again: the service reuses a computed matrix only
while the workspace's review version stands); and, when the target is missed, a py-spy profile of the one-worker server under /gaps and an in-process
split of where one request's time goes (the SQL, the Python around it, the JSON).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import random
import subprocess
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import psutil

from bench_auth import (
    A3E, FOREIGN_LIMIT, Cluster, Server, _busy, _children_cpu, _cpu_by_pid, _cpu_delta, _cpu_split, _expect, _by_position, call, clean_text,
    _quiet_budget, describe_cluster, migrate, register_and_login, server_env, start_cluster, start_server, stop_cluster, wait_quiet,
)
from lib import HOST, clean_env, log, median, scrub_path, spawn, stop

TARGET_P95_S = 0.200
SECTIONS = 10
STANDARDS_PER_SECTION = 49  # + the section itself: 50 per section, 500 in all
DOCUMENTS = 1000
SEED = 20261128
LOW_CONFIDENCE = 0.5  # the endpoints' default
STALE_YEARS = 5  # the endpoints' default
# (key, label, path template, judged against the target)
ENDPOINTS = [
    ("matrix", "GET /matrix?catalog=…&limit=50 (first page)", "/matrix?catalog={catalog}&limit=50&as_of={as_of}", True),
    ("matrix_amber", "GET /matrix?catalog=…&gap=amber&limit=50", "/matrix?catalog={catalog}&gap=amber&limit=50&as_of={as_of}", True),
    ("gaps", "GET /gaps?catalog=…", "/gaps?catalog={catalog}&as_of={as_of}", True),
    ("export_csv", "GET /matrix/export?catalog=…&format=csv", "/matrix/export?catalog={catalog}&format=csv&as_of={as_of}", False),
]

# wrk's summary as one JSON line, with p95 (bench/wrk_report.lua has no p95; written next to the run).
WRK_LUA = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"p50":%d,"p90":%d,"p95":%d,"p99":%d,"max":%d,"mean":%.1f}}\\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(95), latency:percentile(99),
    latency.max, latency.mean))
end
"""


# ---------------------------------------------------------------------------------------------
# The catalog


def catalog_items() -> list[dict]:
    items = []
    for section in range(1, SECTIONS + 1):
        items.append({"id": f"S{section}", "title": f"Section {section}: institutional {_TOPICS[section - 1]}",
                      "text": f"The institution demonstrates effective {_TOPICS[section - 1]}."})
        for number in range(1, STANDARDS_PER_SECTION + 1):
            topic = _TOPICS[(section + number) % len(_TOPICS)]
            items.append({"id": f"S{section}.{number}", "parent": f"S{section}",
                          "title": f"{topic.capitalize()} requirement {section}.{number}",
                          "text": f"The institution documents {topic} with evidence reviewed at least every "
                                  f"{1 + number % 5} years and acts on the results."})
    return items


_TOPICS = ["governance", "mission and planning", "academic programs", "faculty qualifications", "student support",
           "financial resources", "physical resources", "library and learning resources", "assessment of outcomes",
           "compliance with policies", "institutional effectiveness", "distance education"]


def multipart(fields: dict[str, str], filename: str, data: bytes, content_type: str) -> tuple[bytes, str]:
    boundary = "a3e-bench-" + uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
                 f"Content-Type: {content_type}\r\n\r\n".encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def import_catalog(port: int, workspace_id: str, token: str) -> dict:
    import http.client

    document = {"name": "Bench Regional Standards", "version": "2026", "items": catalog_items()}
    body, content_type = multipart({"name": "Bench Regional Standards"}, "bench-standards.json",
                                   json.dumps(document).encode(), "application/json")
    connection = http.client.HTTPConnection(HOST, port, timeout=60)
    try:
        connection.request("POST", f"/api/v1/workspaces/{workspace_id}/catalogs", body=body,
                           headers={"Content-Type": content_type, "Authorization": f"Bearer {token}",
                                    "Accept": "application/json"})
        response = connection.getresponse()
        raw = response.read()
    finally:
        connection.close()
    if response.status != 201:
        raise RuntimeError(f"catalog import: HTTP {response.status} {raw[:300]!r}")
    return json.loads(raw)


# ---------------------------------------------------------------------------------------------
# The evidence, straight into the database


@dataclass
class Seeded:
    as_of: date
    codes: list[str]
    sections: dict[str, str]  # code → section code
    documents: dict[uuid.UUID, dict] = field(default_factory=dict)  # id → document_date, effective_date, review_date, created_at
    links: list[dict] = field(default_factory=list)
    suggestions: list[dict] = field(default_factory=list)
    statuses: dict[str, tuple[str, str]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


_WORDS = ("policy procedure committee review annual report faculty student assessment outcome budget audit "
          "governance board minutes catalog handbook program learning library advising enrollment retention "
          "planning mission evaluation compliance accreditation evidence survey data").split()


def _passage_text(rng: random.Random) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(40, 90))).capitalize() + "."


def seed_database(url: str, workspace_id: uuid.UUID, selection_id: uuid.UUID, user_id: uuid.UUID,
                  as_of: date) -> Seeded:
    """~1,000 documents with ready revisions and ~10 passages each, ~8,000 suggestions, ~3,000
    links, ~200 statuses: SQLAlchemy Core bulk inserts into a3e's tables."""
    from sqlalchemy import create_engine, insert, text

    from a3e.evidence.models import Blob, Document, Passage, Revision
    from a3e.review.models import EvidenceLink, StandardStatus, Suggestion

    rng = random.Random(SEED)
    started = time.perf_counter()
    codes = [item["id"] for item in catalog_items()]
    sections = {code: code.split(".")[0] for code in codes}
    seeded = Seeded(as_of, codes, sections)
    now = datetime.now(timezone.utc)
    blobs, documents, revisions, passages = [], [], [], []
    passage_ids_by_document: dict[uuid.UUID, list[int]] = {}
    passage_rows: dict[int, dict] = {}
    passage_id = 0
    for index in range(DOCUMENTS):
        document_id, revision_id = uuid.uuid4(), uuid.uuid4()
        sha = hashlib.sha256(f"bench-document-{index}".encode()).hexdigest()
        age_days = rng.randint(0, 3650)  # dates spread over 10 years
        dated = as_of - timedelta(days=age_days)
        kind = rng.random()
        document_date = dated if kind < 0.75 else None
        effective_date = dated if 0.75 <= kind < 0.9 else None  # else: neither, the upload date counts
        review = rng.random()
        review_date = None if review < 0.45 else (as_of - timedelta(days=rng.randint(1, 900)) if review < 0.6
                                                 else as_of + timedelta(days=rng.randint(1, 1500)))
        created_at = now - timedelta(days=rng.randint(0, 400), seconds=rng.randint(0, 86_400))
        blobs.append({"sha256": sha, "size_bytes": rng.randint(20_000, 4_000_000), "media_type": "application/pdf",
                      "created_at": created_at})
        documents.append({"id": document_id, "workspace_id": workspace_id, "title": f"Evidence document {index:04d}",
                          "description": None, "document_date": document_date, "effective_date": effective_date,
                          "review_date": review_date, "owner": rng.choice(["Provost", "Registrar", "IR", "Finance"]),
                          "current_revision_id": revision_id, "revision_count": 1, "created_by_id": user_id,
                          "created_at": created_at, "updated_at": created_at})
        count = rng.randint(8, 12)
        revisions.append({"id": revision_id, "document_id": document_id, "workspace_id": workspace_id, "number": 1,
                          "sha256": sha, "size_bytes": blobs[-1]["size_bytes"], "filename": f"evidence-{index:04d}.pdf",
                          "kind": "pdf", "media_type": "application/pdf", "status": "ready", "status_detail": None,
                          "status_changed_at": created_at, "attempts": 1, "page_count": count,
                          "passage_count": count, "character_count": 0, "created_by_id": user_id,
                          "created_at": created_at, "processed_at": created_at})
        offset = 0
        ids = []
        for ordinal in range(count):
            passage_id += 1
            body = _passage_text(rng)
            row = {"id": passage_id, "revision_id": revision_id, "document_id": document_id,
                   "workspace_id": workspace_id, "ordinal": ordinal, "text": body, "page": ordinal + 1,
                   "char_start": offset, "char_end": offset + len(body), "heading": f"Part {ordinal + 1}",
                   "location": f"p. {ordinal + 1}"}
            offset += len(body) + 2
            passages.append(row)
            passage_rows[passage_id] = row
            ids.append(passage_id)
        revisions[-1]["character_count"] = offset
        passage_ids_by_document[document_id] = ids
        seeded.documents[document_id] = {"document_date": document_date, "effective_date": effective_date,
                                         "review_date": review_date, "created_at": created_at}

    # Suggestions: ~8,000, concentrated on some standards (a skewed weight), none at all for ~60.
    weights = [0.0 if rng.random() < 0.12 else rng.paretovariate(1.3) for _ in codes]
    all_passages = list(passage_rows)
    taken: set[tuple[str, int]] = set()
    suggestions = []
    while len(suggestions) < 8000:
        code = rng.choices(codes, weights)[0]
        pid = rng.choice(all_passages)
        if (code, pid) in taken:
            continue
        taken.add((code, pid))
        roll = rng.random()
        status = "pending" if roll < 0.6 else ("accepted" if roll < 0.85 else "rejected")
        passage = passage_rows[pid]
        suggestions.append({"id": len(suggestions) + 1, "workspace_id": workspace_id, "selection_id": selection_id,
                            "standard_code": code, "passage_id": pid, "document_id": passage["document_id"],
                            "revision_id": passage["revision_id"],
                            "passage_digest": hashlib.sha256(passage["text"].encode()).hexdigest(),
                            "confidence": round(rng.uniform(0.35, 0.97), 3), "rank": rng.randint(1, 10),
                            "engine": "bm25", "status": status,
                            "reason": "not relevant" if status == "rejected" and rng.random() < 0.5 else None,
                            "decided_by_id": None if status == "pending" else user_id,
                            "decided_at": None if status == "pending" else now, "created_at": now})
    # Links: every accepted suggestion (some below 0.5: low confidence), then manual ones up to ~3,000,
    # a fifth of them for a whole document.
    links = []
    for suggestion in suggestions:
        if suggestion["status"] == "accepted":
            links.append({"id": uuid.uuid4(), "workspace_id": workspace_id, "selection_id": selection_id,
                          "standard_code": suggestion["standard_code"], "document_id": suggestion["document_id"],
                          "passage_id": suggestion["passage_id"], "origin": "suggested",
                          "confidence": suggestion["confidence"], "suggestion_id": suggestion["id"], "note": None,
                          "created_by_id": user_id, "created_at": now})
    manual_keys: set[tuple] = set()
    document_ids = list(seeded.documents)
    while len(links) < 3000:
        code = rng.choices(codes, weights)[0]
        document_id = rng.choice(document_ids)
        pid = None if rng.random() < 0.2 else rng.choice(passage_ids_by_document[document_id])
        key = (code, pid) if pid is not None else (code, document_id)
        if key in manual_keys or (pid is not None and (code, pid) in taken):
            continue
        manual_keys.add(key)
        links.append({"id": uuid.uuid4(), "workspace_id": workspace_id, "selection_id": selection_id,
                      "standard_code": code, "document_id": document_id, "passage_id": pid, "origin": "manual",
                      "confidence": None, "suggestion_id": None, "note": None, "created_by_id": user_id,
                      "created_at": now})
    statuses = []
    for code in rng.sample(codes, 200):
        workflow = rng.choice(["not_started", "in_progress", "in_review", "approved"])
        judgment = rng.choice(["compliant", "compliant", "partially_compliant", "non_compliant", "not_applicable",
                               "not_assessed"])
        statuses.append({"id": uuid.uuid4(), "workspace_id": workspace_id, "selection_id": selection_id,
                         "standard_code": code, "workflow": workflow, "judgment": judgment, "note": None,
                         "updated_by_id": user_id, "updated_at": now})
        seeded.statuses[code] = (workflow, judgment)
    seeded.links, seeded.suggestions = links, suggestions

    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.begin() as conn:
            for model, rows in ((Blob, blobs), (Document, documents), (Revision, revisions), (Passage, passages),
                                (Suggestion, suggestions), (EvidenceLink, links), (StandardStatus, statuses)):
                for start in range(0, len(rows), 2000):
                    conn.execute(insert(model.__table__), rows[start:start + 2000])
            # Explicit ids were given: move the sequences past them, as the service's own inserts need.
            for table in ("passages", "suggestions"):
                conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))"))
            # Written behind the service's back: say so, as every writer must (a3e.review.versions).
            conn.execute(text("UPDATE workspaces SET review_version = review_version + 1 WHERE id = :id"),
                         {"id": workspace_id})
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM ANALYZE"))
    finally:
        engine.dispose()
    seeded.counts = {"documents": len(documents), "revisions": len(revisions), "passages": len(passages),
                     "suggestions": len(suggestions), "links": len(links), "statuses": len(statuses),
                     "suggestions_by_status": dict(Counter(s["status"] for s in suggestions)),
                     "links_by_origin": dict(Counter(link["origin"] for link in links)),
                     "low_confidence_links": sum(1 for link in links if link["origin"] == "suggested"
                                                 and link["confidence"] < LOW_CONFIDENCE),
                     "whole_document_links": sum(1 for link in links if link["passage_id"] is None),
                     "documents_past_review": sum(1 for d in seeded.documents.values()
                                                  if d["review_date"] is not None and d["review_date"] < as_of)}
    seeded.seconds = time.perf_counter() - started
    return seeded


# ---------------------------------------------------------------------------------------------
# The expected answers, computed here from the seeded data (the rules of src/a3e/review/matrix.py's
# docstring, written again independently)


def _years_before(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:
        return day.replace(year=day.year - years, day=28)


def expected(seeded: Seeded) -> dict:
    as_of = seeded.as_of
    stale_before = _years_before(as_of, STALE_YEARS)
    by_code: dict[str, list[dict]] = defaultdict(list)
    for link in seeded.links:
        by_code[link["standard_code"]].append(link)
    pending = Counter(s["standard_code"] for s in seeded.suggestions if s["status"] == "pending")
    rows: dict[str, dict] = {}
    for code in seeded.codes:
        links = by_code.get(code, [])
        docs = [seeded.documents[link["document_id"]] for link in links]
        row = {"accepted_links": len(links), "documents": len({link["document_id"] for link in links}),
               "pending_suggestions": pending.get(code, 0), "section": seeded.sections[code]}
        if links:
            def strong(link: dict) -> bool:
                return link["origin"] == "manual" or link["confidence"] >= LOW_CONFIDENCE

            def current(doc: dict) -> bool:
                return doc["review_date"] is None or doc["review_date"] >= as_of

            dated = [d["document_date"] or d["effective_date"] for d in docs
                     if (d["document_date"] or d["effective_date"]) is not None]
            newest = max(dated) if dated else max(d["created_at"] for d in docs).date()
            light = "green" if any(strong(l) and current(d) for l, d in zip(links, docs)) else "amber"
            if newest < stale_before:
                light = "amber"
            row.update(gap_status=light, newest_evidence=newest.isoformat())
        else:
            row.update(gap_status="amber" if row["pending_suggestions"] else "red", newest_evidence=None)
        workflow, judgment = seeded.statuses.get(code, ("not_started", "not_assessed"))
        row.update(workflow=workflow, judgment=judgment)
        rows[code] = row
    linked = {link["document_id"] for link in seeded.links}
    lint = Counter()
    lint["document_unlinked"] = sum(1 for d in seeded.documents if d not in linked)
    lint["evidence_expired"] = sum(1 for d in linked if seeded.documents[d]["review_date"] is not None
                                   and seeded.documents[d]["review_date"] < as_of)
    lint["compliant_without_evidence"] = sum(1 for code, r in rows.items()
                                             if r["judgment"] == "compliant" and r["accepted_links"] == 0)
    lint["stale_evidence"] = sum(1 for r in rows.values()
                                 if r["newest_evidence"] and date.fromisoformat(r["newest_evidence"]) < stale_before)
    lights = Counter(r["gap_status"] for r in rows.values())
    return {"rows": rows, "lint": dict(lint), "lights": dict(lights), "standards": len(rows)}


def verify(port: int, key: str, catalog: str, truth: dict, as_of: date) -> dict:
    """Every standard's row of the CSV export and of /gaps, /matrix's counts and filters, against
    the expected answers; raises on the first disagreement."""
    problems: list[str] = []

    def get(path: str) -> tuple[int, bytes]:
        import http.client

        connection = http.client.HTTPConnection(HOST, port, timeout=60)
        try:
            connection.request("GET", f"/api/v1/workspaces/{truth['workspace_id']}{path}",
                               headers={"Authorization": f"Bearer {key}"})
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    fill = {"catalog": catalog, "as_of": as_of.isoformat()}
    status, raw = get(ENDPOINTS[3][2].format(**fill))
    if status != 200:
        raise RuntimeError(f"export: HTTP {status} {raw[:200]!r}")
    reader = csv.DictReader(io.StringIO(raw.decode()))
    exported = {row["code"]: row for row in reader}
    rows = truth["rows"]
    if set(exported) != set(rows):
        problems.append(f"export: {len(exported)} standards, expected {len(rows)}")
    for code, want in rows.items():
        got = exported.get(code)
        if got is None:
            continue
        for name in ("gap_status", "accepted_links", "documents", "pending_suggestions", "section", "workflow",
                     "judgment"):
            if str(got[name]) != str(want[name]):
                problems.append(f"export {code} {name}: {got[name]!r}, expected {want[name]!r}")
        if (got["newest_evidence"] or None) != want["newest_evidence"]:
            problems.append(f"export {code} newest_evidence: {got['newest_evidence']!r}, expected {want['newest_evidence']!r}")

    status, raw = get(ENDPOINTS[2][2].format(**fill))
    gaps = json.loads(raw) if status == 200 else {}
    if status != 200:
        problems.append(f"gaps: HTTP {status}")
    else:
        lights = {item["code"]: item["gap_status"] for item in gaps["standards"]}
        wrong = [code for code, want in rows.items() if lights.get(code) != want["gap_status"]]
        if wrong or len(lights) != len(rows):
            problems.append(f"gaps: {len(wrong)} lights differ (e.g. {wrong[:3]}), {len(lights)} standards")
        catalog_counts = gaps["counts"]["catalog"]
        if catalog_counts["standards"] != len(rows) or sum(catalog_counts[c] for c in ("green", "amber", "red")) != len(rows):
            problems.append(f"gaps counts do not add up to {len(rows)}: {catalog_counts}")
        for light, count in truth["lights"].items():
            if catalog_counts.get(light) != count:
                problems.append(f"gaps: {catalog_counts.get(light)} {light}, expected {count}")
        section_counts = gaps["counts"]["sections"]
        if len(section_counts) != SECTIONS or any(s["standards"] != STANDARDS_PER_SECTION + 1
                                                  for s in section_counts.values()):
            problems.append(f"gaps: sections {sorted(section_counts)} with "
                            f"{sorted({s['standards'] for s in section_counts.values()})} standards each")
        lint = Counter(problem["rule"] for problem in gaps["lint"])
        for rule, count in truth["lint"].items():
            if lint.get(rule, 0) != count:
                problems.append(f"gaps lint {rule}: {lint.get(rule, 0)}, expected {count}")

    for key_name, want_total in (("matrix", len(rows)), ("matrix_amber", truth["lights"].get("amber", 0))):
        path = next(p for k, _, p, _ in ENDPOINTS if k == key_name).format(**fill)
        status, raw = get(path)
        if status != 200:
            problems.append(f"{key_name}: HTTP {status}")
            continue
        page = json.loads(raw)
        if page["total"] != want_total or len(page["items"]) != min(50, want_total):
            problems.append(f"{key_name}: total {page['total']} with {len(page['items'])} items, expected {want_total}")
        for item in page["items"]:
            want = rows.get(item["code"])
            if want is None or item["gap_status"] != want["gap_status"] or item["accepted_links"] != want["accepted_links"] \
                    or item["pending_suggestions"] != want["pending_suggestions"]:
                problems.append(f"{key_name}: row {item['code']} differs")
                break
            if key_name == "matrix_amber" and item["gap_status"] != "amber":
                problems.append(f"{key_name}: a {item['gap_status']} row in the amber filter")
                break
    if problems:
        raise RuntimeError(f"wrong answers ({len(problems)}): " + "; ".join(problems[:8]))
    return {"standards": len(rows), "lights": truth["lights"], "lint": truth["lint"],
            "sections": SECTIONS, "rows_checked": len(exported), "gaps_bytes": len(json.dumps(gaps))}


# ---------------------------------------------------------------------------------------------
# Load


def run_wrk(url: str, *, duration: float, connections: int, key: str, script: Path) -> dict:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--timeout", "10s", "-s", str(script),
           "-H", f"Authorization: Bearer {key}", url]
    process = spawn(cmd, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = process.communicate(timeout=duration + 60)
    finally:
        stop(process)
    for line in out.decode(errors="replace").splitlines():
        if line.startswith("WRKJSON "):
            data = json.loads(line[len("WRKJSON "):])
            seconds = data["duration_us"] / 1e6
            data["rps"] = data["requests"] / seconds if seconds else 0.0
            data["errors_total"] = sum(data["errors"].values())
            return data
    raise RuntimeError(f"no result from wrk: {err.decode(errors='replace')[-300:]}")


def measured_run(server: Server, cluster: Cluster, url: str, **load) -> dict:
    server_before, pg_before = _cpu_by_pid(server.process.pid), _cpu_by_pid(cluster.process.pid)
    machine_before, wrk_before, started = psutil.cpu_times(), _children_cpu(), time.perf_counter()
    data = run_wrk(url, **load)
    wall = time.perf_counter() - started
    machine_after, wrk_cpu = psutil.cpu_times(), _children_cpu() - wrk_before
    server_after = _cpu_by_pid(server.process.pid)
    server_user, server_system = _cpu_split(server_before, server_after)
    server_cpu = server_user + server_system
    # Each process's share of a core, busiest first: with two workers, how evenly wrk's connections
    # were spread over them (the kernel hands each new connection to whichever worker accepts it).
    per_process = sorted(((sum(v) - sum(server_before.get(pid, (0.0, 0.0)))) / wall for pid, v in server_after.items()),
                         reverse=True)
    pg_cpu = _cpu_delta(pg_before, _cpu_by_pid(cluster.process.pid))
    total = sum(machine_after) - sum(machine_before)
    busy = (_busy(machine_after) - _busy(machine_before)) / total if total else None
    foreign = None if busy is None else max(0.0, busy * (psutil.cpu_count() or 1) - (server_cpu + pg_cpu + wrk_cpu) / wall)
    data.update(server_processes_cpu=[round(x, 3) for x in per_process if x >= 0.01], server_cpu=server_cpu / wall, server_cpu_seconds=server_cpu, pg_cpu=pg_cpu / wall,
                pg_cpu_seconds=pg_cpu, wrk_cpu=wrk_cpu / wall, machine_busy=busy, foreign_cpu=foreign,
                loadavg1=os.getloadavg()[0])
    return data


def quiet_run(server: Server, cluster: Cluster, url: str, retries: int = 2, **load) -> dict:
    """`measured_run`, done again (up to `retries` times, within bench_auth's waiting budget) when
    other processes took more than a quarter of a core meanwhile."""
    data = measured_run(server, cluster, url, **load)
    attempts = 1
    while (data.get("foreign_cpu") or 0) > FOREIGN_LIMIT and attempts <= retries and _quiet_budget["seconds"] > 0:
        log(f"other processes took {data['foreign_cpu'] * 100:.0f} % of a core: waiting for quiet, then again")
        wait_quiet(30.0)
        data = measured_run(server, cluster, url, **load)
        attempts += 1
    data["attempts"] = attempts
    return data


def _fmt(data: dict) -> str:
    lat = data["latency_us"]
    per_request = data["server_cpu_seconds"] / max(data["requests"], 1) * 1000
    return (f"{data['rps']:.1f} req/s, p50 {lat['p50'] / 1000:.0f} ms, p95 {lat['p95'] / 1000:.0f} ms, "
            f"p99 {lat['p99'] / 1000:.0f} ms, errors {data['errors_total']}, server CPU {data['server_cpu'] * 100:.0f} % "
            f"{[round(x * 100) for x in data['server_processes_cpu']]} "
            f"({per_request:.1f} ms/req), PostgreSQL {data['pg_cpu'] * 100:.0f} %, other processes "
            f"{(data['foreign_cpu'] or 0) * 100:.0f} %")


def figures(runs: list[dict]) -> dict:
    return {
        "n": len(runs),
        "requests": sum(r["requests"] for r in runs),
        "errors": sum(r["errors_total"] for r in runs),
        "rps": median([r["rps"] for r in runs]),
        "p50": median([r["latency_us"]["p50"] / 1e6 for r in runs]),
        "p95": median([r["latency_us"]["p95"] / 1e6 for r in runs]),
        "p95_max": max(r["latency_us"]["p95"] / 1e6 for r in runs),
        "p99": median([r["latency_us"]["p99"] / 1e6 for r in runs]),
        "max": max(r["latency_us"]["max"] / 1e6 for r in runs),
        "server_cpu": median([r["server_cpu"] for r in runs]),
        "processes_cpu": [median(values) for values in _by_position([r.get("server_processes_cpu") or [] for r in runs])],
        "pg_cpu": median([r["pg_cpu"] for r in runs]),
        "server_ms": median([r["server_cpu_seconds"] / r["requests"] * 1000 for r in runs if r["requests"]]),
        "pg_ms": median([r["pg_cpu_seconds"] / r["requests"] * 1000 for r in runs if r["requests"]]),
        "foreign_cpu": median([r["foreign_cpu"] for r in runs if r.get("foreign_cpu") is not None]),
        "bytes_per_response": median([r["bytes"] / r["requests"] for r in runs if r["requests"]]),
    }


def grouped(runs: dict) -> dict[tuple[str, str, int], dict]:
    """(server key, endpoint key, connections) → figures."""
    groups: dict[tuple[str, str, int], list[dict]] = defaultdict(list)
    for server_key, entry in runs.items():
        for run in entry["runs"]:
            groups[(server_key, run["endpoint"], run["connections"])].append(run)
    return {group: figures(items) for group, items in groups.items()}


def target_met(runs: dict, connections: int) -> bool | None:
    """Met when, at `connections`, some server configuration keeps p95 ≤ 200 ms on every judged
    endpoint with no errors."""
    table = grouped(runs)
    judged = [key for key, _, _, counts in ENDPOINTS if counts]
    verdicts = []
    for server_key in runs:
        mine = [table.get((server_key, endpoint, connections)) for endpoint in judged]
        if all(mine):
            verdicts.append(all(f["p95"] <= TARGET_P95_S and not f["errors"] for f in mine))
    return any(verdicts) if verdicts else None


# ---------------------------------------------------------------------------------------------
# Where the time goes


REVIEW_LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("access-log line", ("(logging/__init__.py)", "a3e/core/logging.py")),
]
INNER_LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("psycopg (driver: send, wait for, parse rows)", ("psycopg/", "psycopg_binary/", "psycopg_c/")),
    ("SQLAlchemy ORM (Session, loading objects)", ("sqlalchemy/orm/",)),
    ("SQLAlchemy Core (compile, execute, result rows)", ("sqlalchemy/",)),
    ("a3e review: build_matrix / lint / counts (Python)", ("a3e/review/",)),
    ("a3e standards: get_catalog, catalog views", ("a3e/standards/",)),
    ("a3e auth, scoping, session", ("a3e/auth/", "a3e/workspaces/", "a3e/apikeys/", "a3e/core/")),
    ("pydantic / FastAPI response serialization (jsonable_encoder, JSON)", ("pydantic", "fastapi/encoders.py",
                                                                          "(json/", "fastapi/routing.py")),
    ("FastAPI / Starlette / uvicorn other", ("fastapi/", "starlette/", "uvicorn/", "anyio/")),
]
OTHER = "event loop, threads and other"
HOT = [
    ("build_matrix (all of it)", ("build_matrix (",)),
    ("  catalog_standards (500 custom standards, ORM rows)", ("catalog_standards (",)),
    ("  get_catalog", ("get_catalog (",)),
    ("lint (all of it)", ("lint (",)),
    ("counts", ("counts (",)),
    ("StandardRow.as_dict", ("as_dict (",)),
    ("jsonable_encoder / serialize_response", ("jsonable_encoder (", "serialize_response (")),
    ("psycopg execute / fetch (incl. waiting for PostgreSQL)", ("execute (psycopg/cursor.py)", "fetchall (psycopg/")),
    ("csv writer + csv_safe", ("csv_safe (", "writerows (")),
]


def analyze_profile(raw: str) -> dict:
    buckets: Counter[str] = Counter()
    hot: Counter[str] = Counter()
    self_frames: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        if stack.startswith("thread ("):
            stack = stack.partition(";")[2]
        stack = scrub_path(stack)
        total += count
        layer = next((name for name, marks in REVIEW_LAYERS if any(m in stack for m in marks)), None)
        if layer is None:
            layer = OTHER
            for frame in reversed(stack.split(";")):
                found = next((name for name, marks in INNER_LAYERS if any(m in frame for m in marks)), None)
                if found:
                    layer = found
                    break
        buckets[layer] += count
        self_frames[stack.rsplit(";", 1)[-1]] += count
        for name, marks in HOT:
            if any(m in stack for m in marks):
                hot[name] += count
    if not total:
        return {"samples": 0}
    return {"samples": total, "buckets": [(name, n / total) for name, n in buckets.most_common()],
            "hotspots": [(name, hot[name] / total) for name, _ in HOT if hot[name]],
            "top_self": [(frame, n / total) for frame, n in self_frames.most_common(12)]}


def profile(server: Server, url: str, key: str, *, seconds: float, connections: int, work: Path) -> dict:
    import shutil
    import sys

    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        return {"error": "py-spy is not installed"}
    out = work / "profile-review.txt"
    rate = 200
    load = spawn(["wrk", "-t1", f"-c{connections}", f"-d{seconds + 4:g}s", "--timeout", "10s",
                  "-H", f"Authorization: Bearer {key}", url], env=clean_env(), stdout=subprocess.PIPE,
                 stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.5)
        spy = spawn([py_spy, "record", "--pid", str(server.process.pid), "--duration", f"{int(seconds)}",
                     "--rate", str(rate), "--gil", "--threads", "--nolineno", "--format", "raw", "--output", str(out)],
                    env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            _, err = spy.communicate(timeout=seconds + 30)
        finally:
            stop(spy)
        load.communicate(timeout=seconds + 30)
    finally:
        stop(load)
    if not out.exists():
        message = err.decode(errors="replace").strip().splitlines()[0] if err.strip() else "no output"
        return {"error": "py-spy produced no profile: " + clean_text(message)}
    result = analyze_profile(out.read_text(errors="replace"))
    result.update(seconds=int(seconds), rate=rate, connections=connections)
    result["gil_busy"] = min(1.0, result["samples"] / (rate * int(seconds))) if result.get("samples") else None
    return result


def split_in_process(url: str, workspace_id: uuid.UUID, selection_id: uuid.UUID, user_id: uuid.UUID,
                     as_of: date, repeats: int = 15) -> dict:
    """One /gaps request's work, step by step, in this process against the same database: the
    matrix's SQL alone (timed at PostgreSQL too, with EXPLAIN ANALYZE), build_matrix, lint, the
    response's JSON. Medians of `repeats`; each step is the service's own function."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.orm import Session

    from a3e.review import matrix as service
    from a3e.workspaces.scoping import WorkspaceAccess

    import re

    from sqlalchemy import event

    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    timings: dict[str, list[float]] = defaultdict(list)
    result: dict = {}
    # Each statement's time at the driver (send, PostgreSQL's work, fetching the rows), by phase.
    statements: list[tuple[str, float, int]] = []

    @event.listens_for(engine, "before_cursor_execute")
    def _before(conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
        conn.info["a3e_bench_started"] = time.perf_counter()

    @event.listens_for(engine, "after_cursor_execute")
    def _after(conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
        found = re.search(r"\bFROM\s+(\w+)", statement)
        statements.append((found.group(1) if found else statement.split()[0],
                           time.perf_counter() - conn.info.pop("a3e_bench_started"), cursor.rowcount))

    def sql_part(phase: str, since: int) -> None:
        mine = statements[since:]
        timings[f"{phase}: SQL"].append(sum(t for _, t, _ in mine))
        result.setdefault("statements", {})[phase] = [(name, rows) for name, _, rows in mine]
        for index, (name, elapsed, _) in enumerate(mine):
            timings[f"{phase} #{index + 1} {name}"].append(elapsed)

    from typing import Any

    from pydantic import TypeAdapter

    adapter = TypeAdapter(dict[str, Any])
    try:
        with Session(engine) as session:
            access = _access(session, WorkspaceAccess, workspace_id, user_id)
            for _ in range(repeats):
                since, started = len(statements), time.perf_counter()
                matrix = service.build_matrix(session, access, selection_id, as_of=as_of)
                timings["build_matrix"].append(time.perf_counter() - started)
                sql_part("build_matrix", since)
                since, started = len(statements), time.perf_counter()
                problems = service.lint(session, access, matrix)
                timings["lint"].append(time.perf_counter() - started)
                sql_part("lint", since)
                session.expunge_all()  # as a new request's session would start: nothing cached
                started = time.perf_counter()
                body = {"catalog_id": matrix.standards.catalog_id, "as_of": matrix.as_of,
                        "counts": service.counts(matrix.rows),
                        "standards": [{"code": r.code, "title": r.title, "section": r.section,
                                       "gap_status": r.light, "reasons": r.reasons} for r in matrix.rows],
                        "lint": problems}
                timings["counts + the /gaps body (dicts)"].append(time.perf_counter() - started)
                # What FastAPI does with a `-> dict[str, Any]` route's answer: validate it against the
                # annotation (in the thread pool), then pydantic's dump_json (on the event loop).
                started = time.perf_counter()
                adapter.dump_json(adapter.validate_python(body))
                timings["FastAPI's serialization of `-> dict[str, Any]` (validate + dump_json)"].append(
                    time.perf_counter() - started)
                # What-if: the same body as plain JSON (json.dumps, UUID and date as text).
                started = time.perf_counter()
                plain = json.dumps(body, default=str, separators=(",", ":")).encode()
                timings["what-if: json.dumps of the same body"].append(time.perf_counter() - started)
                result["gaps_body_bytes"] = len(plain)
                session.rollback()
            result["lint_problems"] = len(problems)
        # The aggregate over links at PostgreSQL itself.
        with engine.connect() as conn:
            plan = conn.execute(text(
                "EXPLAIN (ANALYZE, FORMAT JSON) SELECT l.standard_code, count(l.id), count(DISTINCT l.document_id), "
                "max(coalesce(d.document_date, d.effective_date)), max(d.created_at) FROM evidence_links l "
                "JOIN documents d ON d.id = l.document_id WHERE l.workspace_id = :w AND l.selection_id = :s "
                "GROUP BY l.standard_code"), {"w": workspace_id, "s": selection_id}).scalar_one()
            result["links_aggregate_sql_ms"] = plan[0]["Execution Time"]
            plan = conn.execute(text(
                "EXPLAIN (ANALYZE, FORMAT JSON) SELECT d.id, d.title FROM documents d WHERE d.workspace_id = :w AND "
                "d.id NOT IN (SELECT document_id FROM evidence_links WHERE selection_id = :s) ORDER BY d.title"),
                {"w": workspace_id, "s": selection_id}).scalar_one()
            result["lint_unlinked_sql_ms"] = plan[0]["Execution Time"]
    finally:
        engine.dispose()
    result["steps_ms"] = {name: median(values) * 1000 for name, values in timings.items()}
    result["repeats"] = repeats
    return result


def _access(session, access_class, workspace_id: uuid.UUID, user_id: uuid.UUID):
    """The owner's WorkspaceAccess, as the scoping helper builds it (no principal needed here)."""
    from sqlalchemy import select

    from a3e.workspaces.models import Membership, Workspace
    from a3e.workspaces.permissions import Role

    membership = session.scalars(select(Membership).where(Membership.workspace_id == workspace_id,
                                                          Membership.user_id == user_id)).one()
    return access_class(workspace=session.get(Workspace, workspace_id), principal=None,
                        role=Role(membership.role), membership=membership)


# ---------------------------------------------------------------------------------------------


WRITE_INTERVAL_S = 1.0


class StatusWriter:
    """Changes one standard's workflow status through the API once per `interval` while a load runs
    (a liaison at work): each change bumps the workspace's review version, so every server computes
    the matrix again once per change instead of reusing it."""

    def __init__(self, port: int, token: str, workspace_id: str, code: str, interval: float) -> None:
        import threading

        self.port, self.token, self.code, self.interval = port, token, code, interval
        self.path = f"/api/v1/workspaces/{workspace_id}/standards/{code}/status"
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.writes = 0
        self.failures: list[str] = []

    def _run(self) -> None:
        states = ("in_progress", "not_started")
        while not self.stop_event.wait(self.interval):
            status, body = call(self.port, "PATCH", self.path, {"workflow": states[self.writes % 2]}, token=self.token)
            if status == 200:
                self.writes += 1
            else:
                self.failures.append(f"HTTP {status} {str(body)[:120]}")

    def __enter__(self) -> StatusWriter:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self.thread.join(timeout=30)
        # Leave the standard as the seed had it (no status row's values), so the answers check out.
        _expect("reset status", call(self.port, "PATCH", self.path, {"workflow": "not_started"}, token=self.token), 200)


def with_writes(servers: list[Server], cluster: Cluster, urls: dict[str, str], key: str, token: str,
                workspace_id: str, code: str, *, connections: list[int], duration: float, script: Path) -> dict:
    """The judged reads again, on every server, while a status changes once a second."""
    result: dict = {"interval_s": WRITE_INTERVAL_S, "code": code, "runs": {}, "writes": 0, "failures": []}
    judged = [endpoint for endpoint, _, _, counts in ENDPOINTS if counts]
    for conns in connections:
        for endpoint in judged:
            for server in servers:
                with StatusWriter(servers[0].port, token, workspace_id, code, WRITE_INTERVAL_S) as writer:
                    data = quiet_run(server, cluster, f"http://{HOST}:{server.port}{urls[endpoint]}",
                                     duration=duration, connections=conns, key=key, script=script)
                data.update(round=0, connections=conns, endpoint=endpoint, writes=writer.writes)
                result["writes"] += writer.writes
                result["failures"] += writer.failures
                result["runs"].setdefault(server.key, {"label": server.label, "workers": server.workers,
                                                       "runs": []})["runs"].append(data)
                log(f"with writes {endpoint} c={conns} {server.key} ({writer.writes} writes): {_fmt(data)}")
    return result


def review(*, rounds: int, duration: float, warmup: float, connections: list[int], workers: list[int],
           profile_mode: str, profile_seconds: float) -> dict:
    result: dict = {"rounds": rounds, "duration": duration, "warmup": warmup, "connections": connections,
                    "workers": workers, "target_p95_s": TARGET_P95_S, "cpus": os.cpu_count(), "runs": {},
                    "endpoints": [[key, label, judged] for key, label, _, judged in ENDPOINTS]}
    # Waiting for a quiet machine is bounded: at most 150 s of this section's run time.
    _quiet_budget["seconds"] = min(_quiet_budget["seconds"], 150.0)
    result["quiet_at_start_waited_s"] = wait_quiet(30.0)
    as_of = datetime.now(timezone.utc).date()
    result["as_of"] = as_of.isoformat()
    with tempfile.TemporaryDirectory(prefix="a3e-bench-review-") as tmp:
        work = Path(tmp)
        script = work / "wrk_p95.lua"
        script.write_text(WRK_LUA)
        cluster: Cluster | None = None
        servers: list[Server] = []
        try:
            cluster = start_cluster()
            result["postgres"] = describe_cluster(cluster)
            log(f"PostgreSQL {result['postgres']['server_version']}; migrating")
            migrate(server_env(work, cluster, 1), work)
            servers = [Server(f"a3e_w{n}", f"`a3e serve`, WEB_CONCURRENCY={n}", n, [A3E, "serve", "--host", HOST],
                              server_env(work, cluster, n)) for n in workers]
            for server in servers:
                start_server(server, work)
            first = servers[0]

            log("seeding through the API: owner, workspace, read-only API key, custom catalog of 500 standards")
            started = time.perf_counter()
            password = "bench-" + uuid.uuid4().hex
            token = register_and_login(first.port, "owner@example.edu", password)["access_token"]
            me = _expect("me", call(first.port, "GET", "/api/v1/auth/me", token=token), 200)
            workspace = _expect("workspace", call(first.port, "POST", "/api/v1/workspaces", {"name": "Bench College"},
                                                  token=token), 201)
            key = _expect("API key", call(first.port, "POST", f"/api/v1/workspaces/{workspace['id']}/api-keys",
                                          {"name": "bench reader", "scope": "read"}, token=token), 201)["key"]
            catalog = import_catalog(first.port, workspace["id"], token)
            result["catalog_import_s"] = time.perf_counter() - started
            workspace_id, selection_id, user_id = uuid.UUID(workspace["id"]), uuid.UUID(catalog["id"]), uuid.UUID(me["id"])

            log(f"inserting {DOCUMENTS} documents with their revisions, passages, suggestions, links and statuses")
            seeded = seed_database(cluster.url(), workspace_id, selection_id, user_id, as_of)
            result["seed"] = {**seeded.counts, "seconds": seeded.seconds}
            log(f"seeded in {seeded.seconds:.1f}s: {seeded.counts}")
            truth = expected(seeded)
            truth["workspace_id"] = workspace["id"]
            result["expected"] = {"lights": truth["lights"], "lint": truth["lint"], "standards": truth["standards"]}
            for server in servers:
                result.setdefault("verified_before", {})[server.key] = verify(server.port, key, catalog["id"], truth, as_of)
            log(f"answers verified on every server: {truth['lights']}, lint {truth['lint']}")

            fill = {"catalog": catalog["id"], "as_of": as_of.isoformat()}
            urls = {endpoint: f"/api/v1/workspaces/{workspace['id']}" + path.format(**fill)
                    for endpoint, _, path, _ in ENDPOINTS}
            for server in servers:  # warm-up: every endpoint, the fewest connections
                for endpoint in urls:
                    run_wrk(f"http://{HOST}:{server.port}{urls[endpoint]}", duration=warmup,
                            connections=min(connections), key=key, script=script)
            for round_index in range(rounds):
                order = servers if round_index % 2 == 0 else servers[::-1]
                for conns in connections:
                    for endpoint in urls:
                        for server in order:
                            data = quiet_run(server, cluster, f"http://{HOST}:{server.port}{urls[endpoint]}",
                                             duration=duration, connections=conns, key=key, script=script)
                            data.update(round=round_index, connections=conns, endpoint=endpoint)
                            result["runs"].setdefault(server.key, {"label": server.label, "workers": server.workers,
                                                                   "runs": []})["runs"].append(data)
                            log(f"round {round_index + 1}/{rounds} {endpoint} c={conns} {server.key}: {_fmt(data)}")
            token = _expect("login", call(first.port, "POST", "/api/v1/auth/login",
                                          {"email": "owner@example.edu", "password": password}), 200)["access_token"]
            code = next(c for c in seeded.codes if c not in seeded.statuses)
            log(f"the judged reads again, with {code}'s status changed through the API every {WRITE_INTERVAL_S:g} s")
            result["with_writes"] = with_writes(servers, cluster, urls, key, token, workspace["id"], code,
                                                connections=connections, duration=duration, script=script)
            for server in servers:
                result.setdefault("verified_after", {})[server.key] = verify(server.port, key, catalog["id"], truth, as_of)
            log("answers verified again after the load")

            result["target_met"] = {str(c): target_met(result["runs"], c) for c in connections}
            missed = not all(result["target_met"].values())
            if profile_mode == "always" or (profile_mode == "auto" and missed):
                single = next((s for s in servers if s.workers == 1), servers[0])
                for server in servers:
                    if server is not single:
                        stop(server.process)
                try:
                    log("in-process split of one /gaps request's work")
                    result["split"] = split_in_process(cluster.url(), workspace_id, selection_id, user_id, as_of)
                except Exception as exc:
                    result["split"] = {"error": f"{exc.__class__.__name__}: {clean_text(str(exc))[:300]}"}
                for endpoint in ("gaps", "matrix"):
                    log(f"profiling {single.key} under {endpoint} with py-spy for {profile_seconds:g}s")
                    try:
                        result.setdefault("profiles", {})[endpoint] = profile(
                            single, f"http://{HOST}:{single.port}{urls[endpoint]}", key, seconds=profile_seconds,
                            connections=min(connections), work=work)
                    except Exception as exc:
                        result.setdefault("profiles", {})[endpoint] = {
                            "error": f"{exc.__class__.__name__}: {clean_text(str(exc))[:300]}"}
        finally:
            for server in servers:
                if server.process is not None:
                    stop(server.process)
            if cluster is not None:
                stop_cluster(cluster)
    return result
