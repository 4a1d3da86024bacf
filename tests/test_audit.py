"""The audit log: recorded in the request's transaction, append-only in the database itself, read
and exported by a workspace's owners and admins only. Runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import csv
import io
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from a3e.audit.models import AuditEvent
from a3e.audit.service import (
    CSV_COLUMNS,
    AuditFilters,
    CsvExport,
    csv_safe,
    decode_cursor,
    encode_cursor,
    record_event,
)
from a3e.auth.principal import Principal

# ---------------------------------------------------------------------------------------------
# People, workspaces and keys. Through the API once its endpoints exist (the conftest fixtures);
# until then straight into the database, with access tokens minted as login would.


@dataclass
class Actor:
    id: uuid.UUID
    email: str
    headers: dict[str, str]


class Directory:
    """Makes people and workspaces through the conftest fixtures (the real endpoints) when they
    work, and straight in the database when they don't (yet)."""

    def __init__(self, api, request: pytest.FixtureRequest) -> None:
        self.api = api
        self.request = request
        self.database = api.app.state.database
        self.settings = api.app.state.settings
        self.fixtures_work: dict[str, bool] = {}

    def _through_fixture(self, name: str, *args):
        if self.fixtures_work.get(name) is False:
            return None
        try:
            result = self.request.getfixturevalue(name)(*args)
        except (AssertionError, KeyError, TypeError, ValueError):
            if self.fixtures_work.get(name):
                raise  # it worked before in this test: a real failure
            self.fixtures_work[name] = False
            return None
        self.fixtures_work[name] = True
        return result

    def person(self) -> Actor:
        made = self._through_fixture("make_person", f"person-{uuid.uuid4().hex[:10]}@example.edu")
        if made is not None:
            return Actor(uuid.UUID(str(made.id)), made.email, made.headers)
        from a3e.auth.models import User
        from a3e.core.security import create_access_token

        email = f"person-{uuid.uuid4().hex[:10]}@example.edu"
        with self.database.session() as session:
            user = User(email=email, name="Test Person", password_hash="not-a-hash")
            session.add(user)
            session.commit()
            user_id = user.id
        token, _ = create_access_token(
            self.settings.jwt_secret_key.get_secret_value(), str(user_id), timedelta(minutes=15)
        )
        return Actor(user_id, email, {"Authorization": f"Bearer {token}"})

    def workspace(self, owner: Actor, name: str = "Example College") -> uuid.UUID:
        made = self._through_fixture("make_workspace", owner, name)  # it needs only owner.headers
        if made is not None:
            return uuid.UUID(str(made["id"]))
        from a3e.workspaces.models import Membership, Workspace

        with self.database.session() as session:
            workspace = Workspace(name=name, created_by_id=owner.id)
            session.add(workspace)
            session.flush()
            session.add(Membership(workspace_id=workspace.id, user_id=owner.id, role="owner"))
            session.commit()
            return workspace.id

    def member(self, workspace_id: uuid.UUID, role: str) -> Actor:
        from a3e.workspaces.models import Membership

        person = self.person()
        with self.database.session() as session:
            session.add(Membership(workspace_id=workspace_id, user_id=person.id, role=role))
            session.commit()
        return person

    def api_key(self, workspace_id: uuid.UUID, scope: str = "read_write") -> dict[str, str]:
        from a3e.apikeys.models import ApiKey
        from a3e.core.security import new_token, token_digest

        token = new_token("a3e_")
        with self.database.session() as session:
            session.add(
                ApiKey(workspace_id=workspace_id, name="ci", scope=scope, prefix=token[:10], key_hash=token_digest(token))
            )
            session.commit()
        return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def people(api, request):
    return Directory(api, request)


@pytest.fixture
def owned(people):
    """An owner and their workspace."""
    owner = people.person()
    return owner, people.workspace(owner)


def record(api, workspace_id, action, *, occurred_at: datetime | None = None, **fields) -> int:
    """Record one event in its own transaction, as a request would; returns its id."""
    with api.app.state.database.session() as session:
        event = record_event(session, action, workspace_id=workspace_id, **fields)
        if occurred_at is not None:
            event.occurred_at = occurred_at  # set before the INSERT: the row is never updated
        session.commit()
        return event.id


def log_url(workspace_id) -> str:
    return f"/api/v1/workspaces/{workspace_id}/audit-log"


def read(api, who: Actor, workspace_id, **params) -> dict:
    response = api.get(log_url(workspace_id), params=params, headers=who.headers)
    assert response.status_code == 200, response.text
    return response.json()


def actions(body: dict) -> list[str]:
    return [item["action"] for item in body["items"]]


# ---------------------------------------------------------------------------------------------
# Recording and reading


def test_events_are_listed_newest_first_with_every_field(api, people, owned):
    owner, workspace_id = owned
    target = uuid.uuid4()
    first = record(api, workspace_id, "test.first")
    second = record(
        api,
        workspace_id,
        "member.role_changed",
        actor_user_id=owner.id,
        actor_label=owner.email,
        target_type="member",
        target_id=target,
        details={"from": "viewer", "to": "editor", "user_id": target, "at": datetime(2026, 1, 2, tzinfo=UTC)},
    )
    body = read(api, owner, workspace_id, action="test.*")
    assert [item["id"] for item in body["items"]] == [first]
    body = read(api, owner, workspace_id)
    ours = [item for item in body["items"] if item["id"] in (first, second)]
    assert [item["id"] for item in ours] == [second, first]
    item = ours[0]
    assert set(item) == {"id", "occurred_at", "action", "actor", "target", "client_ip", "request_id", "details"}
    assert item["action"] == "member.role_changed"
    assert item["actor"] == {"user_id": str(owner.id), "api_key_id": None, "label": owner.email}
    assert item["target"] == {"type": "member", "id": str(target)}
    assert item["details"] == {"from": "viewer", "to": "editor", "user_id": str(target), "at": "2026-01-02T00:00:00+00:00"}
    assert datetime.fromisoformat(item["occurred_at"]).tzinfo is not None
    assert body["next_cursor"] is None and body["total"] is None
    assert api.get(log_url(workspace_id), headers=owner.headers).headers["cache-control"] == "no-store"


def test_record_event_never_keeps_a_secret_and_fits_the_columns(api, owned):
    owner, workspace_id = owned
    event_id = record(
        api,
        workspace_id,
        "test.secrets",
        actor_label="x" * 1000,
        target_id="t" * 500,
        details={
            "password": "hunter2",
            "new_token": "abc",
            "nested": {"client_secret": "s", "api_key": "a3e_xyz", "kept": 1, "deeper": [{"Authorization": "Bearer q"}]},
            "role": "admin",
        },
    )
    with api.app.state.database.session() as session:
        event = session.get(AuditEvent, event_id)
        assert event.details == {"nested": {"kept": 1, "deeper": [{}]}, "role": "admin"}
        assert len(event.actor_label) == 320 and len(event.target_id) == 64
    with pytest.raises(ValueError):
        with api.app.state.database.session() as session:
            record_event(session, "a" * 65, workspace_id=workspace_id)


def test_the_principal_names_the_actor(api, people, owned):
    owner, workspace_id = owned
    from a3e.apikeys.models import ApiKey
    from a3e.auth.models import User

    people.api_key(workspace_id)
    with api.app.state.database.session() as session:
        user = session.get(User, owner.id)
        key = session.scalars(sa.select(ApiKey).where(ApiKey.workspace_id == workspace_id)).one()
        record_event(session, "test.by_user", principal=Principal(user=user), workspace_id=workspace_id)
        record_event(session, "test.by_key", principal=Principal(api_key=key), workspace_id=workspace_id)
        session.commit()
        key_id, key_prefix = key.id, key.prefix
    body = read(api, owner, workspace_id, action="test.*")
    by = {item["action"]: item["actor"] for item in body["items"]}
    assert by["test.by_user"] == {"user_id": str(owner.id), "api_key_id": None, "label": owner.email}
    assert by["test.by_key"]["api_key_id"] == str(key_id) and by["test.by_key"]["user_id"] is None
    assert key_prefix in by["test.by_key"]["label"]


def test_a_real_workspace_creation_is_audited(api, people):
    owner = people.person()
    created = api.post("/api/v1/workspaces", json={"name": "Audited College"}, headers=owner.headers)
    if created.status_code in (404, 405) and "No route" in created.text:
        pytest.skip("POST /api/v1/workspaces does not exist yet")
    assert created.status_code == 201, created.text
    workspace_id = created.json()["id"]
    body = read(api, owner, workspace_id, action="workspace.created")
    assert len(body["items"]) == 1
    item = body["items"][0]
    assert item["actor"]["user_id"] == str(owner.id)
    assert item["target"] == {"type": "workspace", "id": str(workspace_id)}
    assert item["client_ip"] and item["request_id"] == created.headers["x-request-id"]


def test_only_the_workspace_s_own_events_are_shown(api, people, owned):
    owner, workspace_id = owned
    other_owner = people.person()
    other_workspace = people.workspace(other_owner)
    mine = record(api, workspace_id, "test.mine")
    theirs = record(api, other_workspace, "test.theirs")
    record(api, None, "test.no_workspace")
    assert [item["id"] for item in read(api, owner, workspace_id, action="test.*")["items"]] == [mine]
    assert [item["id"] for item in read(api, other_owner, other_workspace, action="test.*")["items"]] == [theirs]


# ---------------------------------------------------------------------------------------------
# Filters


def test_filter_by_action_exact_and_prefix(api, owned):
    owner, workspace_id = owned
    for action in ("member.joined", "member.removed", "members.bulk", "invitation.created", "api_key.created", "apixkey.created"):
        record(api, workspace_id, action)
    assert actions(read(api, owner, workspace_id, action="member.joined")) == ["member.joined"]
    assert actions(read(api, owner, workspace_id, action="member.*")) == ["member.removed", "member.joined"]
    assert actions(read(api, owner, workspace_id, action="member.")) == ["member.removed", "member.joined"]
    # `_` is a literal character in the prefix, not a LIKE wildcard.
    assert actions(read(api, owner, workspace_id, action="api_key.*")) == ["api_key.created"]
    assert actions(read(api, owner, workspace_id, action="nothing.*")) == []
    assert actions(read(api, owner, workspace_id, action="member")) == []  # exact: no such action
    everything = read(api, owner, workspace_id, action="*")
    assert {"member.joined", "apixkey.created"} <= set(actions(everything))
    for bad in ("member.*.x", "member%", "a b", "x" * 70):
        response = api.get(log_url(workspace_id), params={"action": bad}, headers=owner.headers)
        assert response.status_code == 422, bad
        assert response.json()["error"]["code"] == "validation_error"


def test_filter_by_actor_and_target(api, people, owned):
    owner, workspace_id = owned
    alice, bob = people.person(), people.person()
    target = str(uuid.uuid4())
    a = record(api, workspace_id, "test.a", actor_user_id=alice.id, target_type="document", target_id=target)
    b = record(api, workspace_id, "test.b", actor_user_id=bob.id, target_type="document", target_id="other")
    c = record(api, workspace_id, "test.c", actor_user_id=alice.id, target_type="member", target_id=target)

    def ids(**params):
        return [item["id"] for item in read(api, owner, workspace_id, **params)["items"]]

    assert ids(actor_user_id=str(alice.id)) == [c, a]
    assert ids(actor_user_id=str(bob.id)) == [b]
    assert ids(target_type="document") == [b, a]
    assert ids(target_id=target) == [c, a]
    assert ids(target_type="document", target_id=target, actor_user_id=str(alice.id)) == [a]
    assert ids(actor_user_id=str(uuid.uuid4())) == []
    response = api.get(log_url(workspace_id), params={"actor_user_id": "alice"}, headers=owner.headers)
    assert response.status_code == 422


def test_filter_by_time(api, owned):
    owner, workspace_id = owned
    base = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    ids = {
        hour: record(api, workspace_id, f"test.h{hour}", occurred_at=base + timedelta(hours=hour)) for hour in range(5)
    }

    def between(**params):
        return [item["id"] for item in read(api, owner, workspace_id, action="test.*", **params)["items"]]

    # since inclusive, until exclusive; naive means UTC.
    assert between(since="2026-03-01T13:00:00") == [ids[4], ids[3], ids[2], ids[1]]
    assert between(until="2026-03-01T13:00:00Z") == [ids[0]]
    assert between(since="2026-03-01T13:00:00", until="2026-03-01T15:00:00") == [ids[2], ids[1]]
    # An offset is honoured: 15:00+02:00 is 13:00 UTC.
    assert between(since="2026-03-01T15:00:00+02:00") == [ids[4], ids[3], ids[2], ids[1]]
    # ...also when its `+` arrived unencoded and so as a space.
    response = api.get(f"{log_url(workspace_id)}?action=test.*&since=2026-03-01T15:00:00+02:00", headers=owner.headers)
    assert [item["id"] for item in response.json()["items"]] == [ids[4], ids[3], ids[2], ids[1]]
    assert between(since="2026-03-02") == []
    assert between(until="2026-03-01") == []
    for params in ({"since": "yesterday"}, {"until": "2026-13-01"}, {"since": "2026-03-02", "until": "2026-03-01"}):
        response = api.get(log_url(workspace_id), params=params, headers=owner.headers)
        assert response.status_code == 422, params
        error = response.json()["error"]
        assert error["code"] == "validation_error"
        assert error["details"][0]["location"][0] == "query"


# ---------------------------------------------------------------------------------------------
# Pagination


def test_cursor_pagination_has_no_duplicates_or_gaps_while_events_arrive(api, owned):
    owner, workspace_id = owned
    existing = [record(api, workspace_id, f"page.e{n}") for n in range(23)]
    seen: list[int] = []
    cursor = None
    pages = 0
    while pages < 10:  # 23 events, 10 a page: 3 pages
        params = {"action": "page.*", "limit": 10, **({"cursor": cursor} if cursor else {})}
        body = read(api, owner, workspace_id, **params)
        pages += 1
        seen += [item["id"] for item in body["items"]]
        # New events between pages must not shift what is left to read.
        record(api, workspace_id, f"page.new{pages}")
        record(api, workspace_id, f"page.new{pages}b")
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == sorted(existing, reverse=True)
    assert len(set(seen)) == len(seen)
    # The total counts with the same filters, across pages; new events are there from the top.
    body = read(api, owner, workspace_id, action="page.*", limit=5, include_total="true")
    assert body["total"] == 23 + 6
    assert [item["action"] for item in body["items"]][:2] == ["page.new3b", "page.new3"]


def test_limits_and_bad_cursors(api, owned):
    owner, workspace_id = owned
    for _ in range(3):
        record(api, workspace_id, "test.limit")
    body = read(api, owner, workspace_id, action="test.limit", limit=3)
    assert len(body["items"]) == 3 and body["next_cursor"] is None  # exactly a page: no empty last page
    body = read(api, owner, workspace_id, action="test.limit", limit=1)
    assert len(body["items"]) == 1 and body["next_cursor"]
    assert decode_cursor(encode_cursor(42)) == 42
    for params in ({"limit": 0}, {"limit": 201}, {"cursor": "garbage"}, {"cursor": encode_cursor(1)[:-3] + "!!!"}):
        response = api.get(log_url(workspace_id), params=params, headers=owner.headers)
        assert response.status_code == 422, params
        assert response.json()["error"]["code"] == "validation_error"
    assert read(api, owner, workspace_id, limit=200)["items"] is not None


# ---------------------------------------------------------------------------------------------
# CSV export


def export(api, who: Actor, workspace_id, **params):
    return api.get(f"{log_url(workspace_id)}/export", params=params, headers=who.headers)


def parse_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


def test_csv_export_has_a_header_every_matching_row_and_is_audited(api, owned):
    owner, workspace_id = owned
    target = uuid.uuid4()
    ids = [
        record(
            api,
            workspace_id,
            "test.export",
            actor_user_id=owner.id,
            actor_label=owner.email,
            target_type="document",
            target_id=target,
            details={"n": n, "title": "Naïve, \"quoted\"\nline"},
        )
        for n in range(3)
    ]
    record(api, workspace_id, "other.thing")
    response = export(api, owner, workspace_id, action="test.*")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    today = datetime.now(UTC).date().isoformat()
    assert response.headers["content-disposition"] == f'attachment; filename="audit-log-{workspace_id}-{today}.csv"'
    assert response.headers["cache-control"] == "no-store"
    assert response.text.startswith(",".join(CSV_COLUMNS) + "\r\n")
    rows = parse_csv(response.text)
    assert [int(row["id"]) for row in rows] == sorted(ids, reverse=True)
    row = rows[0]
    assert row["action"] == "test.export" and row["actor_user_id"] == str(owner.id)
    assert row["actor_label"] == owner.email and row["target_id"] == str(target)
    assert row["details"] == '{"n":2,"title":"Naïve, \\"quoted\\"\\nline"}'
    assert row["occurred_at"].endswith("Z")

    # The export itself is in the log, with who, where from, and which filters...
    body = read(api, owner, workspace_id, action="audit_log.exported")
    assert len(body["items"]) == 1
    item = body["items"][0]
    assert item["actor"]["user_id"] == str(owner.id)
    assert item["details"] == {"format": "csv", "filters": {"action": "test.*"}}
    assert item["client_ip"] and item["request_id"] == response.headers["x-request-id"]
    # ...but not in the export it records: the export holds what existed when it was asked for.
    everything = parse_csv(export(api, owner, workspace_id).text)
    assert [row["action"] for row in everything].count("audit_log.exported") == 1  # the first one only


def test_csv_export_is_safe_from_formula_injection(api, owned):
    owner, workspace_id = owned
    dangerous = ["=HYPERLINK(\"http://evil\")", "+1+1", "-2+3", "@SUM(A1)", "\tTAB", "\rCR", "plain", "a=b"]
    for value in dangerous:
        record(api, workspace_id, "test.inject", actor_label=value, target_type="document", target_id=value[:64])
    rows = parse_csv(export(api, owner, workspace_id, action="test.inject").text)
    labels = sorted(row["actor_label"] for row in rows)
    expected = sorted(("'" + v if v[0] in "=+-@\t\r" else v) for v in dangerous)
    assert labels == expected
    for row in rows:
        for column, cell in row.items():
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), (column, cell)
    assert csv_safe(None) == "" and csv_safe(5) == "5" and csv_safe("=1") == "'=1" and csv_safe("ok") == "ok"


def test_csv_export_streams_in_chunks(api, owned):
    owner, workspace_id = owned
    with api.app.state.database.session() as session:
        for n in range(1203):
            record_event(session, "bulk.event", workspace_id=workspace_id, target_id=n)
        session.commit()
    # Through the API: every row, newest first, across the 500-row chunks.
    rows = parse_csv(export(api, owner, workspace_id, action="bulk.*").text)
    assert len(rows) == 1203
    assert [int(row["target_id"]) for row in rows] == list(range(1202, -1, -1))
    # The iterator reads and yields a chunk at a time, never the whole log at once.
    chunks = list(
        CsvExport(api.app.state.database, workspace_id, AuditFilters(action="bulk.*"), chunk_rows=100)
    )
    assert len(chunks) == 1 + 13  # the header, then ceil(1203 / 100) chunks
    assert all(chunk.count(b"\r\n") <= 100 for chunk in chunks)
    empty = list(CsvExport(api.app.state.database, workspace_id, AuditFilters(action="none.*")))
    assert empty == [(",".join(CSV_COLUMNS) + "\r\n").encode()]


def test_csv_export_takes_the_same_filters(api, people, owned):
    owner, workspace_id = owned
    alice = people.person()
    base = datetime(2026, 5, 1, tzinfo=UTC)
    record(api, workspace_id, "test.f", actor_user_id=alice.id, occurred_at=base)
    keep = record(api, workspace_id, "test.f", actor_user_id=alice.id, occurred_at=base + timedelta(days=1))
    record(api, workspace_id, "test.f", actor_user_id=owner.id, occurred_at=base + timedelta(days=1))
    rows = parse_csv(
        export(api, owner, workspace_id, action="test.f", actor_user_id=str(alice.id), since="2026-05-02").text
    )
    assert [int(row["id"]) for row in rows] == [keep]
    assert export(api, owner, workspace_id, since="nope").status_code == 422


# ---------------------------------------------------------------------------------------------
# Who may read it


@pytest.mark.parametrize("suffix", ["", "/export"])
def test_owners_and_admins_read_editors_viewers_and_keys_do_not(api, people, owned, suffix):
    owner, workspace_id = owned
    record(api, workspace_id, "test.permissions")
    url = log_url(workspace_id) + suffix
    admin = people.member(workspace_id, "admin")
    editor = people.member(workspace_id, "editor")
    viewer = people.member(workspace_id, "viewer")
    stranger = people.person()
    elsewhere = people.workspace(stranger)

    for who in (owner, admin):
        assert api.get(url, headers=who.headers).status_code == 200
    for who in (editor, viewer):
        response = api.get(url, headers=who.headers)
        assert response.status_code == 403, response.text
        assert response.json()["error"]["code"] == "forbidden"
    # Not a member: the workspace's existence is not revealed.
    response = api.get(url, headers=stranger.headers)
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    assert api.get(log_url(uuid.uuid4()) + suffix, headers=owner.headers).status_code == 404
    # API keys never read the audit log; a key of another workspace does not see this one.
    for scope in ("read", "read_write"):
        assert api.get(url, headers=people.api_key(workspace_id, scope)).status_code == 403
    assert api.get(url, headers=people.api_key(elsewhere, "read")).status_code == 404
    assert api.get(url).status_code == 401
    assert api.get(log_url("not-a-uuid") + suffix, headers=owner.headers).status_code == 422
    # Refused exports are not exports: only the owner's and the admin's were recorded.
    exported = read(api, owner, workspace_id, action="audit_log.exported")["items"]
    assert len(exported) == (2 if suffix else 0)


# ---------------------------------------------------------------------------------------------
# Append-only, enforced by the database


def test_the_database_refuses_to_change_or_remove_an_event(api, owned):
    _, workspace_id = owned
    event_id = record(api, workspace_id, "test.immutable", target_id="original")
    engine = api.app.state.database.engine
    statements = [
        sa.update(AuditEvent).where(AuditEvent.id == event_id).values(target_id="forged"),
        sa.update(AuditEvent).values(action="test.rewritten"),
        sa.delete(AuditEvent).where(AuditEvent.id == event_id),
        sa.delete(AuditEvent),
    ]
    for statement in statements:
        with pytest.raises(DBAPIError, match="append-only"):
            with engine.begin() as connection:
                connection.execute(statement)
    # Through the ORM as well.
    with api.app.state.database.session() as session:
        event = session.get(AuditEvent, event_id)
        session.delete(event)
        with pytest.raises(DBAPIError, match="append-only"):
            session.commit()
    with api.app.state.database.session() as session:
        event = session.get(AuditEvent, event_id)
        assert event is not None and event.target_id == "original" and event.action == "test.immutable"


# ---------------------------------------------------------------------------------------------
# Pieces


def test_cursor_round_trip_and_refusals():
    from a3e.audit.service import InvalidCursor

    assert decode_cursor(encode_cursor(1)) == 1
    assert re.fullmatch(r"[A-Za-z0-9_-]+", encode_cursor(10**15))
    for bad in ("", "x", "e30", encode_cursor(1).upper(), "eyJ2IjoxLCJiZWZvcmUiOiIxIn0", "eyJ2IjoyLCJiZWZvcmUiOjF9"):
        with pytest.raises(InvalidCursor):
            decode_cursor(bad)


def test_filters_describe_themselves_for_the_export_record():
    since = datetime(2026, 1, 1, tzinfo=UTC)
    filters = AuditFilters(action="member.*", since=since)
    assert filters.as_details() == {"action": "member.*", "since": since}
    assert AuditFilters().as_details() == {}


def test_a_stranger_learns_nothing_even_from_bad_filters(api, make_person, make_workspace):
    owner, stranger = make_person(), make_person()
    workspace = make_workspace(owner)
    for path in ("audit-log", "audit-log/export"):
        response = api.get(
            f"/api/v1/workspaces/{workspace['id']}/{path}", params={"since": "not-a-date"}, headers=stranger.headers
        )
        assert response.status_code == 404, response.text
        assert response.json()["error"]["message"] == "Workspace not found"
