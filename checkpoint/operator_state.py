"""Non-keyed operator state: named lists, redistributed as a union on restore.

Sources and sinks keep their state (split offsets, pending transactions) in list states
of an :class:`OperatorStateStore`. On restore every subtask receives the **union** of the
lists of all old subtasks, in old-subtask order (Flink's *union list state*). Each
subtask then picks its share, e.g. the splits ``i`` with ``i % parallelism == index``,
or a sink re-commits every pending transaction idempotently. Union redistribution is
correct at any old and new parallelism; the price is that every subtask reads all of it,
so keep operator state small. Per-key state an operator keeps itself belongs in a
:class:`~engine.operator.KeyGroupedState` of its ``snapshot_state`` value instead: that is
re-split by key group, each subtask receiving only its own key groups.

Example:
    >>> store = OperatorStateStore()
    >>> offsets = store.get_list_state("offsets")
    >>> offsets.update([("split-0", 42)])
    >>> snap = store.snapshot()
    >>> offsets.add(("split-1", 7))             # later changes do not affect snap
    >>> restored = OperatorStateStore(); restored.restore([snap, snap])
    >>> restored.get_list_state("offsets").get()
    [('split-0', 42), ('split-0', 42)]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, Iterable, TypeVar

from raystream.engine.errors import CheckpointError, StateError

from .serde import dumps, loads

__all__ = ["DroppableState", "OperatorListState", "OperatorStateSnapshot", "OperatorStateStore"]

T = TypeVar("T")


@dataclass(frozen=True)
class DroppableState:
    """An operator's snapshot that only guides the operator itself and holds nothing a job
    without it would miss: a restore into a job that lacks the operator (its uid) drops it
    without ``allow_non_restored_state`` (which a savepoint with any other state for an
    operator the job lacks needs, as in Flink). The operator's ``restore_state`` gets it as it
    is (read ``.value``). E.g. a window combiner's watermark: a job restored with
    ``aggregate(..., combine=False)`` has no combiner and loses nothing.

    Example:
        >>> DroppableState({"watermark": 5}).value
        {'watermark': 5}
    """

    value: Any


class OperatorListState(Generic[T]):
    """A named list of an operator subtask (not scoped to a key).

    Example:
        >>> s = OperatorStateStore().get_list_state("pending")
        >>> s.add_all([1, 2]); s.get()
        [1, 2]
    """

    __slots__ = ("_name", "_items")

    def __init__(self, name: str, items: list[T] | None = None) -> None:
        self._name = name
        self._items: list[T] = items if items is not None else []

    @property
    def name(self) -> str:
        """The state's name."""
        return self._name

    def get(self) -> list[T]:
        """A new list with the elements."""
        return list(self._items)

    def add(self, value: T) -> None:
        """Append ``value``."""
        self._items.append(value)

    def add_all(self, values: Iterable[T]) -> None:
        """Append every value of ``values``."""
        self._items.extend(values)

    def update(self, values: Iterable[T]) -> None:
        """Replace the elements with ``values``."""
        self._items[:] = list(values)

    def clear(self) -> None:
        """Remove all elements."""
        self._items.clear()

    def __repr__(self) -> str:
        return f"OperatorListState({self._name!r}, {len(self._items)} items)"


@dataclass(frozen=True)
class OperatorStateSnapshot:
    """An immutable, picklable copy of an :class:`OperatorStateStore`.

    Attributes:
        states: the pickled list of every state, by name.
    """

    states: dict[str, bytes] = field(default_factory=dict)

    @property
    def size_bytes(self) -> int:
        """Total size of the pickled lists."""
        return sum(len(b) for b in self.states.values())


class OperatorStateStore:
    """Named list states of one operator subtask, with union redistribution on restore.

    Call order: :meth:`restore` (on recovery, before the operator opens), then
    :meth:`get_list_state` any number of times, and :meth:`snapshot` at each barrier.

    Example:
        >>> store = OperatorStateStore()
        >>> store.get_list_state("a") is store.get_list_state("a")
        True
    """

    def __init__(self) -> None:
        self._states: dict[str, OperatorListState[Any]] = {}

    def get_list_state(self, name: str) -> OperatorListState[Any]:
        """The list state called ``name`` (created empty, or holding the restored union)."""
        if not isinstance(name, str) or not name:
            raise StateError(f"operator state name must be a non-empty str, got {name!r}")
        state = self._states.get(name)
        if state is None:
            state = self._states[name] = OperatorListState(name)
        return state

    # Flink's name for the same thing; every list state here is a union list state
    get_union_list_state = get_list_state

    def state_names(self) -> list[str]:
        """Names of all list states."""
        return sorted(self._states)

    def snapshot(self) -> OperatorStateSnapshot:
        """Copy every list state into an immutable snapshot (empty lists included).

        Raises:
            CheckpointError: an element cannot be pickled (the message names the state).
        """
        return OperatorStateSnapshot(
            {
                name: dumps(state._items, f"operator state {name!r}")
                for name, state in self._states.items()
            }
        )

    def restore(self, snapshots: list[OperatorStateSnapshot]) -> None:
        """Replace all state with the union of ``snapshots`` (in list order).

        Every subtask of the new run gets the same union; see the module docstring.

        Raises:
            CheckpointError: an element is not an :class:`OperatorStateSnapshot` or cannot
                be unpickled.
        """
        union: dict[str, list[Any]] = {}
        for snap in snapshots:
            if not isinstance(snap, OperatorStateSnapshot):
                raise CheckpointError(
                    f"restore() needs OperatorStateSnapshot objects, got {snap!r}"
                )
            for name, data in snap.states.items():
                union.setdefault(name, []).extend(loads(data, f"operator state {name!r}"))
        for state in self._states.values():
            state.clear()
        for name, items in union.items():
            self.get_list_state(name).add_all(items)
