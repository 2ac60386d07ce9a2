"""State value serialization (pickle protocol 5, cloudpickle fallback): the engine's
:mod:`engine.serde`, re-exported here where state code has always found it."""

from raystream.engine.serde import dumps, loads

__all__ = ["dumps", "loads"]
