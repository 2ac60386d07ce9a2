"""The keyed state backend contract, as the task runtime and keyed operators use it.

Calling protocol (all on the task's single mailbox thread, no locks):

1. The task builds one backend per keyed operator with the subtask's
   :class:`~engine.keygroups.KeyGroupRange` and the job's ``max_parallelism``.
2. On recovery it calls :meth:`KeyedStateBackend.restore` once, before ``open()``, with
   the keyed snapshots of *all* old subtasks; the backend keeps its own key groups.
3. The operator calls :meth:`get_state` (usually in ``open()``) and, for every record,
   the task or operator calls :meth:`set_current_key` (or the fast
   :meth:`set_current_key_with_group` when the key group is already known from routing);
   state objects then act on that key.
4. At a barrier the task calls :meth:`snapshot`; the result is an immutable copy, so
   processing continues while it is written to storage on another thread.
5. Between records the task calls :meth:`cleanup` with a small budget (a slice of its
   mailbox loop every ~100 ms) so that expired TTL state leaves memory without a checkpoint.

**Capability: off-heap state.** A backend whose :attr:`KeyedStateBackend.off_heap` is True
(the RocksDB one) keeps state outside the Python heap; keyed operators then keep *their own*
per-key state in it too, instead of in dicts of the operator (Flink keeps reduce state in a
``ReducingState`` and timers in the backend's priority-queue state): the record-API
``reduce`` in a reducing state, and process functions' timers in the queues of
:meth:`KeyedStateBackend.create_timer_queue`. Such state is part of the keyed snapshot, so it
is re-split by key group on rescaling like any other state. On the heap backend
(``off_heap`` False) operators keep their fast in-operator dicts and heaps.

The backend owns the state; state objects and snapshots never outlive their meaning
(a snapshot is a value, a state object is a view).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Iterator, Protocol, TypeVar, overload

from raystream.engine.errors import StateError, refusing_restore
from raystream.engine.keygroups import KeyGroupRange
from raystream.engine.operator import Clock

from .descriptors import (
    AggregatingStateDescriptor,
    ListStateDescriptor,
    MapStateDescriptor,
    ReducingStateDescriptor,
    StateDescriptor,
    ValueStateDescriptor,
)
from .snapshot import KeyedStateSnapshot
from .state import (
    AggregatingState,
    KeyedState,
    ListState,
    MapState,
    ReducingState,
    ValueState,
)

__all__ = ["KeyedStateBackend", "KeyGroupedTimerQueue"]

T = TypeVar("T")
K = TypeVar("K")
V = TypeVar("V")
IN = TypeVar("IN")
ACC = TypeVar("ACC")
OUT = TypeVar("OUT")


class KeyGroupedTimerQueue(Protocol):
    """Deduplicated timers ``(time, key, namespace)`` of one time domain, ordered by time
    and stored per key group (what :class:`operators.timers.InternalTimerService` drives;
    Flink's ``KeyGroupedInternalPriorityQueue``). ``snapshot``/``restore`` move timers kept
    outside keyed state (the heap queue); a queue in the keyed backend snapshots nothing
    itself and ``restore`` imports timers of the heap format (switching a job's backend)."""

    def add(self, key: Any, ns: Any, time: int, kg: int | None = None) -> bool:
        """Add a timer; False if it was there already."""
        ...

    def add_many(self, keys: list[Any], ns: Any, time: int) -> None:
        """``add(key, ns, time)`` for each of ``keys``, in order."""
        ...

    def remove(self, key: Any, ns: Any, time: int) -> bool:
        """Delete a timer; True if it existed."""
        ...

    def pop_due(self, limit: int) -> tuple[int, Any, Any] | None:
        """Remove and return the earliest timer ``(time, key, ns)`` with time <= ``limit``."""
        ...

    def peek_time(self) -> int | None:
        """The earliest timer's time (None: no timer)."""
        ...

    def __len__(self) -> int: ...

    def timers_of(self, key: Any) -> list[tuple[int, Any]]:
        """``[(time, ns)]`` of ``key``'s timers, sorted."""
        ...

    def snapshot(self) -> dict[int, list[tuple[int, Any, Any]]]:
        """Timers per key group, for the operator's snapshot (empty if kept in keyed state)."""
        ...

    def restore(self, parts: dict[int, list[tuple[int, Any, Any]]], key_groups: KeyGroupRange) -> None:
        """Add the timers of ``key_groups`` from ``parts`` (a :meth:`snapshot`)."""
        ...

    def stats(self) -> dict[str, int]:
        """Sizes of the queue's in-memory structures, for metrics."""
        ...


class KeyedStateBackend(ABC):
    """Keyed state of one operator subtask, partitioned by key group."""

    #: True: state lives outside the Python heap (see the module docstring); keyed
    #: operators then keep their per-key state (reduce values, timers) in this backend
    off_heap: bool = False
    #: set up by each implementation's ``__init__``: the registered states by name, the
    #: current key and its key group (-1: none yet), the owned key groups, the number of
    #: key groups and the TTL clock
    _states: dict[str, KeyedState]
    _key: Any
    _kg: int
    _range: KeyGroupRange
    _max_par: int
    _clock: Clock

    @property
    def key_group_range(self) -> KeyGroupRange:
        """The key groups this backend owns."""
        return self._range

    @property
    def max_parallelism(self) -> int:
        """The job's number of key groups."""
        return self._max_par

    @property
    def clock(self) -> Clock:
        """The processing-time clock used for TTL."""
        return self._clock

    @abstractmethod
    def set_current_key(self, key: Any) -> None:
        """Make ``key`` the key that state objects act on.

        Raises:
            StateError: the key's group is outside :attr:`key_group_range`.
        """

    @abstractmethod
    def set_current_key_with_group(self, key: Any, key_group: int) -> None:
        """Like :meth:`set_current_key` when the caller already computed the key group."""

    @abstractmethod
    def clear_current_key(self) -> None:
        """No key is current any more: state used now raises a :class:`StateError` (the task
        calls it before closing its operators, so that a function's ``close()`` cannot read
        or write the last record's key by accident, as in Flink)."""

    @property
    def current_key(self) -> Any:
        """The current key (raises StateError if none was set)."""
        if self._kg < 0:
            raise StateError("no current key: call set_current_key(key) first")
        return self._key

    @property
    def current_key_group(self) -> int:
        """The current key's group (raises StateError if no key was set)."""
        if self._kg < 0:
            raise StateError("no current key: call set_current_key(key) first")
        return self._kg

    @overload
    def get_state(self, descriptor: ValueStateDescriptor[T]) -> ValueState[T]: ...
    @overload
    def get_state(self, descriptor: ListStateDescriptor[T]) -> ListState[T]: ...
    @overload
    def get_state(self, descriptor: MapStateDescriptor[K, V]) -> MapState[K, V]: ...
    @overload
    def get_state(self, descriptor: ReducingStateDescriptor[T]) -> ReducingState[T]: ...
    @overload
    def get_state(self, descriptor: AggregatingStateDescriptor[IN, ACC, OUT]) -> AggregatingState[IN, OUT]: ...
    @overload
    def get_state(self, descriptor: StateDescriptor) -> KeyedState: ...
    def get_state(self, descriptor: StateDescriptor) -> KeyedState:
        """The state object for ``descriptor`` (the same object for the same name), typed
        by the descriptor: a ``ValueStateDescriptor[int]`` gives a ``ValueState[int]``.

        Raises:
            StateError: a state of another kind already uses this name (registered now or
                found in the restored snapshot), or the descriptor's kind is unknown.
        """
        if not isinstance(descriptor, StateDescriptor):
            raise StateError(f"get_state() needs a state descriptor, got {descriptor!r}")
        name = descriptor.name
        existing = self._states.get(name)
        if existing is not None:
            if existing.descriptor.kind != descriptor.kind:
                raise StateError(
                    f"state {name!r} is already registered as {existing.descriptor.kind!r} "
                    f"state; cannot get it as {descriptor.kind!r} state (use another name)"
                )
            return existing
        state = self._new_state(descriptor)
        self._states[name] = state
        return state

    @abstractmethod
    def _new_state(self, descriptor: StateDescriptor) -> KeyedState:
        """A state object for ``descriptor``, whose name is not registered yet (restored
        entries of that name converted to it); :meth:`get_state` registers it."""

    @staticmethod
    def _check_restored_kind(name: str, restored_kind: str, descriptor: StateDescriptor) -> None:
        if restored_kind != descriptor.kind:
            raise refusing_restore(StateError(
                f"state {name!r} was restored as {restored_kind!r} state but is now "
                f"declared as {descriptor.kind!r} state; keep the kind or rename the state"
            ))

    @staticmethod
    def _state_class(classes: dict[str, Any], descriptor: StateDescriptor) -> Any:
        cls = classes.get(descriptor.kind)
        if cls is None:
            raise StateError(f"state {descriptor.name!r} has unknown kind {descriptor.kind!r}")
        return cls

    @abstractmethod
    def state_names(self) -> list[str]:
        """Names of all states: registered ones and restored ones not asked for yet."""

    @abstractmethod
    def keys(self, state_name: str) -> Iterator[Any]:
        """Every key that has a (live) value in state ``state_name``."""

    @abstractmethod
    def num_keys(self) -> int:
        """Number of distinct keys with any state."""

    @abstractmethod
    def snapshot(self, checkpoint_id: int) -> KeyedStateSnapshot:
        """An immutable copy of all state, for checkpoint ``checkpoint_id``."""

    @abstractmethod
    def restore(self, snapshots: list[KeyedStateSnapshot]) -> None:
        """Replace all state with this backend's key groups from ``snapshots``."""

    def trust_restored_key_types(self) -> None:
        """Skip the check of the first keys' types after :meth:`restore` (see
        :class:`~checkpoint.snapshot.KeyTypeCheck`): the restore is the job's own (a
        restart or a master takeover of the same job, whose code and keys did not change),
        not a savepoint or another job's checkpoint given by the user. Default: no check."""

    def cleanup(self, budget: int = 1000) -> int:
        """Remove expired TTL entries, checking at most about ``budget`` of them; returns the
        work done (less than ``budget``: nothing left to check in this pass). Called by the
        task on its mailbox thread, between records. Default: nothing to clean up."""
        return 0

    def create_timer_queue(self, name: str) -> KeyGroupedTimerQueue:
        """A timer queue stored in this backend under ``name`` (one per time domain and
        operator), part of the keyed snapshot. Only off-heap backends have them.

        Raises:
            StateError: this backend keeps no timers (``off_heap`` is False).
        """
        raise StateError(f"{type(self).__name__} keeps no timers (off_heap is False): timers stay in the operator")

    def close(self) -> None:
        """Release the state (the backend must not be used afterwards). Default: nothing."""
        return None
