"""Full-text search over a workspace's passages: ranked, with highlighted snippets, filtered and paged.

One query language on both backends, in the spirit of web search engines and PostgreSQL's
`websearch_to_tsquery`: words are all required; `"a quoted phrase"` must appear as such;
`-word` or `-"a phrase"` excludes; `or` between two items accepts either (`and` is an ordinary,
ignored word; AND binds tighter than OR: `a b or c` is `(a b) or c`). Anything else a user types
(`*`, `:`, `(`, `NEAR(`, an unbalanced quote) is punctuation, never syntax, and never an error.

The query is parsed here, once, into alternatives of required and excluded terms
(`ParsedQuery`), and each backend gets a rendering of that same structure:

- PostgreSQL: a canonical `websearch_to_tsquery('english', …)` input (every term quoted), matched
  against `passages.search_vector` (a generated tsvector with a GIN index, migration 0007),
  ranked with `ts_rank_cd`, snippets from `ts_headline`;
- SQLite: an FTS5 MATCH expression made only of quoted tokens, AND, OR, NOT and parentheses,
  against the external-content table `passages_fts` (porter + unicode61), ranked with `bm25()`,
  snippets from `snippet()`.

So the two backends find the same passages for the same query, up to their stemmers (Snowball
English and Porter agree on everyday words). English stop words (PostgreSQL's list) are dropped
from the query on both, as PostgreSQL drops them: a query of stop words only finds nothing on
either. A query that leaves no required term (only punctuation, stop words or exclusions) finds
nothing, without touching the database: a pure exclusion cannot use either index.

Snippets are HTML: the passage's text escaped, matched words wrapped in `<mark>…</mark>`. The
database marks matches with two control characters (the extraction pipeline drops control
characters from passage text, and a stray one would only add or drop a mark, never markup).
PostgreSQL's parser would take `<b and c>` for an HTML tag and skip it, in the index and in
snippets alike; it is given the text with `<` hidden (LESS_THAN_STANDIN), so that what a passage
says is searchable and shown on both backends.
"""

from __future__ import annotations

import html
import re
import uuid
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from sqlalchemy import (
    Integer,
    Select,
    and_,
    bindparam,
    case,
    column,
    exists,
    func,
    literal,
    literal_column,
    select,
    table,
    text,
)
from sqlalchemy.orm import Session

from a3e.evidence.models import Document, DocumentTag, Passage, Revision

# Longest query accepted (characters); longer ones are refused (422) rather than truncated.
MAX_QUERY_LENGTH = 500
# At most this many terms are used; a query is a search, not a document.
MAX_TERMS = 32

# What migration 0007 creates outside the models (the drift test ignores exactly these).
SEARCH_SCHEMA_TABLES = frozenset(
    {"passages_fts", "passages_fts_data", "passages_fts_idx", "passages_fts_docsize", "passages_fts_config"}
)
SEARCH_SCHEMA_COLUMNS = frozenset({("passages", "search_vector")})
SEARCH_SCHEMA_INDEXES = frozenset({"ix_passages_search_vector"})

# PostgreSQL's english stop words (tsearch_data/english.stop), which its english configuration
# drops from documents and queries alike.
ENGLISH_STOP_WORDS = frozenset(
    """i me my myself we our ours ourselves you your yours yourself yourselves he him his himself she
    her hers herself it its itself they them their theirs themselves what which who whom this that
    these those am is are was were be been being have has had having do does did doing a an the and
    but if or because as until while of at by for with about against between into through during
    before after above below to from up down in out on off over under again further then once here
    there when where why how all any both each few more most other some such no nor not only own same
    so than too very s t can will just don should now""".split()
)

# Marks the databases put around matched words; replaced by <mark> after escaping the text.
MARK_START, MARK_END = "\x01", "\x02"
# PostgreSQL's parser takes "<b and c>" for an HTML tag and drops it: its index (migration 0007)
# and its snippets see this control character in place of "<", which snippets turn back.
LESS_THAN_STANDIN = "\x03"
_MARKS = re.compile(f"([{MARK_START}{MARK_END}])")
_TOKEN = re.compile(r"[^\W_]+")


# ---------------------------------------------------------------------------------------------
# The query language.


@dataclass(frozen=True)
class Term:
    """A word or a quoted phrase as typed, and its word tokens (lowercased)."""

    text: str
    tokens: tuple[str, ...]
    negated: bool = False


@dataclass(frozen=True)
class ParsedQuery:
    """Alternatives (OR) of terms that must all match (AND), except the negated ones (NOT).

    Every alternative has at least one required term; no alternatives: nothing can match."""

    alternatives: tuple[tuple[Term, ...], ...]

    @property
    def empty(self) -> bool:
        return not self.alternatives

    def websearch(self) -> str:
        """The same query as input for PostgreSQL's websearch_to_tsquery: every term quoted (so
        its own parser tokenizes it as it tokenized the passages), `-` and `or` as operators."""
        return " or ".join(
            " ".join(("-" if term.negated else "") + f'"{term.text}"' for term in alternative)
            for alternative in self.alternatives
        )

    def fts5(self) -> str:
        """The same query as an FTS5 MATCH expression: only quoted tokens and operators."""
        rendered = []
        for alternative in self.alternatives:
            required = [_fts5_phrase(term) for term in alternative if not term.negated]
            expression = "(" + " AND ".join(required) + ")"
            for term in alternative:
                if term.negated:
                    expression = f"({expression} NOT {_fts5_phrase(term)})"
            rendered.append(expression)
        return " OR ".join(rendered)


def _fts5_phrase(term: Term) -> str:
    # Tokens are letters and digits only, so no quote needs escaping inside the string.
    return '"' + " ".join(term.tokens) + '"'


def _searchable(term: Term) -> bool:
    return any(token not in ENGLISH_STOP_WORDS for token in term.tokens)


def parse_query(query: str) -> ParsedQuery:
    """Parse what a user typed; never fails. See the module's docstring for the language."""
    alternatives: list[list[Term]] = [[]]
    position, length, terms = 0, len(query), 0
    while position < length and terms < MAX_TERMS:
        char = query[position]
        if char.isspace():
            position += 1
            continue
        negated = False
        if char == "-" and position + 1 < length and not query[position + 1].isspace():
            negated, position = True, position + 1
        if query[position] == '"':  # a phrase, up to the closing quote or the end
            closing = query.find('"', position + 1)
            end = length if closing == -1 else closing
            raw, quoted, position = query[position + 1 : end], True, end + 1
        else:
            end = position
            while end < length and not query[end].isspace() and query[end] != '"':
                end += 1
            raw, quoted, position = query[position:end], False, end
        if not quoted and not negated and raw.lower() == "or":
            if alternatives[-1]:
                alternatives.append([])
            continue
        term = Term(text=raw, tokens=tuple(_TOKEN.findall(raw.lower())), negated=negated)
        if _searchable(term):
            alternatives[-1].append(term)
            terms += 1
    kept = tuple(tuple(alt) for alt in alternatives if any(not term.negated for term in alt))
    return ParsedQuery(kept)


def render_snippet(marked: str) -> str:
    """A snippet with the databases' match marks as HTML: text escaped, matches in <mark>."""
    out: list[str] = []
    inside = False
    for piece in _MARKS.split(marked):
        if piece == MARK_START:
            if not inside:
                out.append("<mark>")
                inside = True
        elif piece == MARK_END:
            if inside:
                out.append("</mark>")
                inside = False
        elif piece:
            out.append(html.escape(piece.replace(LESS_THAN_STANDIN, "<")))
    if inside:
        out.append("</mark>")
    return "".join(out)


# ---------------------------------------------------------------------------------------------
# Running a search.


@dataclass(frozen=True)
class SearchFilters:
    document_ids: tuple[uuid.UUID, ...] = ()
    tags: tuple[str, ...] = ()  # documents carrying every one of these tags
    date_from: date | None = None  # on the document's document_date, inclusive
    date_to: date | None = None  # inclusive
    all_revisions: bool = False  # False: only the passages of each document's current revision


@dataclass(frozen=True)
class SearchHit:
    passage_id: int
    document_id: uuid.UUID
    document_title: str
    revision_id: uuid.UUID
    revision_number: int
    current_revision: bool
    page: int | None
    location: str | None
    heading: str | None
    char_start: int
    char_end: int
    snippet: str  # HTML, see render_snippet
    score: float  # higher is better; comparable only within one search on one backend


@dataclass
class SearchResults:
    hits: list[SearchHit] = field(default_factory=list)
    total: int = 0


_FTS = table("passages_fts", column("rowid", Integer))
_FTS_TABLE = literal_column("passages_fts")
_SEARCH_VECTOR = literal_column("passages.search_vector")
_ENGLISH = literal_column("'english'::regconfig")
# One excerpt of about this many words around the best match, on both backends (a passage
# shorter than that is shown whole).
_SNIPPET_TOKENS = 32
_HEADLINE_OPTIONS = f"StartSel={MARK_START}, StopSel={MARK_END}, MaxWords={_SNIPPET_TOKENS}, MinWords=16, ShortWord=3"
# ts_headline's fragment mode centres the excerpt on the match but drops the words before it in a
# short passage; its default mode keeps a short passage whole but starts a long one's excerpt at
# the match. Each where it does well: below this length a passage fits in one snippet.
_SHORT_PASSAGE_CHARS = 200


def search_passages(
    session: Session,
    workspace_id: uuid.UUID,
    query: ParsedQuery,
    filters: SearchFilters,
    *,
    limit: int,
    offset: int,
) -> SearchResults:
    """One page of the workspace's passages matching `query`, best first, and how many match."""
    if query.empty:
        return SearchResults()
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        statement, count = _postgres_statements(workspace_id, query, filters, limit=limit, offset=offset)
    elif dialect == "sqlite":
        statement, count = _sqlite_statements(workspace_id, query, filters, limit=limit, offset=offset)
    else:  # pragma: no cover - A3E runs on these two only
        raise RuntimeError(f"full-text search is not implemented for {dialect}")
    rows = session.execute(statement).all()
    if rows:
        total = rows[0].total
    elif offset:  # past the last page: the window count came back with no row to carry it
        total = session.execute(count).scalar_one()
    else:
        total = 0
    return SearchResults([_hit(row) for row in rows], total)


def _hit(row: Any) -> SearchHit:
    return SearchHit(
        passage_id=row.passage_id,
        document_id=row.document_id,
        document_title=row.document_title,
        revision_id=row.revision_id,
        revision_number=row.revision_number,
        current_revision=row.current_revision_id == row.revision_id,
        page=row.page,
        location=row.location,
        heading=row.heading,
        char_start=row.char_start,
        char_end=row.char_end,
        snippet=render_snippet(row.marked_snippet or ""),
        score=float(row.score),
    )


def _filtered(statement: Select[Any], workspace_id: uuid.UUID, filters: SearchFilters) -> Select[Any]:
    """Joins the passage's document and revision, and restricts to the workspace and filters."""
    statement = statement.join(
        Document, and_(Document.id == Passage.document_id, Document.workspace_id == workspace_id)
    ).join(Revision, Revision.id == Passage.revision_id)
    statement = statement.where(Passage.workspace_id == workspace_id)
    if not filters.all_revisions:
        statement = statement.where(Passage.revision_id == Document.current_revision_id)
    if filters.document_ids:
        statement = statement.where(Passage.document_id.in_(filters.document_ids))
    for tag in filters.tags:
        statement = statement.where(
            exists().where(
                DocumentTag.document_id == Passage.document_id,
                DocumentTag.workspace_id == workspace_id,
                func.lower(DocumentTag.tag) == tag.lower(),
            )
        )
    if filters.date_from is not None:
        statement = statement.where(Document.document_date >= filters.date_from)
    if filters.date_to is not None:
        statement = statement.where(Document.document_date <= filters.date_to)
    return statement


def _ranked_page(
    base: Select[Any],
    score: Any,
    workspace_id: uuid.UUID,
    filters: SearchFilters,
    match: Any | None,
    *,
    limit: int,
    offset: int,
) -> Any:
    """The page's passage ids and scores, best first (ties by id, so that pages never overlap),
    with the count of every match as a window over the same rows (no second scan)."""
    labeled = score.label("score")
    total = func.count().over()
    ranked = _filtered(
        base.add_columns(Passage.id.label("passage_id"), labeled, total.label("total")),
        workspace_id,
        filters,
    )
    if match is not None:
        ranked = ranked.where(match)
    return ranked.order_by(labeled.desc(), Passage.id).limit(limit).offset(offset).subquery("page")


def _result_columns(page: Any) -> list[Any]:
    return [
        page.c.passage_id,
        page.c.score,
        page.c.total,
        Passage.document_id,
        Passage.revision_id,
        Passage.page,
        Passage.location,
        Passage.heading,
        Passage.char_start,
        Passage.char_end,
        Document.title.label("document_title"),
        Document.current_revision_id,
        Revision.number.label("revision_number"),
    ]


def _postgres_statements(
    workspace_id: uuid.UUID, query: ParsedQuery, filters: SearchFilters, *, limit: int, offset: int
) -> tuple[Select[Any], Select[Any]]:
    tsquery = func.websearch_to_tsquery(_ENGLISH, bindparam("websearch", query.websearch()))
    matches = _SEARCH_VECTOR.op("@@")(tsquery)
    # Normalization 1: rank divided by 1 + log(length), so a long passage does not win on bulk alone.
    score = func.ts_rank_cd(_SEARCH_VECTOR, tsquery, 1)
    page = _ranked_page(
        select().select_from(Passage), score, workspace_id, filters, matches, limit=limit, offset=offset
    )
    # The snippet and the other columns only for the page's rows: ts_headline re-parses the text.
    shown_text = func.replace(Passage.text, "<", func.chr(ord(LESS_THAN_STANDIN)))  # as the index saw it
    headline = case(
        (
            func.length(Passage.text) <= _SHORT_PASSAGE_CHARS,
            func.ts_headline(_ENGLISH, shown_text, tsquery, literal(_HEADLINE_OPTIONS)),
        ),
        else_=func.ts_headline(_ENGLISH, shown_text, tsquery, literal(_HEADLINE_OPTIONS + ", MaxFragments=1")),
    )
    statement = (
        select(*_result_columns(page), headline.label("marked_snippet"))
        .select_from(page)
        .join(Passage, Passage.id == page.c.passage_id)
        .join(Document, Document.id == Passage.document_id)
        .join(Revision, Revision.id == Passage.revision_id)
        .order_by(page.c.score.desc(), page.c.passage_id)
    )
    count = _filtered(select(func.count()).select_from(Passage), workspace_id, filters).where(matches)
    return statement, count


def _sqlite_statements(
    workspace_id: uuid.UUID, query: ParsedQuery, filters: SearchFilters, *, limit: int, offset: int
) -> tuple[Select[Any], Select[Any]]:
    match = text("passages_fts MATCH :fts_query").bindparams(fts_query=query.fts5())
    # The matches and their scores first, materialized: the full-text index drives the query (left
    # to itself the planner may walk the workspace's passages and probe the index for each), and
    # bm25() runs where it sees the MATCH, which a window count over a join would hide from it.
    # bm25() is lower-is-better (negative); negated so that higher is better on both backends.
    hits = (
        select(_FTS.c.rowid.label("passage_id"), (-func.bm25(_FTS_TABLE)).label("score"))
        .where(match)
        .cte("hits")
        .prefix_with("MATERIALIZED")
    )
    base = select().select_from(hits).join(Passage, Passage.id == hits.c.passage_id)
    page = _ranked_page(base, hits.c.score, workspace_id, filters, None, limit=limit, offset=offset)
    snippet = func.snippet(_FTS_TABLE, 0, MARK_START, MARK_END, "…", _SNIPPET_TOKENS)
    statement = (
        select(*_result_columns(page), snippet.label("marked_snippet"))
        .select_from(page)
        .join(_FTS, _FTS.c.rowid == page.c.passage_id)
        .join(Passage, Passage.id == page.c.passage_id)
        .join(Document, Document.id == Passage.document_id)
        .join(Revision, Revision.id == Passage.revision_id)
        .where(match)
        .order_by(page.c.score.desc(), page.c.passage_id)
    )
    count = _filtered(
        select(func.count()).select_from(hits).join(Passage, Passage.id == hits.c.passage_id), workspace_id, filters
    )
    return statement, count
