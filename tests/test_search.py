"""Full-text search over a workspace's passages, on SQLite (FTS5) and PostgreSQL (tsvector + GIN).

Documents, revisions and passages are written through the ORM (the upload API is not what is
under test here); everything else goes through `GET /api/v1/workspaces/{id}/search`.
"""

from __future__ import annotations

import hashlib
import random
import sqlite3
import uuid
from dataclasses import dataclass
from datetime import date

import pytest
from sqlalchemy import delete, text

from a3e.evidence.models import Blob, Document, DocumentTag, Passage, Revision, RevisionStatus
from a3e.evidence.search import MAX_QUERY_LENGTH, parse_query, render_snippet
from tests.test_workspaces_support import bearer, create_key, error_of, join

# ---------------------------------------------------------------------------------------------
# Writing evidence directly.


@dataclass
class StoredDocument:
    id: str
    revision_id: str
    passage_ids: list[int]


def add_document(
    api,
    workspace_id: str,
    title: str,
    passages: list[str],
    *,
    tags: tuple[str, ...] = (),
    document_date: date | None = None,
) -> StoredDocument:
    """A document whose current revision (ready) has these passages."""
    with api.app.state.database.session() as session:
        document = Document(
            workspace_id=uuid.UUID(workspace_id), title=title, document_date=document_date, revision_count=0
        )
        session.add(document)
        session.flush()
        session.add_all(
            DocumentTag(document_id=document.id, tag=tag, workspace_id=document.workspace_id) for tag in tags
        )
        session.commit()
        document_id = str(document.id)
    return add_revision(api, document_id, passages)


def add_revision(api, document_id: str, passages: list[str]) -> StoredDocument:
    """A new revision (ready) of the document with these passages, made its current one."""
    with api.app.state.database.session() as session:
        document = session.get(Document, uuid.UUID(document_id))
        content = "\n\n".join(passages).encode()
        sha256 = hashlib.sha256(content + uuid.uuid4().bytes).hexdigest()
        session.add(Blob(sha256=sha256, size_bytes=len(content), media_type="text/plain"))
        session.flush()
        number = document.revision_count + 1
        revision = Revision(
            document_id=document.id,
            workspace_id=document.workspace_id,
            number=number,
            sha256=sha256,
            size_bytes=len(content),
            filename=f"{document.title}.txt",
            kind="txt",
            media_type="text/plain",
            status=RevisionStatus.READY.value,
            passage_count=len(passages),
        )
        session.add(revision)
        session.flush()
        rows, offset = [], 0
        for ordinal, passage_text in enumerate(passages):
            rows.append(
                Passage(
                    revision_id=revision.id,
                    document_id=document.id,
                    workspace_id=document.workspace_id,
                    ordinal=ordinal,
                    text=passage_text,
                    page=ordinal + 1,
                    char_start=offset,
                    char_end=offset + len(passage_text),
                    heading=f"Section {ordinal + 1}",
                    location=f"page {ordinal + 1}",
                )
            )
            offset += len(passage_text) + 2
        session.add_all(rows)
        document.current_revision_id = revision.id
        document.revision_count = number
        session.flush()
        stored = StoredDocument(str(document.id), str(revision.id), [row.id for row in rows])
        session.commit()
    return stored


def search(api, person_or_headers, workspace_id: str, q: str | None, **params):
    headers = person_or_headers if isinstance(person_or_headers, dict) else person_or_headers.headers
    if q is not None:
        params["q"] = q
    return api.get(f"/api/v1/workspaces/{workspace_id}/search", params=params, headers=headers)


def found(api, person, workspace_id: str, q: str, **params) -> list[dict]:
    response = search(api, person, workspace_id, q, limit=200, **params)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["total"] == len(body["items"])
    return body["items"]


def passage_ids(items: list[dict]) -> set[int]:
    return {item["passage_id"] for item in items}


@pytest.fixture
def owner(make_person):
    return make_person()


@pytest.fixture
def workspace(owner, make_workspace) -> str:
    return make_workspace(owner)["id"]


# ---------------------------------------------------------------------------------------------
# The query language (no database).


def test_the_parser_renders_one_structure_for_both_backends():
    query = parse_query('assessment "quality enhancement plan" -library or budget')
    assert query.fts5() == '(("assessment" AND "quality enhancement plan") NOT "library") OR ("budget")'
    assert query.websearch() == '"assessment" "quality enhancement plan" -"library" or "budget"'
    # Stop words are dropped as PostgreSQL drops them; `and` is a word, not an operator.
    assert parse_query("the accreditation AND the review").fts5() == '("accreditation" AND "review")'
    # Nothing left to require: empty, on every backend.
    for nothing in ("", "   ", '"', "*", "-", "AND OR", "or or", "the of and", "-library", '-"whole phrase"',
                    "((", ":", "!!"):
        assert parse_query(nothing).empty, nothing
    # An alternative that only excludes is dropped; the rest stands.
    assert parse_query("accreditation or -library").fts5() == '("accreditation")'
    # Punctuation inside words splits them into a phrase of their parts.
    assert parse_query("col:term").fts5() == '("col term")'
    assert parse_query("NEAR(accreditation").fts5() == '("near accreditation")'


def test_every_rendered_fts5_expression_is_valid_syntax():
    """Whatever is typed, the MATCH expression parses: thousands of random hostile strings
    against a real FTS5 table."""
    connection = sqlite3.connect(":memory:")
    connection.execute("CREATE VIRTUAL TABLE t USING fts5(body, tokenize='porter unicode61')")
    connection.execute("INSERT INTO t (body) VALUES ('accreditation policy near the library')")
    alphabet = ['"', "-", "*", ":", "(", ")", "^", "+", "{", "}", " ", " ", "OR", "AND", "NOT", "NEAR",
                "or", "a", "é", "policy", "library", "'", "\\", "%", "_", ",", ".", "\t", "0", "ß"]
    rng = random.Random(7)
    for _ in range(3000):
        typed = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 14)))
        query = parse_query(typed)
        if not query.empty:
            connection.execute("SELECT rowid FROM t WHERE t MATCH ?", (query.fts5(),)).fetchall()
    connection.close()


def test_snippets_are_escaped_html_with_only_mark_elements():
    assert render_snippet("a \x01<b>\x02 & \x01c\x02") == "a <mark>&lt;b&gt;</mark> &amp; <mark>c</mark>"
    # Stray or unbalanced marks never produce unbalanced markup.
    assert render_snippet("\x02x\x01y\x01z") == "x<mark>yz</mark>"
    assert render_snippet('"quoted" \'single\'') == "&quot;quoted&quot; &#x27;single&#x27;"


# ---------------------------------------------------------------------------------------------
# Matching.


def test_stemming_phrases_exclusion_and_or(api, owner, workspace):
    accreditation = add_document(api, workspace, "Accreditation", [
        "The institution seeks accreditation of its programs.",
        "All programs were accredited in 2019 after the site visit.",
        "Our quality enhancement plan improves student learning.",
        "Enhancement of the plan for quality teaching.",
        "The library budget supports assessment of collections.",
        "Assessment of learning outcomes happens every year.",
        "The annual budget was approved by the board.",
    ])
    a = accreditation.passage_ids
    search_for = lambda q: passage_ids(found(api, owner, workspace, q))  # noqa: E731

    assert search_for("accredit") == {a[0], a[1]}  # stemming both ways
    assert search_for("accreditations") == {a[0], a[1]}
    assert search_for('"quality enhancement plan"') == {a[2]}  # a phrase, not the words anywhere
    assert search_for("quality enhancement plan") == {a[2], a[3]}
    assert search_for("assessment -library") == {a[5]}
    assert search_for('assessment -"library budget"') == {a[5]}
    assert search_for("library or board") == {a[4], a[6]}
    assert search_for("budget board or outcomes") == {a[6], a[5]}  # (budget AND board) OR outcomes
    assert search_for("ACCREDITED") == {a[0], a[1]}  # case does not matter
    assert search_for("unrelatedword") == set()


def test_ranking_puts_more_mentions_first(api, owner, workspace):
    doc = add_document(api, workspace, "Reports", [
        "Assessment is mentioned once among many other words about the campus and its people.",
        "Assessment drives assessment planning, and assessment results inform the budget cycle.",
        "Nothing relevant here at all, only the campus and its people.",
    ])
    items = found(api, owner, workspace, "assessment")
    assert [item["passage_id"] for item in items] == [doc.passage_ids[1], doc.passage_ids[0]]
    assert items[0]["score"] > items[1]["score"] > 0


def test_snippets_highlight_matches_and_escape_hostile_text(api, owner, workspace):
    doc = add_document(api, workspace, "Hostile", [
        'Evidence of accreditation <script>alert("x")</script> and <img src=x onerror=alert(1)> & more.',
    ], tags=("policy",), document_date=date(2024, 5, 1))
    [item] = found(api, owner, workspace, "accreditation")
    snippet = item["snippet"]
    assert "<mark>accreditation</mark>" in snippet
    assert "<script" not in snippet and "<img" not in snippet
    assert "&lt;script&gt;" in snippet and "&amp;" in snippet
    # Apart from the marks, the snippet is text: removing them leaves no markup at all.
    assert "<" not in snippet.replace("<mark>", "").replace("</mark>", "")
    # The rest of the hit says where the passage is.
    assert item["document_id"] == doc.id and item["document_title"] == "Hostile"
    assert item["revision_id"] == doc.revision_id and item["revision_number"] == 1
    assert item["current_revision"] is True
    assert (item["page"], item["location"], item["heading"]) == (1, "page 1", "Section 1")
    assert item["char_start"] == 0 and item["char_end"] > item["char_start"]
    # Words inside markup are words like any other (PostgreSQL's parser would skip "tags"), and
    # still shown escaped.
    for word in ("alert", "script", "onerror"):
        [script] = found(api, owner, workspace, word)
        assert f"<mark>{word}</mark>" in script["snippet"] and "&lt;" in script["snippet"], word


def test_snippets_show_short_passages_whole_and_excerpt_long_ones(api, owner, workspace):
    short = "One two accreditation three."
    long = " ".join(f"word{n}" for n in range(150)) + " accreditation " + " ".join(f"tail{n}" for n in range(150))
    add_document(api, workspace, "Lengths", [short, long])
    snippets = {len(item["snippet"]): item["snippet"] for item in found(api, owner, workspace, "accreditation")}
    assert sorted(snippets.values(), key=len)[0] == "One two <mark>accreditation</mark> three."
    excerpt = max(snippets.values(), key=len)
    assert "<mark>accreditation</mark>" in excerpt
    assert 15 <= len(excerpt.split()) <= 40  # about 32 words around the match, not the whole passage
    assert "word149" in excerpt or "tail0" in excerpt


# ---------------------------------------------------------------------------------------------
# Filters, pagination, revisions.


def test_filters_by_document_tag_and_date(api, owner, workspace):
    handbook = add_document(api, workspace, "Handbook", ["Faculty evaluation policy."],
                            tags=("policy", "faculty"), document_date=date(2023, 8, 15))
    minutes = add_document(api, workspace, "Minutes", ["Board minutes on faculty evaluation."],
                           tags=("Minutes",), document_date=date(2024, 2, 1))
    undated = add_document(api, workspace, "Undated", ["Evaluation notes without a date."], tags=("policy",))
    all_three = {handbook.passage_ids[0], minutes.passage_ids[0], undated.passage_ids[0]}
    ids = lambda **params: passage_ids(found(api, owner, workspace, "evaluation", **params))  # noqa: E731

    assert ids() == all_three
    assert ids(document_id=handbook.id) == {handbook.passage_ids[0]}
    assert ids(document_id=[handbook.id, undated.id]) == {handbook.passage_ids[0], undated.passage_ids[0]}
    assert ids(document_id=str(uuid.uuid4())) == set()
    assert ids(tag="policy") == {handbook.passage_ids[0], undated.passage_ids[0]}
    assert ids(tag=["policy", "faculty"]) == {handbook.passage_ids[0]}  # every tag given
    assert ids(tag="minutes") == {minutes.passage_ids[0]}  # tags match whatever their case
    assert ids(tag="nonexistent") == set()
    assert ids(date_from="2024-01-01") == {minutes.passage_ids[0]}  # undated documents are out
    assert ids(date_to="2023-08-15") == {handbook.passage_ids[0]}  # inclusive
    assert ids(date_from="2023-08-15", date_to="2024-02-01") == {handbook.passage_ids[0], minutes.passage_ids[0]}
    assert ids(date_from="2024-02-02") == set()

    backwards = search(api, owner, workspace, "evaluation", date_from="2024-02-02", date_to="2024-01-01")
    assert backwards.status_code == 422
    assert "date_to" in error_of(backwards)["message"]
    for bad in ({"date_from": "yesterday"}, {"document_id": "not-a-uuid"}, {"revision": "some"},
                {"limit": 0}, {"limit": 1000}, {"offset": -1}):
        assert search(api, owner, workspace, "evaluation", **bad).status_code == 422, bad


def test_pagination_and_total(api, owner, workspace):
    doc = add_document(api, workspace, "Many", [f"Standard {n}: the institution complies." for n in range(7)]
                       + ["Unrelated passage."])
    pages = []
    for offset in (0, 3, 6):
        response = search(api, owner, workspace, "complies", limit=3, offset=offset)
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["total"], body["limit"], body["offset"]) == (7, 3, offset)
        pages.append([item["passage_id"] for item in body["items"]])
    assert [len(page) for page in pages] == [3, 3, 1]
    flat = [pid for page in pages for pid in page]
    assert len(set(flat)) == 7 and set(flat) == set(doc.passage_ids[:7])  # no overlap, nothing lost
    beyond = search(api, owner, workspace, "complies", limit=3, offset=50).json()
    assert beyond["items"] == [] and beyond["total"] == 7


def test_only_current_revisions_unless_asked(api, owner, workspace):
    first = add_document(api, workspace, "Catalog", ["The retired curriculum requirements.", "General education."])
    second = add_revision(api, first.id, ["The revised curriculum requirements.", "General education."])

    current = found(api, owner, workspace, "curriculum")
    assert passage_ids(current) == {second.passage_ids[0]}
    assert current[0]["revision_number"] == 2 and current[0]["current_revision"] is True
    assert found(api, owner, workspace, "retired") == []

    everything = found(api, owner, workspace, "curriculum", revision="all")
    assert passage_ids(everything) == {first.passage_ids[0], second.passage_ids[0]}
    old = next(item for item in everything if item["passage_id"] == first.passage_ids[0])
    assert old["revision_number"] == 1 and old["current_revision"] is False
    assert old["revision_id"] == first.revision_id


def test_deleted_passages_leave_the_index(api, owner, workspace):
    kept = add_document(api, workspace, "Kept", ["Strategic plan, kept."])
    gone = add_document(api, workspace, "Gone", ["Strategic plan, deleted."])
    assert passage_ids(found(api, owner, workspace, "strategic")) == {kept.passage_ids[0], gone.passage_ids[0]}
    with api.app.state.database.session() as session:
        # Removing the document removes its revisions and passages by the foreign keys' cascade.
        session.execute(delete(Document).where(Document.id == uuid.UUID(gone.id)))
        session.commit()
    assert passage_ids(found(api, owner, workspace, "strategic")) == {kept.passage_ids[0]}
    assert passage_ids(found(api, owner, workspace, "deleted")) == set()
    if api.app.state.database.engine.dialect.name == "sqlite":
        # The FTS5 index itself forgot the row (the trigger ran on the cascade), not only the join.
        with api.app.state.database.session() as session:
            indexed = session.execute(text("SELECT rowid FROM passages_fts WHERE passages_fts MATCH 'deleted'")).all()
        assert indexed == []


def test_passages_written_before_the_migration_are_indexed(database_url):
    from alembic import command
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    from a3e.core import migrations
    from a3e.core.models import utcnow
    from a3e.evidence.search import SearchFilters, search_passages
    from a3e.workspaces.models import Workspace

    engine = create_engine(database_url)
    with engine.connect() as connection:
        command.upgrade(migrations.alembic_config(connection), "0006_evidence")
        connection.commit()
    # Rows as the schema of 0006 had them, written with plain table inserts (today's ORM also
    # keeps later columns up to date, such as the workspace's review version).
    workspace_id, document_id, revision_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    with engine.begin() as connection:
        connection.execute(Workspace.__table__.insert().values(id=workspace_id, name="Early", created_at=utcnow(),
                                                               updated_at=utcnow()))
        connection.execute(Blob.__table__.insert().values(sha256="e" * 64, size_bytes=1, media_type="text/plain"))
        connection.execute(Document.__table__.insert().values(id=document_id, workspace_id=workspace_id, title="Early",
                                                              revision_count=1))
        connection.execute(Revision.__table__.insert().values(
            id=revision_id, document_id=document_id, workspace_id=workspace_id, number=1, sha256="e" * 64,
            size_bytes=1, filename="early.txt", kind="txt", media_type="text/plain", status="ready"))
        connection.execute(Document.__table__.update().where(Document.__table__.c.id == document_id)
                           .values(current_revision_id=revision_id))
        connection.execute(Passage.__table__.insert().values(
            revision_id=revision_id, document_id=document_id, workspace_id=workspace_id, ordinal=0,
            text="Institutional effectiveness before search existed.", char_start=0, char_end=50))
    migrations.upgrade(engine)
    with Session(engine) as session:
        results = search_passages(session, workspace_id, parse_query("effective"), SearchFilters(), limit=10, offset=0)
    engine.dispose()
    assert results.total == 1 and [hit.document_title for hit in results.hits] == ["Early"]
    assert "<mark>" in results.hits[0].snippet


# ---------------------------------------------------------------------------------------------
# Hostile and empty queries.


def test_hostile_queries_never_fail(api, owner, workspace):
    text_ = "Accreditation policy: the term near the library, see section:standards."
    doc = add_document(api, workspace, "Policy", [text_])
    hit = {doc.passage_ids[0]}
    # Punctuation inside a word makes a phrase of its parts: `col:term` is "col term", not a column.
    expectations = {
        '"': set(), "*": set(), "NEAR(": hit, "col:term": set(), "section:standards": hit, "AND OR": set(),
        "OR": set(), '"unbalanced accreditation': set(), '"accreditation policy': hit, "accreditation*": hit,
        "text:accreditation": set(),
        "accreditation -": hit, "-": set(), "((": set(), "^accreditation": hit, "accreditation)": hit,
        "'; DROP TABLE passages; --": set(), "a\\b": set(), "100%": set(), "_": set(), "<->": set(),
        "accreditation & !policy": hit, "policy:*": hit, "!!": set(), "NOT accreditation": hit,
        '"" accreditation ""': hit, "accreditation OR": hit, "OR accreditation": hit,
    }
    for q, expected in expectations.items():
        response = search(api, owner, workspace, q)
        assert response.status_code == 200, (q, response.text)
        assert passage_ids(response.json()["items"]) == expected, q
    # A query of punctuation, stop words or exclusions only is fine, and finds nothing.
    for q in (".,;", "the and of", "-accreditation"):
        body = search(api, owner, workspace, q).json()
        assert body == {"items": [], "total": 0, "limit": 50, "offset": 0}, q
    # The table is still there.
    assert passage_ids(found(api, owner, workspace, "accreditation")) == hit


def test_empty_missing_and_overlong_queries_are_refused(api, owner, workspace):
    for params in ({"q": ""}, {"q": "   \t "}, {}):
        response = api.get(f"/api/v1/workspaces/{workspace}/search", params=params, headers=owner.headers)
        assert response.status_code == 422, params
        assert error_of(response)["code"] == "validation_error"
        assert "q" in error_of(response)["message"]
    assert "something to search for" in error_of(search(api, owner, workspace, "  "))["message"]
    too_long = search(api, owner, workspace, "accreditation " * 750)  # ~10 KB
    assert too_long.status_code == 422
    assert str(MAX_QUERY_LENGTH) in error_of(too_long)["message"]
    assert search(api, owner, workspace, "a" * MAX_QUERY_LENGTH).status_code == 200


# ---------------------------------------------------------------------------------------------
# Who may search what.


def test_other_workspaces_passages_never_appear(api, owner, workspace, make_person, make_workspace):
    mine = add_document(api, workspace, "Mine", ["Shared wording about institutional effectiveness."])
    stranger = make_person()
    theirs_workspace = make_workspace(stranger, "Other College")["id"]
    theirs = add_document(api, theirs_workspace, "Theirs", ["Shared wording about institutional effectiveness."])

    assert passage_ids(found(api, owner, workspace, "effectiveness")) == set(mine.passage_ids)
    assert passage_ids(found(api, stranger, theirs_workspace, "effectiveness")) == set(theirs.passage_ids)
    # Asking for the other workspace's document through one's own workspace finds nothing.
    assert found(api, owner, workspace, "effectiveness", document_id=theirs.id) == []
    assert found(api, owner, workspace, "effectiveness", revision="all") != []

    response = search(api, stranger, workspace, "effectiveness")
    assert response.status_code == 404 and error_of(response)["message"] == "Workspace not found"
    other_key = create_key(api, stranger, theirs_workspace, "read")
    assert search(api, bearer(other_key["key"]), workspace, "effectiveness").status_code == 404
    assert search(api, {}, workspace, "effectiveness").status_code == 401


def test_viewers_and_read_only_keys_may_search(api, owner, workspace, make_person):
    doc = add_document(api, workspace, "Handbook", ["Student complaint procedures."])
    viewer = make_person()
    join(api, owner, workspace, viewer, "viewer")
    key = create_key(api, owner, workspace, "read")
    for caller in (viewer, bearer(key["key"])):
        response = search(api, caller, workspace, "complaints")
        assert response.status_code == 200, response.text
        assert passage_ids(response.json()["items"]) == set(doc.passage_ids)
        assert response.headers["cache-control"] == "private, no-store"


# ---------------------------------------------------------------------------------------------
# The index is used.


def test_the_full_text_index_drives_the_query(api, owner, workspace):
    """PostgreSQL can answer from the GIN index; SQLite starts from the FTS5 match, never from a
    walk over the workspace's passages probing the index for each."""
    # Many documents, few matches: the shape where the index is the only sensible plan.
    for number in range(20):
        filler = [f"Passage {n} about the budget, the campus and its people." for n in range(100)]
        add_document(api, workspace, f"Doc {number}", filler + (["Shared governance."] if number < 3 else []))
    from sqlalchemy import event

    from a3e.evidence.search import SearchFilters, search_passages

    database = api.app.state.database
    executed: list[tuple[str, object]] = []

    def capture(_connection, _cursor, statement, parameters, _context, _executemany) -> None:
        executed.append((statement, parameters))

    with database.session() as session:
        if database.engine.dialect.name == "postgresql":
            session.execute(text("ANALYZE documents, document_revisions, passages"))
            # 2,000 rows are still scanned faster than looked up; what matters is that the query's
            # form lets the planner use the GIN index at all (a mismatched expression would not).
            session.execute(text("SET LOCAL enable_seqscan = off"))
        event.listen(database.engine, "before_cursor_execute", capture)
        try:
            results = search_passages(session, uuid.UUID(workspace), parse_query("governance"), SearchFilters(),
                                      limit=10, offset=0)
        finally:
            event.remove(database.engine, "before_cursor_execute", capture)
        assert results.total == 3
        [(statement, parameters)] = executed
        explain = "EXPLAIN " if database.engine.dialect.name == "postgresql" else "EXPLAIN QUERY PLAN "
        plan = session.connection().exec_driver_sql(explain + statement, parameters).all()
    if database.engine.dialect.name == "postgresql":
        assert "ix_passages_search_vector" in "\n".join(row[0] for row in plan)
    else:
        steps = [row[-1] for row in plan]
        first_scan = next(step for step in steps if step.startswith(("SCAN", "SEARCH")))
        assert first_scan.startswith("SCAN passages_fts VIRTUAL TABLE INDEX 0:M"), steps
