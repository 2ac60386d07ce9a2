"""Run FunctionDispatchers in one process, without Ray: for tests, notebooks and debugging.

:class:`LocalDispatchers` runs ``parallelism`` :class:`~statefun_api.dispatcher.FunctionDispatcher`
subtasks, each inside a real engine task (:class:`~raystream.engine.task.Task`, through the
operator test harness :class:`~raystream.operators.testing.OperatorHarness`) driven step by
step on the calling thread: the same operator context, keyed state backend, mailbox,
processing-time service and snapshot code as on a cluster. The runner plays the network's
part only: it routes ingress and feedback messages to their owning subtask by key group
(FIFO per sending subtask, as a channel; feedback batches as the Arrow batches a channel
makes of them) and collects the egresses. Time is a
:class:`~engine.operator.ManualClock` that only moves with :meth:`LocalDispatchers.advance`,
so delayed messages and TTL are tested without sleeping. ``seed`` shuffles the order in
which pending deliveries and task steps run (keeping each channel FIFO), to test that
results do not depend on one interleaving.

A failed invocation raises its error (``UserCodeError``) from the call that ran it and
leaves no effect; as in a job whose restart strategy never gives up, its messages stay
queued first and every later :meth:`~LocalDispatchers.send`, :meth:`~LocalDispatchers.run`
or :meth:`~LocalDispatchers.advance` invokes them again from the same state (raising the
same error while it fails); messages sent meanwhile wait behind them. So does a failed call
of an async or remote function: the next call sends it again and waits for its outcome.

Remote functions (``endpoints=``) are called for real over HTTP by each dispatcher's I/O
thread; their replies come back through the task's mailbox, so :meth:`LocalDispatchers.run`
only applies replies that have arrived, and :meth:`LocalDispatchers.run_until_idle` waits
(in real time) for the calls in flight. Embedded async functions run concurrently on the
function loop the same way, and :meth:`LocalDispatchers.run` (hence :meth:`~LocalDispatchers.send`)
waits for them. Use it as a context manager (or call
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

import random
import time
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow as pa

from raystream.checkpoint import HeapStateBackend, ValueStateDescriptor
from raystream.engine.keygroups import key_group_for, subtask_for_key_group
from raystream.engine.operator import ManualClock
from raystream.engine.records import Batch
from raystream.operators.testing import CollectingOutput, OperatorHarness
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
    TARGET_ID,
    TARGET_TYPENAME,
    MessageRecord,
    decode_by_typename,
    message_key_groups,
    message_record_key_groups,
    message_to_record,
)
from raystream.statefun_api.state_layout import value_state_name
from raystream.statefun_api.types import Type

__all__ = ["LocalDispatchers"]

_INGRESS = -1  # the sending "subtask" of ingress deliveries


class _RoutingOutput(CollectingOutput):
    """The network output of subtask ``index``: feedback to the owning subtasks, egress and
    main output collected by the runner."""

    def __init__(self, runner: LocalDispatchers, index: int) -> None:
        super().__init__()
        self.runner = runner
        self.index = index

    def emit(self, batch: Batch) -> None:
        self.runner.main_output.extend(batch.records())

    def emit_side(self, tag: str, batch: Batch) -> None:
        if tag == FEEDBACK_TAG:
            self.runner.feedback_records += len(batch)
            self.runner._deliver_feedback(batch, source=self.index)
        else:
            self.runner._egress.setdefault(tag[len("egress:") :], []).extend(batch.records())


class LocalDispatchers:
    """``parallelism`` dispatcher subtasks in this process (see the module docstring).

    Args:
        functions: the function registry.
        parallelism: number of dispatcher subtasks.
        egresses: declared egress typenames (or typename -> value type).
        clock: the processing-time clock (default ``ManualClock(0)``).
        max_parallelism: number of key groups.
        seed: if given, deliveries and task steps run in a seeded random order.
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
        _restore: Any = None,
        **limits: Any,
    ) -> None:
        self.functions = functions
        self.parallelism = parallelism
        self.max_parallelism = max_parallelism
        self.clock = clock if clock is not None else ManualClock(0)
        self.config = DispatcherConfig(functions, declared_egresses(egresses), endpoints=list(endpoints), **limits)
        self._rng = random.Random(seed) if seed is not None else None
        # channels not yet delivered: (sending subtask or _INGRESS, target subtask) -> batches
        self._mail: dict[tuple[int, int], deque[Batch]] = {}
        self._egress: dict[str, list[Any]] = {}
        self.main_output: list[Any] = []
        self.feedback_records = 0
        self._owners: dict[tuple[str, str], int] = {}
        subtask_states, in_flight = _restore_parts(_restore)
        self.subtasks: list[OperatorHarness] = []
        for index in range(parallelism):
            op = FunctionDispatcher(self.config)
            op.name = "statefun"
            self.subtasks.append(OperatorHarness(
                op, subtask_index=index, parallelism=parallelism, max_parallelism=max_parallelism,
                clock=self.clock, restore=subtask_states, state_backend=HeapStateBackend(),
                output=_RoutingOutput(self, index),
            ))
        self.dispatchers: list[FunctionDispatcher] = [h.operator for h in self.subtasks]  # type: ignore[misc]
        if in_flight:
            self._deliver(in_flight)
        self.run()

    # ------------------------------------------------------------------ driving
    def _owner(self, record: MessageRecord) -> int:
        key = (record[TARGET_TYPENAME], record[TARGET_ID])
        owner = self._owners.get(key)
        if owner is None:
            if len(self._owners) >= 1 << 16:
                self._owners.clear()
            kg = key_group_for(key, self.max_parallelism)
            owner = self._owners[key] = subtask_for_key_group(kg, self.parallelism, self.max_parallelism)
        return owner

    def _deliver(self, records: list[MessageRecord], source: int = _INGRESS) -> None:
        """Queue ``records`` on the channels from ``source`` to their owning subtasks, in
        order; their owners computed per batch as the engine's exchange does (none at
        parallelism 1)."""
        if not records:
            return
        if self.parallelism == 1:
            self._mail.setdefault((source, 0), deque()).append(Batch.of_records(list(records)))
            return
        groups = message_record_key_groups(records, self.max_parallelism)
        owners = (
            list(map(self._owner, records)) if groups is None
            else (groups * self.parallelism // self.max_parallelism).tolist()
        )
        by_subtask: dict[int, list[MessageRecord]] = {}
        for owner, r in zip(owners, records):
            by_subtask.setdefault(owner, []).append(r)
        for index, part in by_subtask.items():
            self._mail.setdefault((source, index), deque()).append(Batch.of_records(part))

    def _deliver_feedback(self, batch: Batch, source: int) -> None:
        """Queue a feedback batch of subtask ``source`` as the engine's channel ships it: as
        Arrow (what the channel converts it to; an Arrow batch as it is), cut per owning
        subtask, so the receivers read the records back from Arrow as on a cluster."""
        if not len(batch):
            return
        rb = batch.arrow()
        groups = message_key_groups(rb, self.max_parallelism)
        if groups is None:  # (not the tuple form: e.g. pickled records)
            self._deliver(batch.records(), source)
            return
        owners = groups * self.parallelism // self.max_parallelism
        targets = list(dict.fromkeys(owners.tolist()))
        for index in targets:
            part = rb if len(targets) == 1 else rb.filter(pa.array(owners == index))
            self._mail.setdefault((source, index), deque()).append(Batch.of_arrow(part))

    def send(self, *messages: Message) -> LocalDispatchers:
        """Deliver ingress messages (grouped per owning subtask, in order) and :meth:`run`."""
        self._deliver([message_to_record(m) for m in messages])
        return self.run()

    def send_batch(self, batch: Batch) -> LocalDispatchers:
        """Deliver a batch of ingress message records as an ingress task hands it over and
        :meth:`run`: at parallelism 1 the very batch (as in a job, so the messages of
        :meth:`RoutedIngress.route_batch <statefun_api.ingress.RoutedIngress.route_batch>` are
        queued in compact form), else cut per owning subtask as :meth:`send`.

        Example:
            >>> from raystream.statefun_api import StatefulFunctions, ValueSpec, IntType
            >>> from raystream.statefun_api.ingress import RoutedIngress
            >>> functions = StatefulFunctions()
            >>> @functions.bind("demo/counter", specs=[ValueSpec("n", IntType)])
            ... def counter(context, message):
            ...     context.storage.n = (context.storage.n or 0) + message.as_int()
            >>> batch = RoutedIngress(["demo/counter"], IntType).route_batch(Batch.of_records([("a", 2), ("a", 3)]))
            >>> LocalDispatchers(functions).send_batch(batch).state("demo/counter", "a", "n")
            5
        """
        if self.parallelism == 1 and len(batch):
            self._mail.setdefault((_INGRESS, 0), deque()).append(batch)
        else:
            self._deliver(batch.records())
        return self.run()

    def _steppable(self, index: int, now: int) -> bool:
        task = self.subtasks[index].task
        due = task.next_processing_timer()
        return task.has_mail() or (due is not None and due <= now)

    def _runnable(self) -> list[tuple[int, int]]:
        """Channels with a delivery the target accepts now (a dispatcher with a full
        in-flight budget takes no data), and ``(i, i)`` for tasks with mail or due timers."""
        now = self.clock.now_ms()
        dispatchers = self.dispatchers
        ready = [c for c in self._mail if dispatchers[c[1]].accepts_input()]
        ready += [(i, i) for i in range(self.parallelism) if (i, i) not in self._mail and self._steppable(i, now)]
        return ready

    def _run_one(self, channel: tuple[int, int]) -> None:
        queue = self._mail.get(channel)
        if queue and self.dispatchers[channel[1]].accepts_input():
            batch = queue.popleft()
            if not queue:
                del self._mail[channel]
            self.subtasks[channel[1]].process(batch)
        else:  # a task step: its posted calls and due timers
            self.subtasks[channel[1]].step()

    def run(self) -> LocalDispatchers:
        """Process deliveries, posted continuations, arrived remote replies and due timers
        until nothing is left to do now, waiting for the invocations of embedded async
        functions (remote calls may still be in flight: see :meth:`run_until_idle`)."""
        while True:
            channels = self._runnable()
            if channels:
                self._run_one(channels[self._rng.randrange(len(channels))] if self._rng is not None else channels[0])
                continue
            # (and for the calls that invoke failed messages again: their error is raised again here)
            waiting = [
                h for h, op in zip(self.subtasks, self.dispatchers) if op.embedded_in_flight() or op.retries_in_flight()
            ]
            if not waiting:
                return self
            waiting[0].step(wait_s=0.05)  # the replies come through the task's mailbox

    def pending_timers(self) -> list[int]:
        """Times of every subtask's live processing-time callbacks (delayed-message ticks,
        TTL), ascending."""
        return sorted(t for h in self.subtasks for t in h.pending_processing_timers)

    def _next_timer(self) -> int | None:
        times = [t for h in self.subtasks if (t := h.task.next_processing_timer()) is not None]
        return min(times) if times else None

    def advance(self, ms: int) -> LocalDispatchers:
        """Move the clock forward by ``ms`` in timer-sized steps, firing due timers."""
        end = self.clock.now_ms() + ms
        while (due := self._next_timer()) is not None and due <= end:
            self.clock.set(max(self.clock.now_ms(), due))
            self.run()
        self.clock.set(end)
        return self.run()

    def wait_remote(self, timeout_s: float = 60.0) -> LocalDispatchers:
        """Wait (real time) until no remote call is in flight, applying replies as they come;
        ``timeout_s`` is how long it waits without any reply (20,000 addresses of a slow
        endpoint may take minutes in all, a reply every few milliseconds).

        Raises:
            TimeoutError: no reply came for ``timeout_s`` while calls were in flight.
        """
        deadline = time.monotonic() + timeout_s
        self.run()
        done = self._replies()
        while any(op.remote_in_flight() for op in self.dispatchers):
            now_done = self._replies()
            if now_done != done:  # progress: a reply was applied
                done, deadline = now_done, time.monotonic() + timeout_s
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                retried = [note for op in self.dispatchers if op._rpc is not None and (note := op._rpc.last_retry())]
                raise TimeoutError(
                    f"remote calls still in flight, no reply for {timeout_s} s"
                    + (f"; they are being retried, the last failed attempt: {retried[-1]}" if retried else "")
                )
            # wait for a reply on the mailbox of a subtask that awaits one
            waiting = next(h for h, op in zip(self.subtasks, self.dispatchers) if op.remote_in_flight())
            waiting.step(wait_s=min(remaining, 0.05))
            self.run()
        return self

    def _replies(self) -> int:
        """Remote and embedded-async calls completed so far, over all subtasks."""
        return sum(op._rpc.completed for op in self.dispatchers if op._rpc is not None)

    def run_until_idle(self, max_ms: int = 3_600_000, remote_timeout_s: float = 60.0) -> LocalDispatchers:
        """Advance time until no message is queued, no remote call is in flight and no
        delayed message is pending (waiting for remote calls as long as a reply comes at
        least every ``remote_timeout_s`` of real time)."""
        deadline = self.clock.now_ms() + max_ms
        self.run()
        while not self.is_idle():
            if any(op.remote_in_flight() for op in self.dispatchers):
                self.wait_remote(remote_timeout_s)
                continue
            due = self._next_timer()
            if due is None or due > deadline:
                raise TimeoutError(f"dispatchers still busy after {max_ms} ms of processing time")
            self.advance(due - self.clock.now_ms())
        return self

    # ------------------------------------------------------------------ inspection
    def is_idle(self) -> bool:
        """No queued message, continuation or pending delayed message anywhere."""
        return (not self._mail and not any(h.task.has_mail() for h in self.subtasks)
                and all(op.is_idle() for op in self.dispatchers))

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
        if tv is None:
            return None
        if type(tv) is tuple:  # (typename, value) of a built-in type, kept decoded by the dispatcher
            return tv[1]
        if not tv.has_value:
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
    def snapshot(self) -> dict[str, Any]:
        """A checkpoint of every subtask, as the engine takes it: a barrier through each
        task (what it acknowledges: operator state and keyed state, serialized), plus the
        feedback records still on their way between subtasks (the engine's feedback log).

        Remote requests in flight are part of the operator state (they are sent again after
        a restore)."""
        states = [h.snapshot() for h in self.subtasks]
        in_flight = [r for queue in self._mail.values() for b in queue for r in b.records()]
        return {"subtasks": states, "in_flight": in_flight}

    @classmethod
    def restore(
        cls,
        functions: StatefulFunctions,
        snapshot: Any,
        parallelism: int = 1,
        **kwargs: Any,
    ) -> LocalDispatchers:
        """New dispatchers (at any parallelism) restored from :meth:`snapshot` (or from a
        list of per-subtask ``(keyed snapshot, operator state)`` pairs of bare
        dispatchers: ``(op.backend.snapshot(n), op.snapshot_state(n))``); their timers are
        re-armed from the restored delayed messages."""
        return cls(functions, parallelism=parallelism, _restore=snapshot, **kwargs)


def _restore_parts(snapshot: Any) -> tuple[list[dict[str, Any]] | None, list[MessageRecord]]:
    """(per-subtask harness snapshots, in-flight records) of what :meth:`LocalDispatchers.restore` got."""
    if snapshot is None:
        return None, []
    if isinstance(snapshot, dict):
        return list(snapshot["subtasks"]), list(snapshot.get("in_flight", []))
    heap = HeapStateBackend()
    return [{"operator": operator, "keyed": heap.serialize_snapshot(keyed)} for keyed, operator in snapshot], []
