"""The built-in accreditor catalogs as `Standard`s for the engine, and engines over them, cached.

Each node becomes one standard: its title, its description as text, its typical evidence, and
the titles of the nodes above it as ancestors. Ids are the node codes ("8.2.a"); with
`qualify=True` they carry the accreditor ("SACSCOC:8.2.a"), so that several catalogs can share
one engine.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from a3e.mapping.engine import DEFAULT_CONFIG, EngineConfig, MappingEngine, Standard


class UnknownFramework(LookupError):
    """No built-in catalog has this accreditor code or edition; the message lists what exists."""


def _edition(framework: str, edition: str | None):
    from a3e.standards.catalogs import registry

    reg = registry()
    accreditor = reg.get(framework)
    if accreditor is None:
        known = ", ".join(code.lower() for code in reg.accreditors)
        raise UnknownFramework(f"unknown framework {framework!r}; the built-in ones are {known}")
    found = accreditor.edition(edition)
    if found is None:
        known = ", ".join(accreditor.editions)
        raise UnknownFramework(f"{accreditor.code} has no edition {edition!r}; it has {known}")
    return found


def builtin_standards(framework: str, edition: str | None = None, *, qualify: bool = False) -> list[Standard]:
    """The standards of a built-in catalog (default edition unless `edition` is given)."""
    found = _edition(framework, edition)
    prefix = f"{found.accreditor}:" if qualify else ""
    standards: list[Standard] = []
    for node in found.nodes:
        ancestors: list[str] = []
        parent = node.parent
        while parent is not None:
            above = found.by_code[parent]
            ancestors.append(above.title)
            parent = above.parent
        standards.append(
            Standard(
                id=prefix + node.code,
                title=node.title,
                text=node.description,
                evidence="; ".join(node.typical_evidence) or None,
                ancestors=tuple(reversed(ancestors)),
            )
        )
    return standards


def builtin_title(framework: str, code: str, edition: str | None = None) -> str:
    return _edition(framework, edition).by_code[code].title


def builtin_engine(frameworks: Sequence[str], config: EngineConfig = DEFAULT_CONFIG) -> MappingEngine:
    """One engine over the default editions of `frameworks` (ids qualified when more than one),
    built on first use and kept: the catalogs ship with the package and never change at run time."""
    return _builtin_engine(tuple(code.strip().upper() for code in frameworks), config)


@functools.lru_cache(maxsize=16)
def _builtin_engine(frameworks: tuple[str, ...], config: EngineConfig) -> MappingEngine:
    qualify = len(frameworks) > 1
    standards = [s for code in frameworks for s in builtin_standards(code, qualify=qualify)]
    return MappingEngine.build(standards, config)
