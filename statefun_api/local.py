"""Run FunctionDispatchers in one process, without Ray: for tests, notebooks and debugging.

:class:`LocalDispatchers` builds ``parallelism`` :class:`~statefun_api.dispatcher.FunctionDispatcher`
subtasks with their own heap keyed state backends, plays the engine's part (routing ingress
and feedback messages by key group, running mailbox continuations and processing-time
timers) on a :class:`~engine.operator.ManualClock`, and collects the egresses. Time only
moves with :meth:`LocalDispatchers.advance`, so delayed messages and TTL are tested
without sleeping. ``seed`` shuffles the order in which pending deliveries and
continuations run (keeping each channel FIFO, as the engine does), to test that results
do not depend on one interleaving.

Remote functions (``endpoints=``) are called for real over HTTP by each dispatcher's I/O
thread; their replies come back through a thread-safe inbox, so :meth:`LocalDispatchers.run`
only applies replies that have arrived, and :meth:`LocalDispatchers.run_until_idle` waits
(in real time) for the calls in flight. Use it as a context manager (or call
:meth:`LocalDispatchers.close`) to stop the I/O threads.

Example:
    >>> from raystream.statefun_api import StatefulFunctions, ValueSpec, IntType, message_builder
    >>> functions = StatefulFunctions()
    >>> @functions.bind("demo/counter", specs=[ValueSpec("n", IntType)])
    ... def counter(context, message):
    ...     context.storage.n = (context.storage.n or 0) + 1
    >>> run = LocalDispatchers(functions, parallelism=2)
    >>> run.send(*[message_builder("demo/counter", "a", int_value=1)] * 3).state("demo/counter", "a", "n")
    3
"""

from __future__ import annotations

import heapq
import queue
import random
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import Any

from raystream.checkpoint import HeapKeyedStateBackend, ValueStateDescriptor
from raystream.engine.errors import JobFailed, UserCodeError
from raystream.engine.keygroups import KeyGroupRange, key_group_for, subtask_for_key_group
from raystream.engine.operator import ManualClock, OperatorContext
from raystream.engine.records import Batch
from raystream.statefun_api.dispatcher import (
    DispatcherConfig,
    FunctionDispatcher,
    declared_egresses,
)
from raystream.statefun_api.endpoints import RemoteEndpoint
from raystream.statefun_api.functions import StatefulFunctions
from raystream.statefun_api.messages import Message
from raystream.statefun_api.routing import (
    FEEDBACK_TAG,
    MessageRecord,
    decode_by_typename,
    message_to_record,
)
from raystream.statefun_api.state_layout import value_state_name
from raystream.statefun_api.types import Type

__all__ = ["LocalDispatchers"]


def _surface_user_error(fn: Callable[[], None]) -> None:
    """Run a mailbox call; a user function's error (which a task reports as ``JobFailed``)
    is raised as the ``UserCodeError`` itself, so tests see the original exception."""
    try:
        fn()
    except JobFailed as exc:
        cause = exc.__cause__
        if isinstance(cause, UserCodeError):
            raise cause from None
        raise


class _Output:
    def __init__(self, runner: LocalDispatchers, index: int) -> None:
        self.runner = runner
        self.index = index

    def emit(self, batch: Batch) -> None:
        self.runner.main_output.extend(batch.records())

    def emit_watermark(self, watermark: Any) -> None:
        pass

    def emit_side(self, tag: str, batch: Batch) -> None:
        records = batch.records()
        if tag == FEEDBACK_TAG:
            self.runner.feedback_records += len(records)
            self.runner._deliver(records, source=self.index)
        else:
            self.runner._egress.setdefault(tag[len("egress:") :], []).extend(records)


class LocalDispatchers:
    """``parallelism`` dispatcher subtasks in this process (see the module docstring).

    Args:
        functions: the function registry.
        parallelism: number of dispatcher subtasks.
        egresses: declared egress typenames (or typename -> value type).
        clock: the processing-time clock (default ``ManualClock(0)``).
        max_parallelism: number of key groups.
        seed: if given, deliveries and continuations run in a seeded random order.
        endpoints: remote function endpoints (see :mod:`statefun_api.endpoints`).
        **limits: ``max_in_flight``, ``drain_step``, ``max_batch_per_address``,
            ``timer_tick_ms``, ``inbox_memory_bytes``, ``spill_dir`` (see :class:`~statefun_api.dispatcher.DispatcherConfig`).

    Example:
        >>> from raystream.statefun_api import StatefulFunctions
        >>> LocalDispatchers(StatefulFunctions(), parallelism=3).is_idle()
        True
    """

    def __init__(
        self,
        functions: StatefulFunctions,
        parallelism: int = 1,
        egresses: Iterable[str] | Mapping[str, Type[Any] | None] = (),
        clock: ManualClock | None = None,
        max_parallelism: int = 128,
        seed: int | None = None,
        endpoints: Iterable[RemoteEndpoint] = (),
        _restore: list[tuple[Any, Any]] | None = None,
        **limits: Any,
    ) -> None:
        self.functions = functions
        self.parallelism = parallelism
        self.max_parallelism = max_parallelism
        self.clock = clock if clock is not None else ManualClock(0)
        self.config = DispatcherConfig(functions, declared_egresses(egresses), endpoints=list(endpoints), **limits)
        self._rng = random.Random(seed) if seed is not None else None
        # FIFO channels: (source subtask or -1 for the ingress, target subtask, kind) -> calls
        self._mail: dict[tuple[int, int, str], deque[Callable[[], None]]] = {}
        # posts from any thread (remote-call replies, continuations), moved into _mail by run()
        self._inbox: queue.SimpleQueue[tuple[tuple[int, int, str], Callable[[], None]]] = queue.SimpleQueue()
        self._timers: list[tuple[int, int, int, Callable[[int], None]]] = []
        self._timer_seq = 0
        self._egress: dict[str, list[Any]] = {}
        self.main_output: list[Any] = []
        self.feedback_records = 0
        self._owners: dict[tuple[str, str], int] = {}
        self.dispatchers: list[FunctionDispatcher] = []
        for index in range(parallelism):
            kg_range = KeyGroupRange.for_subtask(index, parallelism, max_parallelism)
            backend = HeapKeyedStateBackend(kg_range, max_parallelism, self.clock)
            op = FunctionDispatcher(self.config)
            op.name = "statefun"
            if _restore is not None:
                backend.restore([keyed for keyed, _ in _restore])
                op.restore_state([operator for _, operator in _restore])
            ctx = OperatorContext(
                operator_name="statefun",
                operator_uid="statefun",
                task_name=f"statefun ({index + 1}/{parallelism})",
                subtask_index=index,
                parallelism=parallelism,
                max_parallelism=max_parallelism,
                key_group_range=kg_range,
                clock=self.clock,
                keyed_backend=backend,
                register_processing_timer=partial(self._register, index),
                post=partial(self._post, index),
            )
            op.open(ctx, _Output(self, index))
            self.dispatchers.append(op)
        self.run()

    # ------------------------------------------------------------------ driving
    def _owner(self, record: MessageRecord) -> int:
        key = (record[0], record[1])
        owner = self._owners.get(key)
        if owner is None:
            if len(self._owners) >= 1 << 16:
                self._owners.clear()
            kg = key_group_for(key, self.max_parallelism)
            owner = self._owners[key] = subtask_for_key_group(kg, self.parallelism, self.max_parallelism)
        return owner

    def _put(self, channel: tuple[int, int, str], fn: Callable[[], None]) -> None:
        self._mail.setdefault(channel, deque()).append(fn)

    def _deliver(self, records: list[MessageRecord], source: int = -1) -> None:
        by_subtask: dict[int, list[MessageRecord]] = {}
        for r in records:
            by_subtask.setdefault(self._owner(r), []).append(r)
        for index, part in by_subtask.items():
            op = self.dispatchers[index]
            self._put((source, index, "data"), partial(op.process_batch, Batch.of_records(part)))

    def _post(self, index: int, fn: Callable[[], None]) -> None:
        """``OperatorContext.post`` of subtask ``index``: run ``fn`` on its mailbox (thread-safe)."""
        self._inbox.put(((index, index, "mailbox"), partial(_surface_user_error, fn)))

    def _register(self, index: int, time_ms: int, callback: Callable[[int], None]) -> None:
        self._timer_seq += 1
        heapq.heappush(self._timers, (time_ms, self._timer_seq, index, callback))

    def send(self, *messages: Message) -> LocalDispatchers:
        """Deliver ingress messages (grouped per owning subtask, in order) and :meth:`run`."""
        self._deliver([message_to_record(m) for m in messages])
        return self.run()

    def _take_inbox(self) -> None:
        while True:
            try:
                channel, fn = self._inbox.get_nowait()
            except queue.Empty:
                return
            self._put(channel, fn)

    def _runnable(self) -> list[tuple[int, int, str]]:
        # a dispatcher that does not accept input (a full remote queue) takes no data now
        dispatchers = self.dispatchers
        return [c for c in self._mail if c[2] != "data" or dispatchers[c[1]].accepts_input()]

    def run(self) -> LocalDispatchers:
        """Process deliveries, continuations, arrived remote replies and due timers until
        nothing is left to do now (remote calls may still be in flight: see
        :meth:`run_until_idle`)."""
        while True:
            self._take_inbox()
            while self._mail:
                channels = self._runnable()
                if not channels:
                    break
                channel = channels[self._rng.randrange(len(channels))] if self._rng is not None else channels[0]
                queue = self._mail[channel]
                fn = queue.popleft()
                if not queue:
                    del self._mail[channel]
                fn()
                self._take_inbox()
            now = self.clock.now_ms()
            if not (self._timers and self._timers[0][0] <= now):
                if self._inbox.empty():
                    return self
                continue
            while self._timers and self._timers[0][0] <= now:
                t, _, _, cb = heapq.heappop(self._timers)
                cb(t)

    def advance(self, ms: int) -> LocalDispatchers:
        """Move the clock forward by ``ms`` in timer-sized steps, firing due timers."""
        end = self.clock.now_ms() + ms
        while self._timers and self._timers[0][0] <= end:
            self.clock.set(max(self.clock.now_ms(), self._timers[0][0]))
            self.run()
        self.clock.set(end)
        return self.run()

    def wait_remote(self, timeout_s: float = 60.0) -> LocalDispatchers:
        """Wait (real time) until no remote call is in flight, applying replies as they come."""
        deadline = time.monotonic() + timeout_s
        self.run()
        while any(op.remote_in_flight() for op in self.dispatchers):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"remote calls still in flight after {timeout_s} s")
            try:
                channel, fn = self._inbox.get(timeout=min(remaining, 1.0))
            except queue.Empty:
                continue
            self._put(channel, fn)
            self.run()
        return self

    def run_until_idle(self, max_ms: int = 3_600_000, remote_timeout_s: float = 60.0) -> LocalDispatchers:
        """Advance time until no message is queued, no remote call is in flight and no
        delayed message is pending (waiting up to ``remote_timeout_s`` of real time for
        each round of remote calls)."""
        deadline = self.clock.now_ms() + max_ms
        self.run()
        while not self.is_idle():
            if any(op.remote_in_flight() for op in self.dispatchers):
                self.wait_remote(remote_timeout_s)
                continue
            if not self._timers or self._timers[0][0] > deadline:
                raise TimeoutError(f"dispatchers still busy after {max_ms} ms of processing time")
            self.advance(self._timers[0][0] - self.clock.now_ms())
        return self

    # ------------------------------------------------------------------ inspection
    def is_idle(self) -> bool:
        """No queued message, continuation or pending delayed message anywhere."""
        return not self._mail and self._inbox.empty() and all(op.is_idle() for op in self.dispatchers)

    def egress(self, typename: str) -> list[Any]:
        """The values emitted to egress ``typename`` so far (in emission order)."""
        return list(self._egress.get(typename, []))

    def state(self, typename: str, id: str, name: str) -> Any:  # noqa: A002 - StateFun's word
        """The current value of spec ``name`` of the function at ``typename``/``id`` (or None).

        For a remote function (whose specs raystream learns from its handshake) a built-in
        type's value is decoded by its typename; another type's is its ``TypedValue``.
        """
        value_type: Type[Any] | None
        if typename in self.functions:
            fn = self.functions.for_typename(typename)
            spec = next((s for s in fn.specs if s.name == name), None)
            if spec is None:
                raise AttributeError(f"function {typename!r} declares no value {name!r}; specs: {list(fn.specs)}")
            value_type = spec.type
        elif any(ep.matches(typename) for ep in self.config.endpoints):
            value_type = None
        else:
            self.functions.for_typename(typename)  # raises FunctionNotFound, naming what is registered
            raise AssertionError("unreachable")
        key = (typename, id)
        op = self.dispatchers[self._owner((typename, id, "", "", "", b"", False))]
        st = op.backend.get_state(ValueStateDescriptor(value_state_name(typename, name)))
        op.backend.set_current_key(key)
        tv = st.value()
        if tv is None or not tv.has_value:
            return None
        if value_type is None:
            return decode_by_typename(tv)
        return value_type.serializer().deserialize(tv.value)

    def counters(self) -> dict[str, int]:
        """The dispatchers' counters summed over subtasks (invocations, local/remote messages...)."""
        total: dict[str, int] = {}
        for op in self.dispatchers:
            for k, v in op.counters.items():
                total[k] = total.get(k, 0) + v
        return total

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Close every dispatcher (stops remote-call I/O threads; idempotent)."""
        for op in self.dispatchers:
            op.close()

    def __enter__(self) -> LocalDispatchers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ snapshots
    def snapshot(self, checkpoint_id: int = 1) -> list[tuple[Any, Any]]:
        """Per subtask: (keyed state snapshot, operator state), as the task would take them.

        In-flight deliveries must have been run first (call :meth:`run`); remote requests in
        flight are part of the operator state (they are sent again after a restore)."""
        if self._mail:
            raise RuntimeError("run() the pending deliveries before taking a snapshot")
        return [(op.backend.snapshot(checkpoint_id), op.snapshot_state(checkpoint_id)) for op in self.dispatchers]

    @classmethod
    def restore(
        cls,
        functions: StatefulFunctions,
        snapshots: list[tuple[Any, Any]],
        parallelism: int = 1,
        **kwargs: Any,
    ) -> LocalDispatchers:
        """New dispatchers (at any parallelism) restored from :meth:`snapshot`; their timers
        are re-armed from the restored delayed messages."""
        return cls(functions, parallelism=parallelism, _restore=snapshots, **kwargs)
