"""State descriptors: what a keyed state is called, what kind it is, and its TTL.

An operator declares its keyed state with a descriptor and asks the backend for the state
object (Flink's ``getRuntimeContext().getState(descriptor)``)::

    counts = backend.get_state(ValueStateDescriptor("count", default=0))
    backend.set_current_key("alice")
    counts.update(counts.value() + 1)

Descriptors are small immutable values and are picklable (they travel inside operators).
The ``kind`` of a descriptor is part of a snapshot: restoring a state under the same name
with another kind is a :class:`~engine.errors.StateError`.
"""

from __future__ import annotations

import datetime as dt
from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Generic, TypeVar

from raystream.engine.errors import ConfigError

from .ttl import DEFAULT_CLEANUP_SIZE

__all__ = [
    "StateTtlConfig",
    "AggregateFunction",
    "StateDescriptor",
    "ValueStateDescriptor",
    "ListStateDescriptor",
    "MapStateDescriptor",
    "ReducingStateDescriptor",
    "AggregatingStateDescriptor",
]

# A state's value (element) type, map keys and values, an aggregation's input, accumulator
# and result. A descriptor whose types say nothing (``ValueStateDescriptor("v")``) has Any
# values: PEP 696 defaults, which typing.TypeVar takes from Python 3.13 on.
if TYPE_CHECKING:
    from typing_extensions import TypeVar as _TypeVarWithDefault

    T = _TypeVarWithDefault("T", default=Any)
    K = _TypeVarWithDefault("K", default=Any)
    V = _TypeVarWithDefault("V", default=Any)
    IN = _TypeVarWithDefault("IN", default=Any)
    ACC = _TypeVarWithDefault("ACC", default=Any)
    OUT = _TypeVarWithDefault("OUT", default=Any)
else:
    T = TypeVar("T")
    K = TypeVar("K")
    V = TypeVar("V")
    IN = TypeVar("IN")
    ACC = TypeVar("ACC")
    OUT = TypeVar("OUT")

_UPDATE_TYPES = ("on_create_and_write", "on_read_and_write")


@dataclass(frozen=True)
class StateTtlConfig:
    """Time-to-live of keyed state entries, in processing time (Flink's ``StateTtlConfig``).

    An entry expires ``ttl_ms`` after its last timestamp update. Expired entries are
    invisible to reads and leave memory without a checkpoint: when read, incrementally
    (every access to the state checks ``cleanup_size`` more entries of it, Flink's
    ``cleanupIncrementally``), in the background (the task's mailbox loop sweeps all TTL
    state a slice at a time) and when a snapshot is taken (expired entries never reach a
    checkpoint). Time comes from the backend's clock.

    Attributes:
        ttl_ms: time to live in milliseconds (> 0).
        update_type: when the timestamp is refreshed: ``"on_create_and_write"`` (writes
            only, the default) or ``"on_read_and_write"`` (reads too).
        return_expired: if True, a read that finds an expired entry not yet cleaned up
            still returns it once (and removes it), like Flink's
            ``ReturnExpiredIfNotCleanedUp``; if False (default) it is never returned.
        cleanup_size: entries of the state checked for expiry on each access (default 5;
            0 leaves cleanup to reads of the entry itself, the background sweep and
            snapshots).

    Example:
        >>> StateTtlConfig(60_000, update_type="on_read_and_write").ttl_ms
        60000
    """

    ttl_ms: int
    update_type: str = "on_create_and_write"
    return_expired: bool = False
    cleanup_size: int = DEFAULT_CLEANUP_SIZE

    def __post_init__(self) -> None:
        if isinstance(self.ttl_ms, bool) or not isinstance(self.ttl_ms, int) or self.ttl_ms <= 0:
            raise ConfigError(f"StateTtlConfig.ttl_ms must be a positive int, got {self.ttl_ms!r}")
        size = self.cleanup_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ConfigError(
                f"StateTtlConfig.cleanup_size must be an int >= 0 (entries checked per state "
                f"access), got {size!r}"
            )
        if self.update_type not in _UPDATE_TYPES:
            raise ConfigError(
                f"StateTtlConfig.update_type must be one of {_UPDATE_TYPES!r}, "
                f"got {self.update_type!r}"
            )

    @property
    def update_on_read(self) -> bool:
        """True if reads refresh the timestamp."""
        return self.update_type == "on_read_and_write"

    class UpdateType(Enum):
        """PyFlink's ``StateTtlConfig.UpdateType``: when an entry's timestamp is refreshed."""

        Disabled = "disabled"
        OnCreateAndWrite = "on_create_and_write"
        OnReadAndWrite = "on_read_and_write"

    class StateVisibility(Enum):
        """PyFlink's ``StateTtlConfig.StateVisibility``: whether an expired entry not yet
        removed may still be read once."""

        ReturnExpiredIfNotCleanedUp = True
        NeverReturnExpired = False

    @staticmethod
    def new_builder(ttl: int | dt.timedelta) -> StateTtlConfigBuilder:
        """A builder, as PyFlink's ``StateTtlConfig.new_builder(Time.seconds(1))``.

        ``ttl`` is milliseconds (``raystream.operators.Time``/``Duration`` give ints of them)
        or a ``datetime.timedelta``.

        Example:
            >>> cfg = (StateTtlConfig.new_builder(60_000)
            ...        .set_update_type(StateTtlConfig.UpdateType.OnReadAndWrite)
            ...        .set_state_visibility(StateTtlConfig.StateVisibility.NeverReturnExpired)
            ...        .build())
            >>> cfg.ttl_ms, cfg.update_type, cfg.return_expired
            (60000, 'on_read_and_write', False)
        """
        return StateTtlConfigBuilder(ttl)


def _ttl_millis(ttl: object) -> object:
    """``ttl`` in ms when it is a timedelta, else ``ttl`` itself (checked by StateTtlConfig)."""
    if isinstance(ttl, dt.timedelta):
        ms = ttl / dt.timedelta(milliseconds=1)
        return int(ms) if ms == int(ms) else ms
    return ttl


class StateTtlConfigBuilder:
    """PyFlink's ``StateTtlConfig.Builder``: ``StateTtlConfig.new_builder(ttl)...build()``.

    Every setter returns the builder; ``build()`` checks the settings (a ``ConfigError`` names
    a wrong one). Cleanup settings that PyFlink offers as choices are what raystream always
    does: ``cleanup_full_snapshot()`` (expired entries never reach a snapshot),
    ``cleanup_in_rocksdb_compact_filter(n)`` (expired entries are removed on access and by
    the task's background sweep) are accepted and change nothing; ``cleanup_incrementally(n,
    ...)`` sets ``cleanup_size``. Only processing time is a TTL time characteristic.

    Example:
        >>> StateTtlConfig.new_builder(1_000).cleanup_incrementally(10, False).build().cleanup_size
        10
    """

    def __init__(self, ttl: int | dt.timedelta) -> None:
        self._ttl: object = _ttl_millis(ttl)
        self._update_type = "on_create_and_write"
        self._return_expired = False
        self._cleanup_size = DEFAULT_CLEANUP_SIZE

    def set_ttl(self, ttl: int | dt.timedelta) -> StateTtlConfigBuilder:
        """The time to live (ms or a ``timedelta``)."""
        self._ttl = _ttl_millis(ttl)
        return self

    def set_update_type(self, update_type: StateTtlConfig.UpdateType) -> StateTtlConfigBuilder:
        """When the timestamp is refreshed: ``StateTtlConfig.UpdateType.OnCreateAndWrite`` or
        ``OnReadAndWrite`` (``Disabled`` is refused: leave TTL off instead)."""
        if not isinstance(update_type, StateTtlConfig.UpdateType):
            raise ConfigError(
                f"StateTtlConfig.Builder.set_update_type() takes a StateTtlConfig.UpdateType "
                f"(OnCreateAndWrite or OnReadAndWrite), got {update_type!r}"
            )
        if update_type is StateTtlConfig.UpdateType.Disabled:
            raise ConfigError(
                "StateTtlConfig.UpdateType.Disabled: a state whose entries never expire needs no "
                "TTL; build the descriptor without enable_time_to_live() / ttl="
            )
        self._update_type = update_type.value
        return self

    def update_ttl_on_create_and_write(self) -> StateTtlConfigBuilder:
        """Refresh the timestamp on writes only (the default)."""
        return self.set_update_type(StateTtlConfig.UpdateType.OnCreateAndWrite)

    def update_ttl_on_read_and_write(self) -> StateTtlConfigBuilder:
        """Refresh the timestamp on reads and writes."""
        return self.set_update_type(StateTtlConfig.UpdateType.OnReadAndWrite)

    def set_state_visibility(self, visibility: StateTtlConfig.StateVisibility) -> StateTtlConfigBuilder:
        """``StateTtlConfig.StateVisibility.NeverReturnExpired`` (the default) or
        ``ReturnExpiredIfNotCleanedUp``."""
        if not isinstance(visibility, StateTtlConfig.StateVisibility):
            raise ConfigError(
                f"StateTtlConfig.Builder.set_state_visibility() takes a StateTtlConfig.StateVisibility "
                f"(NeverReturnExpired or ReturnExpiredIfNotCleanedUp), got {visibility!r}"
            )
        self._return_expired = visibility.value
        return self

    def return_expired_if_not_cleaned_up(self) -> StateTtlConfigBuilder:
        """An expired entry not yet removed is still returned once."""
        return self.set_state_visibility(StateTtlConfig.StateVisibility.ReturnExpiredIfNotCleanedUp)

    def never_return_expired(self) -> StateTtlConfigBuilder:
        """An expired entry is never returned (the default)."""
        return self.set_state_visibility(StateTtlConfig.StateVisibility.NeverReturnExpired)

    def cleanup_incrementally(self, cleanup_size: int, run_cleanup_for_every_record: bool = False) -> StateTtlConfigBuilder:
        """Check ``cleanup_size`` entries for expiry on every access of the state (raystream
        does on every access; ``run_cleanup_for_every_record`` changes nothing)."""
        self._cleanup_size = cleanup_size
        return self

    def cleanup_full_snapshot(self) -> StateTtlConfigBuilder:
        """Accepted: expired entries never reach a snapshot anyway."""
        return self

    def cleanup_in_rocksdb_compact_filter(self, query_time_after_num_entries: int = 1000) -> StateTtlConfigBuilder:
        """Accepted: expired RocksDB entries are removed on access and by the background sweep."""
        return self

    def use_processing_time(self) -> StateTtlConfigBuilder:
        """Accepted: TTL runs on processing time (the only TTL time characteristic)."""
        return self

    def build(self) -> StateTtlConfig:
        """The :class:`StateTtlConfig` (a ``ConfigError`` names a wrong setting)."""
        return StateTtlConfig(
            self._ttl,  # type: ignore[arg-type]  # checked by StateTtlConfig
            update_type=self._update_type,
            return_expired=self._return_expired,
            cleanup_size=self._cleanup_size,
        )


StateTtlConfig.Builder = StateTtlConfigBuilder  # type: ignore[attr-defined]  # PyFlink's spelling


class AggregateFunction(ABC, Generic[IN, ACC, OUT]):
    """An incremental aggregation (Flink's ``AggregateFunction``), used by aggregating state.

    Example:
        >>> class Average(AggregateFunction):
        ...     def create_accumulator(self): return (0, 0)
        ...     def add(self, value, acc): return (acc[0] + value, acc[1] + 1)
        ...     def get_result(self, acc): return acc[0] / acc[1]
        ...     def merge(self, a, b): return (a[0] + b[0], a[1] + b[1])
        >>> f = Average(); f.get_result(f.add(4, f.add(2, f.create_accumulator())))
        3.0
    """

    @abstractmethod
    def create_accumulator(self) -> ACC:
        """A new, empty accumulator."""

    @abstractmethod
    def add(self, value: IN, accumulator: ACC) -> ACC:
        """Add ``value`` to ``accumulator`` and return the updated accumulator."""

    @abstractmethod
    def get_result(self, accumulator: ACC) -> OUT:
        """The aggregate's result for ``accumulator``."""

    @abstractmethod
    def merge(self, a: ACC, b: ACC) -> ACC:
        """Merge two accumulators (used when windows or key groups merge)."""


def _check_name(name: object) -> None:
    if not isinstance(name, str) or not name:
        raise ConfigError(f"state name must be a non-empty str, got {name!r}")


def _check_ttl(name: str, ttl: object) -> None:
    if ttl is not None and not isinstance(ttl, StateTtlConfig):
        raise ConfigError(f"ttl of state {name!r} must be a StateTtlConfig or None, got {ttl!r}")


@dataclass(frozen=True)
class StateDescriptor:
    """Base of all state descriptors: a name, a kind and an optional TTL."""

    kind: ClassVar[str] = "abstract"
    name: str

    def __post_init__(self) -> None:
        _check_name(self.name)
        _check_ttl(self.name, getattr(self, "ttl", None))

    def enable_time_to_live(self, ttl_config: StateTtlConfig) -> None:
        """Give the state a TTL, as PyFlink's ``descriptor.enable_time_to_live(ttl_config)``
        (the same as passing ``ttl=``); call it before the state is first asked for.

        Example:
            >>> d = ValueStateDescriptor("last")
            >>> d.enable_time_to_live(StateTtlConfig.new_builder(60_000).build())
            >>> d.ttl.ttl_ms
            60000
        """
        if not hasattr(self, "ttl"):
            raise ConfigError(f"state {self.name!r} of kind {self.kind!r} takes no TTL")
        _check_ttl(self.name, ttl_config)
        if ttl_config is None:
            raise ConfigError(f"enable_time_to_live() of state {self.name!r} needs a StateTtlConfig, got None")
        object.__setattr__(self, "ttl", ttl_config)  # frozen dataclass: PyFlink's setter


@dataclass(frozen=True)
class ValueStateDescriptor(StateDescriptor, Generic[T]):
    """A single value per key.

    ``default`` is returned by ``value()`` when the key has no value; it is shared, so
    use an immutable default (or None; then declare ``T`` to include None, e.g.
    ``ValueStateDescriptor[int | None]("last")``).

    Example:
        >>> ValueStateDescriptor("count", default=0).kind
        'value'
    """

    kind: ClassVar[str] = "value"
    default: T | None = None
    ttl: StateTtlConfig | None = None


@dataclass(frozen=True)
class ListStateDescriptor(StateDescriptor, Generic[T]):
    """A list of values per key (TTL applies to each element).

    Example:
        >>> ListStateDescriptor("buffer").kind
        'list'
    """

    kind: ClassVar[str] = "list"
    ttl: StateTtlConfig | None = None


@dataclass(frozen=True)
class MapStateDescriptor(StateDescriptor, Generic[K, V]):
    """A dict per key (TTL applies to each map entry).

    Example:
        >>> MapStateDescriptor("last_seen").kind
        'map'
    """

    kind: ClassVar[str] = "map"
    ttl: StateTtlConfig | None = None


@dataclass(frozen=True)
class ReducingStateDescriptor(StateDescriptor, Generic[T]):
    """A value per key folded with ``reduce_fn(accumulated, new) -> accumulated``.

    Example:
        >>> ReducingStateDescriptor("sum", lambda a, b: a + b).kind
        'reducing'
    """

    kind: ClassVar[str] = "reducing"
    reduce_fn: Callable[[T, T], T] | None = None  # required: None is refused below
    ttl: StateTtlConfig | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not callable(self.reduce_fn):
            raise ConfigError(
                f"reduce_fn of state {self.name!r} must be callable, got {self.reduce_fn!r}"
            )


@dataclass(frozen=True)
class AggregatingStateDescriptor(StateDescriptor, Generic[IN, ACC, OUT]):
    """An accumulator per key driven by an :class:`AggregateFunction`.

    Example:
        >>> class Count(AggregateFunction):
        ...     def create_accumulator(self): return 0
        ...     def add(self, value, acc): return acc + 1
        ...     def get_result(self, acc): return acc
        ...     def merge(self, a, b): return a + b
        >>> AggregatingStateDescriptor("n", Count()).kind
        'aggregating'
    """

    kind: ClassVar[str] = "aggregating"
    aggregate_function: AggregateFunction[IN, ACC, OUT] | None = None  # required: None is refused below
    ttl: StateTtlConfig | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        f = self.aggregate_function
        missing = [
            m
            for m in ("create_accumulator", "add", "get_result", "merge")
            if not callable(getattr(f, m, None))
        ]
        if missing:
            raise ConfigError(
                f"aggregate_function of state {self.name!r} must implement "
                f"create_accumulator/add/get_result/merge (missing {missing!r}), got {f!r}"
            )
