"""Serialization of state values: pickle protocol 5, cloudpickle as the fallback.

Plain data (numbers, strings, containers, numpy arrays, Arrow objects, classes importable
by module path) goes through the C pickler, which is fast. Values the standard pickler
refuses (lambdas, local classes, objects defined in ``__main__`` of a notebook) are
pickled with cloudpickle; its output is ordinary pickle data, so :func:`loads` reads both.

Example:
    >>> loads(dumps({"a": [1, 2]}))
    {'a': [1, 2]}
    >>> loads(dumps(lambda x: x + 1))(1)
    2
"""

from __future__ import annotations

import io
import pickle
from typing import Any

import cloudpickle

from .errors import CheckpointError

__all__ = ["dumps", "find_unpicklable", "loads"]

_PROTOCOL = 5


def dumps(obj: Any, what: str = "state") -> bytes:
    """Serialize ``obj`` to bytes (pickle protocol 5, falling back to cloudpickle).

    Args:
        obj: the value to serialize.
        what: a description used in the error message (e.g. ``"state 'counts'"``).

    Raises:
        CheckpointError: neither pickle nor cloudpickle can serialize ``obj``.
    """
    try:
        return pickle.dumps(obj, protocol=_PROTOCOL)
    except (pickle.PicklingError, TypeError, AttributeError):
        pass
    try:
        return cloudpickle.dumps(obj, protocol=_PROTOCOL)
    except Exception as exc:
        raise CheckpointError(
            f"cannot serialize {what}: {type(exc).__name__}: {exc}; state values must be "
            "picklable (or cloudpicklable)"
        ) from exc


# raystream 0.1 installed its packages at the top level (``engine``, ``operators`` ...); state
# and checkpoints written then name classes by those paths
_LEGACY_PACKAGES = ("engine", "operators", "statefun_api", "checkpoint", "jobs")


class _LegacyNamesUnpickler(pickle.Unpickler):
    """Reads pickles that name ``engine.x.Class`` as ``raystream.engine.x.Class``."""

    def find_class(self, module: str, name: str) -> Any:
        if module.split(".", 1)[0] in _LEGACY_PACKAGES:
            module = f"raystream.{module}"
        return super().find_class(module, name)


def loads(data: bytes | memoryview, what: str = "state") -> Any:
    """Deserialize bytes written by :func:`dumps` (also by raystream 0.1, whose packages had no
    ``raystream.`` prefix).

    Raises:
        CheckpointError: the bytes are not valid pickle data, or a class they reference
            cannot be imported.
    """
    try:
        return pickle.loads(data)
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".", 1)[0] not in _LEGACY_PACKAGES:
            raise CheckpointError(f"cannot deserialize {what}: {type(exc).__name__}: {exc}") from exc
        try:
            return _LegacyNamesUnpickler(io.BytesIO(data)).load()
        except Exception as retry:
            raise CheckpointError(f"cannot deserialize {what}: {type(retry).__name__}: {retry}") from retry
    except Exception as exc:
        raise CheckpointError(f"cannot deserialize {what}: {type(exc).__name__}: {exc}") from exc


def find_unpicklable(obj: Any, where: str, depth: int = 0) -> str | None:
    """Why ``obj`` cannot be shipped to another process, as a path to the culprit, e.g.
    ``"function 'add_user' (job.py:12) captures 'lock' = <unlocked _thread.lock ...>"``;
    None if cloudpickle can serialize it. Looks into closures, referenced globals, bound
    objects' attributes and containers (a few levels deep)."""
    try:
        cloudpickle.dumps(obj)
        return None
    except Exception as exc:  # noqa: BLE001 - what fails is what we look for
        reason = f"{type(exc).__name__}: {exc}"
    if depth < 4:
        for label, child in _children(obj):
            found = find_unpicklable(child, label, depth + 1)
            if found is not None:
                return f"{where} -> {found}" if depth else found
    return f"{where} = {_short(obj)} ({reason})"


def _children(obj: Any) -> list[tuple[str, Any]]:
    code = getattr(obj, "__code__", None)
    if code is not None:  # a function: its closure cells and the globals it names
        name = getattr(obj, "__qualname__", getattr(obj, "__name__", "function"))
        at = f"{code.co_filename.rsplit('/', 1)[-1]}:{code.co_firstlineno}"
        out: list[tuple[str, Any]] = []
        for var, cell in zip(code.co_freevars, getattr(obj, "__closure__", None) or ()):
            try:
                out.append((f"function {name!r} ({at}) captures {var!r}", cell.cell_contents))
            except ValueError:  # an empty cell
                pass
        g = getattr(obj, "__globals__", {})
        out += [(f"function {name!r} ({at}) uses global {n!r}", g[n]) for n in code.co_names if n in g]
        return out
    if hasattr(obj, "__func__") and hasattr(obj, "__self__"):  # a bound method
        return [("its object", obj.__self__), ("the method", obj.__func__)]
    if isinstance(obj, dict):
        return [(f"[{k!r}]", v) for k, v in obj.items()]
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [(f"[{i}]", v) for i, v in enumerate(obj)]
    attrs = getattr(obj, "__dict__", None)
    if isinstance(attrs, dict):
        return [(f"attribute {k!r}", v) for k, v in attrs.items()]
    return []


def _short(obj: Any, limit: int = 80) -> str:
    text = repr(obj)
    return text if len(text) <= limit else text[: limit - 3] + "..."
