"""User function interfaces (PyFlink names): process functions, their contexts, side outputs.

* :class:`ProcessFunction`: one input without a key (``stream.process(fn)``): records,
  timestamps, side outputs, the current watermark; no keyed state and no timers.
* :class:`KeyedProcessFunction`: one keyed input, per-key state, timers (``on_timer``).
* :class:`CoProcessFunction` / :class:`KeyedCoProcessFunction`: two connected inputs.
* :class:`BroadcastProcessFunction`: a stream connected with a broadcast stream whose
  elements update *broadcast state* that every parallel instance sees.
* :class:`OutputTag`: names a side output; ``ctx.output(tag, value)`` emits to it and
  ``stream.get_side_output(tag)`` reads it.

Example:
    >>> class Timeout(KeyedProcessFunction):
    ...     def process_element(self, value, ctx):
    ...         ctx.timer_service().register_event_time_timer(ctx.timestamp + 1000)
    ...     def on_timer(self, timestamp, ctx):
    ...         yield (ctx.get_current_key(), "timeout", timestamp)
"""

from __future__ import annotations

import traceback
from abc import ABC, abstractmethod
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Generic,
    Iterable,
    NoReturn,
    TypeVar,
    cast,
    overload,
)

from raystream.engine.errors import ConfigError, short_repr
from raystream.engine.operator import OperatorContext

if TYPE_CHECKING:
    from raystream.checkpoint.backend import KeyedStateBackend
    from raystream.checkpoint.descriptors import (
        AggregatingStateDescriptor,
        ListStateDescriptor,
        MapStateDescriptor,
        ReducingStateDescriptor,
        StateDescriptor,
        ValueStateDescriptor,
    )
    from raystream.checkpoint.state import (
        AggregatingState,
        KeyedState,
        ListState,
        MapState,
        ReducingState,
        ValueState,
    )

    from .timers import TimerService

__all__ = [
    "OutputTag",
    "RuntimeContext",
    "ProcessFunction",
    "KeyedProcessFunction",
    "ProcessContext",
    "OnTimerContext",
    "CoProcessFunction",
    "KeyedCoProcessFunction",
    "BroadcastProcessFunction",
    "KeyedBroadcastProcessFunction",
    "BroadcastContext",
    "BroadcastState",
]

def add_results(out: list, result: Any, function: Any, method: str, ctx: Any = None) -> None:
    """Append to ``out`` the records a process function's ``method`` returned: an iterable of
    records (a generator, a list), or None for none. A dict, str or bytes (one record, not
    records: iterating it gave its keys or characters as records) or a non-iterable is a
    ``TypeError`` saying so; the operator's error names the record or timer.

    A ``(tag, value)`` pair with an :class:`OutputTag` is PyFlink's side output
    (``yield output_tag, value``): it goes to ``ctx.output(tag, value)``, not into ``out``
    (without a ``ctx`` it is a ``TypeError`` saying to write ``ctx.output``).

    >>> out = []; add_results(out, iter([1, 2]), object(), "process_element"); out
    [1, 2]
    >>> add_results(out, {"k": 1}, object(), "process_element")
    Traceback (most recent call last):
    TypeError: process_element() of object returned a dict, not an iterable of records: yield each record (or return a list of them: [record] for one)
    """
    if isinstance(result, NOT_RECORDS) or not hasattr(result, "__iter__"):
        raise TypeError(
            f"{method}() of {type(function).__name__} returned a {type(result).__name__}, not an iterable of "
            "records: yield each record (or return a list of them: [record] for one)"
        )
    if not OutputTag.made:  # (no tag in this process: nothing to look for)
        out.extend(result)
        return
    start = len(out)
    out.extend(result)
    move_side_outputs(out, start, ctx, function, method)


def move_side_outputs(out: list, start: int, ctx: Any, function: Any, method: str) -> None:
    """Move PyFlink's ``(OutputTag, value)`` results in ``out[start:]`` to ``ctx.output``
    (a ``TypeError`` naming the remedy without a ``ctx``); nothing to do unless an
    :class:`OutputTag` was made in this process."""
    if not OutputTag.made:
        return
    tagged = [i for i in range(start, len(out))
              if type(r := out[i]) is tuple and len(r) == 2 and type(r[0]) is OutputTag]
    if not tagged:
        return
    if ctx is None:
        raise TypeError(
            f"{method}() of {type(function).__name__} gave ({out[tagged[0]][0]!r}, value), PyFlink's side output: "
            "write ctx.output(tag, value) here"
        )
    for i in tagged:
        ctx.output(out[i][0], out[i][1])
    moved = set(tagged)
    kept = [r for j, r in enumerate(out[start:], start) if j not in moved]
    del out[start:]
    out.extend(kept)


def flink_hint(exc: BaseException) -> BaseException:
    """``exc`` of a process function, or, when it is PyFlink's ``ctx.timestamp()`` called on
    raystream's ``ctx.timestamp`` (an int attribute), a ``TypeError`` saying what to write
    instead (a port's ``'int' object is not callable`` said nothing of it).

    >>> def f(ctx): return ctx.timestamp() + 2000
    >>> try:
    ...     f(type("Ctx", (), {"timestamp": 1000})())
    ... except TypeError as exc:
    ...     print(flink_hint(exc))
    'int' object is not callable: ctx.timestamp is an attribute here (the record's event timestamp, an int), not PyFlink's method: write ctx.timestamp instead of ctx.timestamp()
    """
    if isinstance(exc, TypeError) and "object is not callable" in str(exc) and exc.__traceback__ is not None:
        line = traceback.extract_tb(exc.__traceback__)[-1].line or ""
        if ".timestamp()" in line:
            return TypeError(
                f"{exc}: ctx.timestamp is an attribute here (the record's event timestamp, an int), not PyFlink's "
                "method: write ctx.timestamp instead of ctx.timestamp()"
            ).with_traceback(exc.__traceback__)
    return exc


#: what a function that gives records returns for ONE record by mistake: iterating it would
#: give its keys, characters or byte values as records
NOT_RECORDS = (str, bytes, dict)


def not_records(result: Any, what: str) -> TypeError:
    """The error for a record function (``what``, e.g. ``"flat_map function 'f'"``) that
    returned ``result``, one record (a dict, str or bytes) or no iterable, where it gives an
    iterable of records.

    >>> not_records("ab", "flat_map function 'f'")
    TypeError("flat_map function 'f' returned a str ('ab'), not an iterable of records: return a list of records ([record] for one; list(s) for a str's characters), yield them, or return None for none")
    """
    return TypeError(
        f"{what} returned a {type(result).__name__} ({short_repr(result, 60)}), not an iterable of records: return "
        "a list of records ([record] for one; list(s) for a str's characters), yield them, or return None for none"
    )


# state types (get_state)
T = TypeVar("T")
K = TypeVar("K")
V = TypeVar("V")
ACC = TypeVar("ACC")
# user functions (Flink's names): a keyed stream's key, input and output records
# (unparameterized they are Any: PEP 696 defaults, which typing.TypeVar takes from Python 3.13)
if TYPE_CHECKING:
    from typing_extensions import TypeVar as _TypeVarWithDefault

    KEY = _TypeVarWithDefault("KEY", default=Any)
    IN = _TypeVarWithDefault("IN", default=Any)
    IN1 = _TypeVarWithDefault("IN1", default=Any)
    IN2 = _TypeVarWithDefault("IN2", default=Any)
    OUT = _TypeVarWithDefault("OUT", default=Any)
else:
    KEY = TypeVar("KEY")
    IN = TypeVar("IN")
    IN1 = TypeVar("IN1")
    IN2 = TypeVar("IN2")
    OUT = TypeVar("OUT")


class OutputTag:
    """The name of a side output (Flink's ``OutputTag``).

    Example:
        >>> late = OutputTag("late")
        >>> late.tag_id
        'late'
    """

    __slots__ = ("tag_id",)
    #: whether an OutputTag was made (or unpickled) in this process: only then may a process
    #: function yield PyFlink's ``(tag, value)`` side outputs (see :func:`add_results`)
    made = False

    def __init__(self, tag_id: str) -> None:
        if not isinstance(tag_id, str) or not tag_id:
            raise ConfigError(f"OutputTag needs a non-empty str name, got {tag_id!r}")
        self.tag_id = tag_id
        OutputTag.made = True

    def __reduce__(self) -> tuple[type[OutputTag], tuple[str]]:  # (unpickled through __init__)
        return OutputTag, (self.tag_id,)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OutputTag) and other.tag_id == self.tag_id

    def __hash__(self) -> int:
        return hash(("OutputTag", self.tag_id))

    def __repr__(self) -> str:
        return f"OutputTag({self.tag_id!r})"


def tag_name(tag: "OutputTag | str") -> str:
    """The side-output name of ``tag`` (an :class:`OutputTag` or a str)."""
    if isinstance(tag, OutputTag):
        return tag.tag_id
    if isinstance(tag, str) and tag:
        return tag
    raise ConfigError(f"side outputs are named by an OutputTag or a non-empty str, got {tag!r}")


def keyed_state_backend(ctx: OperatorContext) -> KeyedStateBackend:
    """The keyed state backend of a keyed operator's context.

    Raises:
        ConfigError: the operator has none (its input is not a keyed stream).
    """
    backend = ctx.keyed_backend
    if backend is None:
        raise ConfigError(
            f"operator {ctx.operator_name!r} has no keyed state: keyed state needs a "
            "keyed stream (key_by(...) before process())"
        )
    # the engine knows it as a KeyedBackend (snapshot/restore); the state layer made it, so it
    # is a checkpoint.KeyedStateBackend (the operators' full API)
    return cast("KeyedStateBackend", backend)


class RuntimeContext:
    """What a rich function sees in ``open``: its subtask and the keyed state.

    Example:
        >>> class Count(KeyedProcessFunction):
        ...     def open(self, ctx):
        ...         self.count = ctx.get_state(ValueStateDescriptor("count", default=0))
        ...     def process_element(self, value, ctx):
        ...         self.count.update(self.count.value() + 1)
        ...         yield (ctx.get_current_key(), self.count.value())
    """

    def __init__(self, operator_ctx: OperatorContext) -> None:
        self._ctx = operator_ctx

    @property
    def task_name(self) -> str:
        return self._ctx.task_name

    @property
    def index_of_this_subtask(self) -> int:
        return self._ctx.subtask_index

    @property
    def number_of_parallel_subtasks(self) -> int:
        return self._ctx.parallelism

    @property
    def attempt_number(self) -> int:
        return self._ctx.attempt

    # PyFlink's getters, as a port calls them
    def get_task_name(self) -> str:
        """:attr:`task_name` (PyFlink's ``get_task_name()``)."""
        return self._ctx.task_name

    def get_index_of_this_subtask(self) -> int:
        """:attr:`index_of_this_subtask` (PyFlink's ``get_index_of_this_subtask()``)."""
        return self._ctx.subtask_index

    def get_number_of_parallel_subtasks(self) -> int:
        """:attr:`number_of_parallel_subtasks` (PyFlink's ``get_number_of_parallel_subtasks()``)."""
        return self._ctx.parallelism

    def get_max_number_of_parallel_subtasks(self) -> int:
        """The job's max parallelism, its number of key groups (PyFlink's
        ``get_max_number_of_parallel_subtasks()``)."""
        return self._ctx.max_parallelism

    def get_attempt_number(self) -> int:
        """:attr:`attempt_number` (PyFlink's ``get_attempt_number()``)."""
        return self._ctx.attempt

    def get_metrics_group(self) -> NoReturn:
        """PyFlink's user metrics (``get_metrics_group().counter(name)``...) have no counterpart
        here: this raises a :class:`ConfigError` saying what there is instead, rather than
        metrics that would be counted and shown nowhere.

        Example:
            >>> RuntimeContext(None).get_metrics_group()  # doctest: +ELLIPSIS
            Traceback (most recent call last):
            ...
            raystream.engine.errors.ConfigError: get_metrics_group() (PyFlink's user metrics): ...
        """
        raise ConfigError(
            "get_metrics_group() (PyFlink's user metrics): raystream has no user-defined metrics; "
            "JobClient.metrics(), `raystream status` and the Prometheus export (ray_raystream_*) give each operator's "
            "records in and out, rates, bytes and back-pressure; for counts of your own, keep them in keyed state or "
            "send them to a side output (ctx.output(tag, value)) and aggregate that stream"
        )

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
        """Keyed ValueState/ListState/MapState/ReducingState/AggregatingState for ``descriptor``
        (typed by it: a ``ValueStateDescriptor[int]`` gives a ``ValueState[int]``)."""
        return keyed_state_backend(self._ctx).get_state(descriptor)

    get_list_state = get_state
    get_map_state = get_state
    get_reducing_state = get_state
    get_aggregating_state = get_state


class ProcessContext(Generic[KEY]):
    """Per-record context of a process function: key, timestamp, timers, side outputs."""

    __slots__ = ("_key", "timestamp", "_timer_service", "_side")

    def __init__(self) -> None:
        self._key: Any = None  # set by the operator before each call (None until then)
        self.timestamp: int | None = None
        self._timer_service: TimerService[KEY] | None = None
        self._side: dict[str, list[Any]] = {}

    def get_current_key(self) -> KEY:
        """The key of the record being processed."""
        return self._key

    def timer_service(self) -> TimerService[KEY] | None:
        """Register/delete event-time and processing-time timers for the current key
        (a :class:`operators.timers.TimerService`). On a stream without a key (a
        :class:`ProcessFunction`, connected streams that are not keyed, the broadcast side)
        it reads the current watermark and processing time, and registering a timer is a ``ConfigError`` saying to key the
        stream (as in Flink)."""
        return self._timer_service

    def output(self, tag: "OutputTag | str", value: Any) -> None:
        """Emit ``value`` to the side output ``tag``."""
        self._side.setdefault(tag_name(tag), []).append(value)

    def _take_side(self) -> dict[str, list[Any]]:
        side, self._side = self._side, {}
        return side


class OnTimerContext(ProcessContext[KEY]):
    """The context of ``on_timer``: also says which clock fired (``time_domain()``)."""

    __slots__ = ("_domain",)

    def __init__(self) -> None:
        super().__init__()
        self._domain = "event_time"

    def time_domain(self) -> str:
        """``"event_time"`` or ``"processing_time"``."""
        return self._domain


class ProcessFunction(ABC, Generic[IN, OUT]):
    """Processes the records of a stream without a key one at a time (``stream.process(fn)``,
    Flink's ``ProcessFunction``); it runs at the stream's parallelism, chained like ``map``.

    ``process_element`` yields (or returns an iterable of) output records; ``ctx.output(tag,
    value)`` emits to a side output (read it with ``get_side_output(tag)``).
    ``ctx.timestamp`` is the record's event timestamp when the stream has a timestamp
    assigner (``assign_timestamps_and_watermarks``), else None;
    ``ctx.timer_service().current_watermark()`` and ``current_processing_time()`` read the
    clocks. Timers and keyed state belong to a key: registering a timer or calling
    ``get_state`` raises a ``ConfigError`` naming the operator (``key_by`` first and use a
    :class:`KeyedProcessFunction`). Parameterize it to type the input and output records
    (``ProcessFunction[dict, str]``).

    Example:
        >>> import raystream as rs
        >>> class Split(ProcessFunction):
        ...     def process_element(self, value, ctx):
        ...         if value < 0:
        ...             ctx.output("negative", value)
        ...         else:
        ...             yield value * 10
        >>> env = rs.StreamEnvironment(parallelism=2)
        >>> out = env.from_collection([1, -2, 3]).process(Split())
        >>> both = out.union(out.get_side_output("negative").map(lambda v: ("negative", v)))
        >>> sorted(both.execute_and_collect(), key=str)
        [('negative', -2), 10, 30]
    """

    def open(self, runtime_context: RuntimeContext) -> None:
        """Called once per subtask before any record."""

    @abstractmethod
    def process_element(self, value: IN, ctx: ProcessContext[Any]) -> Iterable[OUT] | None:
        """Process one record."""

    def close(self) -> None:
        """Called once at the end."""


class KeyedProcessFunction(ABC, Generic[KEY, IN, OUT]):
    """Processes the records of a keyed stream one at a time with per-key state and timers.

    ``process_element`` and ``on_timer`` yield (or return an iterable of) output records.
    ``ctx.timestamp`` is the record's event timestamp when the stream has a timestamp
    assigner (``assign_timestamps_and_watermarks``), else None. Parameterize it to type
    the key, input and output records (``KeyedProcessFunction[str, dict, tuple]``).
    """

    def open(self, runtime_context: RuntimeContext) -> None:
        """Called once per subtask before any record; declare state here."""

    @abstractmethod
    def process_element(self, value: IN, ctx: ProcessContext[KEY]) -> Iterable[OUT] | None:
        """Process one record of the current key."""

    def on_timer(self, timestamp: int, ctx: OnTimerContext[KEY]) -> Iterable[OUT] | None:
        """A timer registered for the current key fired (``ctx.time_domain()`` says which)."""
        return None

    def close(self) -> None:
        """Called once at the end."""


class CoProcessFunction(ABC, Generic[IN1, IN2, OUT]):
    """Processes two connected streams (``a.connect(b).process(fn)``); not keyed.

    Example:
        >>> class Tag(CoProcessFunction):
        ...     def process_element1(self, value, ctx): yield ("a", value)
        ...     def process_element2(self, value, ctx): yield ("b", value)
    """

    def open(self, runtime_context: RuntimeContext) -> None:
        """Called once per subtask before any record."""

    @abstractmethod
    def process_element1(self, value: IN1, ctx: ProcessContext[Any]) -> Iterable[OUT] | None:
        """A record of the first input (``ctx``'s key: the record's, when keyed)."""

    @abstractmethod
    def process_element2(self, value: IN2, ctx: ProcessContext[Any]) -> Iterable[OUT] | None:
        """A record of the second input."""

    def close(self) -> None:
        """Called once at the end."""


class KeyedCoProcessFunction(CoProcessFunction[IN1, IN2, OUT], Generic[KEY, IN1, IN2, OUT]):
    """Two connected keyed streams (``a.connect(b).key_by(ka, kb).process(fn)``) with
    shared per-key state and timers."""

    def on_timer(self, timestamp: int, ctx: OnTimerContext[KEY]) -> Iterable[OUT] | None:
        """A timer registered for the current key fired."""
        return None


class BroadcastContext(ProcessContext[Any]):
    """Context of a :class:`BroadcastProcessFunction`: gives access to broadcast state."""

    __slots__ = ("_states", "_writable", "_apply_to_keys")

    def __init__(self, states: dict[str, dict[Any, Any]]) -> None:
        super().__init__()
        self._states = states
        self._writable = False
        # set by the operator of a keyed stream while a broadcast element is processed
        self._apply_to_keys: Callable[[StateDescriptor, Callable[[Any, Any], None]], None] | None = None

    def apply_to_keyed_state(self, descriptor: StateDescriptor, function: Callable[[Any, Any], None]) -> None:
        """Call ``function(key, state)`` for every key that has a value in the keyed state
        ``descriptor`` names, with that key current (Flink's ``applyToKeyedState`` of a
        ``KeyedBroadcastProcessFunction``): e.g. clear or rewrite every key's state when a
        rule changes. Only in ``process_broadcast_element`` of a keyed stream connected with
        a broadcast stream; the keys are those of this subtask (its key groups), taken when
        the call starts.

        Example:
            >>> # def process_broadcast_element(self, rule, ctx):
            >>> #     ctx.apply_to_keyed_state(self.seen_descriptor, lambda key, state: state.clear())

        Raises:
            ConfigError: called in ``process_element``/``on_timer``, or on a stream without a key.
        """
        apply = self._apply_to_keys
        if apply is None:
            raise ConfigError(
                "apply_to_keyed_state() is for process_broadcast_element() of a keyed stream connected with a "
                "broadcast stream (a.key_by(k).connect(rules.broadcast(descriptor)).process(...)); in "
                "process_element() the record's key's state is ctx's (get_state in open())"
            )
        apply(descriptor, function)

    def get_broadcast_state(self, descriptor: MapStateDescriptor[Any, Any] | str) -> BroadcastState:
        """The broadcast state (a dict with PyFlink's ``put``/``remove``/``contains``..., see
        :class:`BroadcastState`) declared by ``descriptor`` (a MapStateDescriptor or a
        name). Writable in ``process_broadcast_element``; read-only in ``process_element``
        (changes there would differ between parallel instances)."""
        name = descriptor if isinstance(descriptor, str) else getattr(descriptor, "name", None)
        if name not in self._states:
            raise ConfigError(
                f"broadcast state {name!r} was not declared; declared: {sorted(self._states)!r} "
                "(pass the descriptor to broadcast(...))"
            )
        state = self._states[name]
        if self._writable:
            if type(state) is not BroadcastState:  # (a state made elsewhere as a dict: made one, in place)
                state = self._states[name] = BroadcastState(state)
            return state
        return _ReadOnlyDict(state)


class BroadcastState(dict[Any, Any]):
    """Broadcast state: a dict that also has PyFlink's ``BroadcastState`` methods
    (``put``, ``put_all``, ``remove``, ``contains``, ``is_empty``; ``get``, ``items``,
    ``keys``, ``values`` and ``clear`` are the dict's), so a port's
    ``ctx.get_broadcast_state(desc).put(k, v)`` works as written.

    Example:
        >>> rules = BroadcastState()
        >>> rules.put("r1", 5); rules.put_all([("r2", 6)]); rules.remove("r1")
        >>> rules.contains("r2"), rules.get("r2"), rules.is_empty(), dict(rules)
        (True, 6, False, {'r2': 6})
    """

    def put(self, key: Any, value: Any) -> None:
        """Set ``key`` to ``value``."""
        self[key] = value

    def put_all(self, items: Any) -> None:
        """Set every ``(key, value)`` of ``items`` (pairs or a dict)."""
        self.update(items)

    def remove(self, key: Any) -> None:
        """Delete ``key`` (nothing when it is absent, as Flink's)."""
        self.pop(key, None)

    def contains(self, key: Any) -> bool:
        """Whether ``key`` has a value."""
        return key in self

    def is_empty(self) -> bool:
        """Whether no key has a value."""
        return not self


class _ReadOnlyDict(BroadcastState):
    """A read-only view of broadcast state for ``process_element``."""

    def __init__(self, backing: dict[Any, Any]) -> None:
        super().__init__(backing)

    def _deny(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise ConfigError("broadcast state is read-only in process_element(); update it in process_broadcast_element()")

    __setitem__ = __delitem__ = update = pop = popitem = clear = setdefault = put = put_all = remove = _deny  # type: ignore[assignment]


class BroadcastProcessFunction(ABC, Generic[IN1, IN2, OUT]):
    """Connects a stream with a broadcast stream (``a.connect(b.broadcast(desc)).process(fn)``).

    Every parallel instance receives every broadcast element and keeps the same broadcast
    state (checkpointed with the operator).

    Example:
        >>> class Rules(BroadcastProcessFunction):
        ...     def process_broadcast_element(self, rule, ctx):
        ...         ctx.get_broadcast_state("rules")[rule["name"]] = rule["limit"]
        ...     def process_element(self, value, ctx):
        ...         limit = ctx.get_broadcast_state("rules").get("max")
        ...         if limit is not None and value > limit:
        ...             yield value
    """

    def open(self, runtime_context: RuntimeContext) -> None:
        """Called once per subtask before any record."""

    @abstractmethod
    def process_element(self, value: IN1, ctx: BroadcastContext) -> Iterable[OUT] | None:
        """A record of the non-broadcast input (broadcast state read-only)."""

    @abstractmethod
    def process_broadcast_element(self, value: IN2, ctx: BroadcastContext) -> Iterable[OUT] | None:
        """A record of the broadcast input (broadcast state writable)."""

    def close(self) -> None:
        """Called once at the end."""


class KeyedBroadcastProcessFunction(BroadcastProcessFunction[IN1, IN2, OUT]):
    """Flink's ``KeyedBroadcastProcessFunction``: a keyed stream connected with a broadcast
    stream (``a.key_by(k).connect(b.broadcast(desc)).process(fn)``). ``process_element``
    sees its record's key, keyed state and timers; ``process_broadcast_element`` has no key
    (``ctx.apply_to_keyed_state`` reaches every key's state); ``on_timer(timestamp, ctx)``
    runs when a timer fires (by default it does nothing, as Flink's).

    Example:
        >>> class Alert(KeyedBroadcastProcessFunction):
        ...     def process_broadcast_element(self, rule, ctx):
        ...         ctx.get_broadcast_state("rules")["max"] = rule
        ...     def process_element(self, value, ctx):
        ...         limit = ctx.get_broadcast_state("rules").get("max")
        ...         if limit is not None and value["v"] > limit:
        ...             yield value
    """

    def on_timer(self, timestamp: int, ctx: Any) -> Iterable[OUT] | None:
        """A timer of the current key fired (nothing by default)."""
        return None
