"""Turning text into index terms: normalize, split into words, drop stopwords, stem.

The Snowball English stemmer (PyStemmer, the Snowball project's C binding) is loaded on first use,
not at import. Terms are stemmed words; `bigrams` adds adjacent pairs of non-stopwords ("risk
assess", "busi continu"), which keep a phrase's meaning that its words alone lose.
"""

from __future__ import annotations

import functools
import re
import threading
import unicodedata
from collections.abc import Iterable

# Words that carry no topic in standards and evidence: English function words plus the modal and
# boilerplate words of requirement statements ("the institution shall ensure that ...").
STOPWORDS: frozenset[str] = frozenset(
    """
    a about above after again against all also am an and any are as at be because been before being
    below between both but by can could did do does doing done down during each either etc few for
    from further had has have having he her here hers herself him himself his how however i if in
    into is it its itself just least less may me might more most must my myself neither no nor not
    now of off on once only or other our ours ourselves out over own per same shall she should so
    some such than that the their theirs them themselves then there these they this those through
    thus to too under until up upon us very via was we were what when where whether which while who
    whom whose why will with within without would yet you your yours yourself yourselves e g ie eg
    i.e e.g including include includes included relevant appropriate appropriately ensure ensures
    ensured ensuring
    """.split()
)

_WORD = re.compile(r"[a-z0-9]+(?:['’][a-z]+)?")
_stemmer_lock = threading.Lock()
_stemmer = None


def _stem_words(words: list[str]) -> list[str]:
    global _stemmer
    if _stemmer is None:
        with _stemmer_lock:
            if _stemmer is None:
                import Stemmer  # PyStemmer: imported on first use, never at import time

                _stemmer = Stemmer.Stemmer("english")
    return _stemmer.stemWords(words)


def words(text: str) -> list[str]:
    """Lower-cased words with accents folded and possessives dropped ("organization’s" → "organization")."""
    folded = unicodedata.normalize("NFKD", text.lower())
    folded = "".join(ch for ch in folded if not unicodedata.combining(ch))
    return [re.sub(r"['’].*$", "", word) for word in _WORD.findall(folded)]


# Cached: the headings above a document's passages repeat from passage to passage, and the same
# standards are indexed again under another configuration.
@functools.lru_cache(maxsize=8192)
def terms(text: str, bigrams: bool = False, stem: bool = True) -> tuple[str, ...]:
    """Index terms of `text`, in order: stemmed non-stopwords that are not bare numbers, and with
    `bigrams` also "a b" for each adjacent pair of them."""
    kept = [w for w in words(text) if w not in STOPWORDS and len(w) > 1 and not w.isdigit()]
    stems = _stem_words(kept) if stem else kept
    if not bigrams or len(stems) < 2:
        return tuple(stems)
    return (*stems, *(f"{a} {b}" for a, b in zip(stems, stems[1:])))


def join_nonempty(parts: Iterable[str | None], sep: str = " ") -> str:
    return sep.join(part for part in parts if part)
