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

import pickle
from typing import Any

import cloudpickle

from .errors import CheckpointError

__all__ = ["dumps", "loads"]

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


def loads(data: bytes | memoryview, what: str = "state") -> Any:
    """Deserialize bytes written by :func:`dumps`.

    Raises:
        CheckpointError: the bytes are not valid pickle data, or a class they reference
            cannot be imported.
    """
    try:
        return pickle.loads(data)
    except Exception as exc:
        raise CheckpointError(f"cannot deserialize {what}: {type(exc).__name__}: {exc}") from exc
