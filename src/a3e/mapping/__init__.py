"""Evidence → standards mapping: the engine that ranks standards for a passage, with a calibrated
confidence (`a3e.mapping.engine`), and its evaluation on labelled crosswalks (`a3e.mapping.evaluate`).

Importing this package loads nothing heavy: numpy and the stemmer load with the engine module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from a3e.mapping.engine import EngineConfig, Match, MappingEngine, Standard

__all__ = ["EngineConfig", "Match", "MappingEngine", "Standard"]


def __getattr__(name: str):  # lazy: `from a3e.mapping import MappingEngine` imports the engine then
    if name in __all__:
        from a3e.mapping import engine

        return getattr(engine, name)
    raise AttributeError(name)
