"""The FunctionDispatcher: every stateful function of a job runs in ONE keyed engine operator.

The dispatcher's input is keyed by the target address ``(typename, id)`` (see
:mod:`statefun_api.routing`); each parallel subtask owns the addresses of its key groups.
For every batch of messages it:

1. queues them per address (FIFO per address) and invokes the function of each address
   with all of its queued messages at once (:func:`~statefun_api.invocation.invoke`, at
   most ``max_batch_per_address`` per call), loading and storing the address's values in
   the keyed state backend;
2. delivers messages to addresses of **its own key groups** through the same local queue,
   without touching the network; messages to other addresses go to the side output
   :data:`~statefun_api.routing.FEEDBACK_TAG`, which the job closes as a feedback edge
   hash-partitioned by address (``close_feedback``);
3. emits egress messages, decoded, on the side output ``egress:<typename>`` of each egress;
4. keeps delayed messages (``send_after``) in keyed state of the *sending* address with
   their cancellation token and fires them with processing-time timers of the operator's
   :class:`~raystream.operators.timers.InternalTimerService` (key: the sender, namespace:
   the entry key); a cancellation deletes the timer. The timers are not snapshotted: keyed
   state is the record of what is pending, and :meth:`FunctionDispatcher.open` registers the
   timers of the delayed messages of its key groups again, so each fires exactly once
   after a restore, on the subtask that owns its sender at the new parallelism.
5. hands the messages of ``async def`` functions (and of remote functions) to
   :class:`~statefun_api.remote.RemoteFunctions`: one invocation in flight per address, up to
   ``max_concurrent_requests`` per subtask, each async one running on the function loop with
   the values as held here (:mod:`statefun_api.embedded_caller`), its effects applied on the
   mailbox thread when it finishes.

**Bounded work per mailbox step.** :meth:`FunctionDispatcher.process_batch` only queues
the batch's messages; invocations run in continuations posted to the task's mailbox
(``ctx.post``), each invoking at most ``drain_step`` messages, so barriers, watermarks,
timers and the other input channels are served between any two steps of a fan-out burst.

**Bounded in-flight work, enforced at the ingress** (StateFun's
``statefun.async.max-per-task``). A subtask's in-flight work is every message it holds and
has not finished: queued for invocation (in memory or spilled), received over the feedback
edge and not invoked yet, and queued for or in flight to remote functions.
``max_in_flight`` caps what the ingress may add to it: ingress messages are admitted only
while the in-flight work is under the cap (the rest of an ingress batch is held, not
queued), and :meth:`FunctionDispatcher.accepts_input` is False meanwhile, so the task takes
no further ingress batch and the router upstream waits on its credit window. Messages
sent by functions (local or over the feedback edge) are always accepted: the feedback edge
never blocks, since a blocked cycle deadlocks; fan-out may therefore take the in-flight
work above the cap, and the ingress stays closed until it is back under it.

**Bounded memory.** Messages waiting for invocation live in a
:class:`~statefun_api.spill.SpillingQueue` with a memory budget (``inbox_memory_bytes``):
beyond it they are written to local disk (``spill_dir``) and read back in order. Only the
active set (at most ``2 * drain_step`` messages, grouped per address: a step's messages and
the next one's, so that messages to one address that arrive within two steps are invoked
together, with one load and store of its values) is held as Python objects; messages to
other subtasks and egress records leave in chunks while a step runs.

**Metrics** (the operator's counters in the job metrics): ``queued_messages``,
``held_ingress``, ``in_flight``, ``inbox_memory_bytes``, ``spilled_bytes`` and
``spilled_messages`` (written to disk so far), ``spill_disk_bytes`` (on disk now),
``remote_in_flight`` (requests), ``rss_peak_bytes`` (of the task's process, sampled each
step at most every 50 ms; the job metrics show the largest subtask's) and
``checkpoints_with_queued_work`` (completed checkpoints taken while messages were queued:
barriers were not starved by the work).

**State layout** (all in the keyed state backend, so it is snapshotted per key group and
rescales): one ``ValueState`` per (function type, value spec), named
``statefun/<typename>/<spec>``, holding ``(typename, decoded value)`` for a built-in
immutable type (no TypedValue made per write) or a :class:`~statefun_api.types.TypedValue`
with the spec's typename, with the spec's TTL (``expire_after_write`` refreshes on writes,
``expire_after_call`` on every invocation); ``statefun.delayed``, a ``MapState`` of the
sending address: entry key (the cancellation token, or ``("#", seq)`` without one) ->
``(seq, fire_at_ms, message record)``; ``statefun.delay-seq``, the sender's sequence
counter (cleared when the sender has no pending delayed message left). The not-yet-invoked messages (active set, queue, held ingress, remote batches)
are the operator state (:meth:`FunctionDispatcher.snapshot_state`).

Example (in-process; the engine normally builds it through
:class:`~statefun_api.job.StatefulFunctionsJob`):
    >>> from raystream.statefun_api import StatefulFunctions, message_builder, egress_message_builder, StringType
    >>> from raystream.statefun_api.local import LocalDispatchers
    >>> functions = StatefulFunctions()
    >>> @functions.bind("demo/greeter")
    ... def greeter(context, message):
    ...     context.send_egress(egress_message_builder("demo/out", f"hi {context.address.id}", StringType))
    >>> run = LocalDispatchers(functions, egresses=["demo/out"])
    >>> run.send(message_builder("demo/greeter", "ann", str_value="x")).egress("demo/out")
    ['hi ann']
"""

from __future__ import annotations

import functools
import logging
import os
import resource
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from itertools import filterfalse, islice
from operator import length_hint
from typing import Any, NoReturn

from raystream.checkpoint import (
    HeapKeyedStateBackend,
    MapStateDescriptor,
    StateTtlConfig,
    ValueState,
    ValueStateDescriptor,
)
from raystream.engine.errors import JobFailed, UserCodeError, short_repr
from raystream.engine.keygroups import key_group_for
from raystream.engine.operator import OperatorContext, Output, StreamOperator
from raystream.engine.records import Batch
from raystream.operators.functions import keyed_state_backend
from raystream.operators.timers import InternalTimerService
from raystream.statefun_api.address import Address, id_problem, parse_typename
from raystream.statefun_api.effects import DelayedMessage, InvocationResult
from raystream.statefun_api.embedded_caller import EmbeddedEndpoint
from raystream.statefun_api.endpoints import RemoteEndpoint, _check_duplicates, endpoint_problem
from raystream.statefun_api.errors import FunctionNotFound, StatefulFunctionError
from raystream.statefun_api.functions import StatefulFunctions
from raystream.statefun_api.invocation import (
    BatchContext,
    invocation_failure,
    invoke_prepared,
    settle_outcome,
)
from raystream.statefun_api.messages import Message
from raystream.statefun_api.queued_state import queued_snapshot, restored_messages
from raystream.statefun_api.remote import RemoteFunctions
from raystream.statefun_api.routing import (
    CALLER_ID,
    CALLER_TYPENAME,
    FEEDBACK_TAG,
    HAS_VALUE,
    TARGET_ID,
    TARGET_TYPENAME,
    VALUE,
    VALUE_TYPENAME,
    CompactMessages,
    FeedbackBatches,
    IngressRecords,
    MessageRecord,
    address_key,
    compact_message_batch,
    decode_egress_value,
    describe_records,
    egress_tag,
    message_record_key_groups,
    message_to_record,
    record_caller,
    typed_records_batch,
)
from raystream.statefun_api.spill import SpillingQueue
from raystream.statefun_api.state_layout import DELAY_SEQ_STATE, DELAYED_STATE, value_state_name
from raystream.statefun_api.storage import (
    AddressScopedStorage,
    StorageSlots,
    deleted_again,
    explain_attribute_error,
    load_storage,
    may_delete_values,
    storage_class,
)
from raystream.statefun_api.types import Type, TypedValue, builtin_type

__all__ = [
    "DispatcherConfig",
    "FunctionDispatcher",
    "DELAYED_STATE",
    "DELAY_SEQ_STATE",
    "value_state_name",
    "declared_egresses",
]

log = logging.getLogger(__name__)

_KG_CACHE_LIMIT = 1 << 16
#: new addresses in one queued batch from which their key groups are computed at once
_KG_BATCH_MIN = 32
#: messages to other subtasks, local overflow and egress records leave a step in chunks of this size
_CHUNK = 8192
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
#: the process's RSS is sampled for the rss_peak_bytes gauge at most this often (seconds)
_RSS_EVERY_S = 0.05
_new_message = _new_address = object.__new__
_refcount = getattr(sys, "getrefcount", lambda obj: 1 << 30)  # no reference counts (not CPython): never reuse


class _QueuedValues(list):  # type: ignore[type-arg]
    """An address's queued ingress messages in compact form, from the second: their values
    (of the function type's compact value typename, ``FunctionDispatcher._compact_vt``); one
    such message is queued as its bare value (see :meth:`FunctionDispatcher._enqueue_compact`)."""

    __slots__ = ()


class _CompactRecords:
    """The message records of an address's messages in compact form (its values), for what
    reads records (errors, async functions, :meth:`FunctionDispatcher._apply`): each record is
    made when read."""

    __slots__ = ("typename", "fid", "value_typename", "values")

    def __init__(self, typename: str, fid: str, value_typename: str, values: list[Any]) -> None:
        self.typename = typename
        self.fid = fid
        self.value_typename = value_typename
        self.values = values

    def __len__(self) -> int:
        return len(self.values)

    def _record(self, value: Any) -> MessageRecord:
        return (self.typename, self.fid, "", "", self.value_typename, value, True)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self._record(v) for v in self.values[index]]
        return self._record(self.values[index])

    def __iter__(self) -> Any:
        return map(self._record, self.values)


class _Layout:
    """What :meth:`FunctionDispatcher._drain` needs of one function type: the function and
    its reusable storage slots (replaced in place when a function keeps its storage, so the
    per-address cache that refers to the layout stays valid)."""

    __slots__ = ("fn", "fun", "is_async", "slots")

    def __init__(self, fn: Any, slots: StorageSlots) -> None:
        self.fn = fn
        self.fun = fn.fun
        self.is_async = fn.is_async
        self.slots = slots


class _DispatchContext(BatchContext):
    """The context of the dispatcher's sync path: ``send`` makes the message's engine record
    at once into ``sent`` (no OutgoingMessage, no target Address per message), which the
    dispatcher routes after the invocation, in send order. ``sender`` is the invoked
    address's key ``(typename, id)``."""

    __slots__ = ("sent", "sender")
    sent: list[MessageRecord]
    sender: tuple[str, str]

    def send(self, message: Message) -> None:
        """Send ``message`` to the function named by its target (see :meth:`Context.send`)."""
        if not isinstance(message, Message):
            super().send(message)  # raises the SDK's error for what is not a Message
        sender = self.sender
        tpe = message._type
        if tpe is not None:  # a built-in value held decoded (message_to_record's fast path)
            self.sent.append(
                (message.target_typename, message.target_id, sender[0], sender[1], tpe.typename, message._obj, True)
            )
        else:
            self.sent.append(message_to_record(message, self._address))


@dataclass
class DispatcherConfig:
    """What every dispatcher subtask needs (picklable; travels in the operator factory).

    Attributes:
        functions: the function registry.
        egresses: declared egress typename -> value type used to decode it (``None``:
            built-in types decoded by typename, others passed on as ``TypedValue``).
        max_in_flight: cap on the subtask's in-flight work below which ingress messages are
            admitted (see the module docstring).
        drain_step: messages invoked per mailbox step before yielding to the mailbox (the
            active set held as Python objects, grouped per address, is up to twice as many).
        inbox_memory_bytes: memory budget of the queue of messages waiting for invocation;
            beyond it they spill to ``spill_dir``.
        spill_dir: directory for spill files (default: the system temporary directory).
        max_batch_per_address: messages passed to one ``invoke`` call of an address.
        timer_tick_ms: no longer used (kept so existing configurations load): delayed
            messages are processing-time timers of the operator's timer service, whose one
            task wake-up follows the earliest live message, and a cancelled message frees
            its timer at once.
        endpoints: remote function endpoints (:mod:`statefun_api.endpoints`); function
            types registered in ``functions`` take precedence over namespace patterns.
        max_concurrent_requests: HTTP requests to remote functions, and invocations of
            embedded async functions, in flight per subtask; further ready addresses wait
            (their messages keep batching), none is dropped.

    Example:
        >>> from raystream.statefun_api import StatefulFunctions
        >>> DispatcherConfig(StatefulFunctions(), {"demo/out": None}).max_in_flight
        10000
    """

    functions: StatefulFunctions
    egresses: dict[str, Type[Any] | None] = field(default_factory=dict)
    max_in_flight: int = 10_000
    drain_step: int = 4096
    max_batch_per_address: int = 1000
    timer_tick_ms: int = 100
    endpoints: list[RemoteEndpoint] = field(default_factory=list)
    max_concurrent_requests: int = 256
    inbox_memory_bytes: int = 64 << 20
    spill_dir: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.functions, StatefulFunctions):
            raise TypeError(f"functions must be a StatefulFunctions registry, got {self.functions!r}")
        self.endpoints = list(self.endpoints)
        for ep in self.endpoints:
            problem = endpoint_problem(ep, self.functions, "DispatcherConfig(endpoints=...)")
            if problem is not None:
                raise (TypeError if not isinstance(ep, RemoteEndpoint) else ValueError)(problem)
        _check_duplicates(self.endpoints)  # (as StatefulFunctionsJob.with_endpoint: one endpoint per pattern)
        if self.spill_dir is not None and not isinstance(self.spill_dir, str):
            raise TypeError(f"DispatcherConfig.spill_dir must be a directory path (str) or None, got {self.spill_dir!r}")
        b = self.inbox_memory_bytes
        if isinstance(b, bool) or not isinstance(b, int) or b < 0:
            raise ValueError(f"DispatcherConfig.inbox_memory_bytes must be an int >= 0 (0: spill every queued chunk), got {b!r}")
        for name in ("max_in_flight", "drain_step", "max_batch_per_address", "timer_tick_ms", "max_concurrent_requests"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"DispatcherConfig.{name} must be a positive int, got {value!r}")


class FunctionDispatcher(StreamOperator):
    """Runs stateful functions as one keyed, iterative engine operator (see module docstring).

    Args:
        config: the functions, egresses and limits.

    Example:
        >>> from raystream.statefun_api import StatefulFunctions
        >>> op = FunctionDispatcher(DispatcherConfig(StatefulFunctions()))
        >>> op.keyed, op.is_idle()
        (True, True)
    """

    keyed = True

    def __init__(self, config: DispatcherConfig) -> None:
        self.config = config
        self.functions = config.functions
        # the active set: per-address FIFO queues of messages about to be invoked, per function
        # typename then per id (no key tuple made and hashed per message: a record's typename and
        # id are looked up as they are); one message queued for an address is held as its
        # record, a list from the second: so the many addresses with one message each leave no
        # list to the garbage collector. `_ready`: the key (typename, id) of each address
        # queued there, once, in the order they are invoked
        # ingress messages in compact form (CompactMessages) are queued there as their values:
        # one as its bare value (a built-in int, float, bool or str: never a tuple or a list), a
        # _QueuedValues from the second; their value typename is the function type's in
        # `_compact_vt` (set by the first compact messages to it; others come as records). A
        # record queued behind compact messages turns the address's queue into records, so
        # every address keeps its messages in arrival order
        self._pending: dict[str, dict[str, Any]] = {}
        self._compact_vt: dict[str, str] = {}
        self._ready: deque[tuple[str, str]] = deque()
        self._pending_count = 0
        # messages to other subtasks leave with their values held decoded (issue 13)
        self._feedback = FeedbackBatches()
        self._rss_due = 0.0  # monotonic time of the next RSS sample
        self._invocations = 0  # since the last counters update (added up in _update_gauges)
        self._messages = 0
        # (two steps' worth: more messages per invocation of an address, see the module docstring)
        self._active_limit = 2 * config.drain_step
        self._inbox: SpillingQueue | None = None  # the rest, in arrival order (created in open)
        self._overflow: list[MessageRecord] = []  # local messages of this step bound for the inbox
        # ingress messages not admitted yet, oldest first: pieces (lists of records, or
        # CompactMessages), `_held_n` messages in all
        self._held: deque[list[MessageRecord] | CompactMessages] = deque()
        self._held_n = 0
        self._remote: list[MessageRecord] = []
        self._egress_out: dict[str, list[Any]] = {}
        self._egress_rows = 0
        self._kg_cache: dict[tuple[str, str], int] = {}
        self._callers: dict[tuple[str, str], Address] = {}  # target/caller addresses, reused across messages
        # delayed messages: processing-time timers (key: sender address, namespace: entry key)
        self._delay_timers: InternalTimerService[tuple[str, str], Any] | None = None  # (created in open)
        self._continuation_posted = False
        self._restored_states: list[Any] = []  # (operator states given to restore_state, read in open)
        self._busy_checkpoints: set[int] = set()
        self._rpc: Any = None  # RemoteFunctions, for remote endpoints and async functions (created in open)
        self._invoked_here: frozenset[str] = frozenset()  # function types _drain invokes (set in open)
        self._deletes_again: set[str] = set()  # function types that deleted a value twice in a batch (_drain)
        self._may_delete: dict[str, bool] = {}  # function type -> storage.may_delete_values of its function
        self._context: _DispatchContext | None = None  # reused by consecutive invocations (_drain)
        self._message: Message | None = None  # reused by consecutive messages (_drain)
        self._message_vt: str | None = None  # the value typename whose type _message._type holds
        # key -> its key group, for the addresses of our key groups met (values no container:
        # an address met costs the garbage collector nothing)
        self._targets: dict[tuple[str, str], int] = {}
        # the Address of the invocation under way, reused while no function keeps it (_drain),
        # and the typename whose namespace and name it holds
        self._address: Address | None = None
        self._address_tn: str | None = None
        self.counters = {
            "invocations": 0,
            "messages": 0,
            "local_messages": 0,
            "remote_messages": 0,
            "egress_messages": 0,
            "delayed_scheduled": 0,
            "delayed_fired": 0,
            "delayed_cancelled": 0,
            "remote_requests": 0,
            "remote_handshakes": 0,
            "remote_retries": 0,
            "remote_splits": 0,
            "queued_messages": 0,
            "held_ingress": 0,
            "in_flight": 0,
            "inbox_memory_bytes": 0,
            "spilled_bytes": 0,
            "spilled_messages": 0,
            "spill_disk_bytes": 0,
            "remote_in_flight": 0,
            "rss_peak_bytes": 0,
            "checkpoints_with_queued_work": 0,
        }

    # ------------------------------------------------------------------ lifecycle
    def open(self, ctx: OperatorContext, output: Output) -> None:
        """Register the state of every function, re-queue restored messages and register
        the timers of the delayed messages found in (restored) keyed state."""
        super().open(ctx, output)
        if ctx.keyed_backend is None:  # a context made by hand, without a task (unit tests)
            ctx.keyed_backend = HeapKeyedStateBackend(ctx.key_group_range, ctx.max_parallelism, ctx.clock)
        self.backend = backend = keyed_state_backend(ctx)
        self.clock = ctx.clock
        self._range = ctx.key_group_range
        self._kg_first, self._kg_last = ctx.key_group_range.start, ctx.key_group_range.end
        self._max_parallelism = ctx.max_parallelism
        self._inbox = SpillingQueue(
            self.config.inbox_memory_bytes,
            self.config.spill_dir,
            label=f"{ctx.operator_name!r} (subtask {ctx.subtask_index + 1}/{ctx.parallelism})",
        )
        self._values: dict[str, list[tuple[str, Any, str]]] = {}  # typename -> [(spec name, state, typename)]
        for typename in self.functions.typenames():
            fn = self.functions.for_typename(typename)
            states = []
            for spec in fn.specs:
                ttl = None
                if spec.expiration_mode != "none":
                    update = "on_read_and_write" if spec.expiration_mode == "after_call" else "on_create_and_write"
                    ttl = StateTtlConfig(spec.expire_after_millis, update_type=update)
                st = backend.get_state(ValueStateDescriptor(value_state_name(typename, spec.name), ttl=ttl))
                states.append((spec.name, st, spec.type.typename))
            self._values[typename] = states
        self._fns = {typename: self.functions.for_typename(typename) for typename in self._values}
        # per function type: (function, its reusable storage bound to the spec states)
        self._layouts = {t: _Layout(self._fns[t], self._storage_slots(t)) for t in self._values}
        self._targets.clear()
        self._delayed = backend.get_state(MapStateDescriptor(DELAYED_STATE))
        self._delay_seq = backend.get_state(ValueStateDescriptor(DELAY_SEQ_STATE, default=0))
        ctx.metrics.update(self.counters)
        self.counters = ctx.metrics
        # async functions are invoked concurrently across addresses through the remote-call
        # machinery (statefun_api.embedded_caller), given a mailbox to apply their results on;
        # without one (a dispatcher driven by hand) each runs to completion in _drain
        post = ctx.post
        async_types = sorted(t for t, fn in self._fns.items() if fn.is_async) if post is not None else []
        self._invoked_here = frozenset(self._fns).difference(async_types)
        if self.config.endpoints or async_types:
            embedded = [EmbeddedEndpoint(t, self.config.max_batch_per_address) for t in async_types]
            self._rpc = RemoteFunctions(
                self,
                [*embedded, *self.config.endpoints],
                max_in_flight=self.config.max_in_flight,
                max_concurrent_requests=self.config.max_concurrent_requests,
                wake=(lambda: post(self._on_remote_replies)) if post is not None else None,
                name=f"raystream-statefun-remote {ctx.task_name}",
            )
            for typename in async_types:
                self._rpc.register_specs(typename, {name: (st, tn) for name, st, tn in self._values[typename]})
        # messages that were queued when the restored checkpoint was taken: those of our key
        # groups (the restore cut them; a snapshot of the previous format holds every old
        # subtask's, which we filter)
        mine, unfiltered = restored_messages(self._restored_states)
        self._restored_states = []
        mine.extend(r for r in unfiltered if self._key_group(address_key(r)) in self._range)
        self._accept(mine)
        # delayed messages live in keyed state (snapshotted and rescaled with it); their timers
        # are registered again from it, in firing order, for the senders of our key groups
        register = self._register_wakeup if ctx.register_processing_timer is not None else None
        timers = self._delay_timers = InternalTimerService(
            ctx.max_parallelism, _no_event_time, self._fire_delayed, register, ctx.clock
        )
        restored_delayed = []
        for sender in list(backend.keys(DELAYED_STATE)):
            self.set_current_address(sender)
            for entry_key, (seq, fire_at, _record) in self._delayed.items():
                restored_delayed.append((fire_at, seq, sender, entry_key))
        restored_delayed.sort(key=lambda t: (t[0], t[1]))
        for fire_at, _seq, sender, entry_key in restored_delayed:
            timers.register_processing_time_timer(sender, entry_key, fire_at)
        if self._rpc is not None and self._rpc.has_ready:
            self._rpc.send_ready()  # requests in flight at the checkpoint are sent again
        self._update_gauges()
        self._schedule_continuation()

    def snapshot_state(self, checkpoint_id: int) -> Any:
        """The messages not invoked yet (a copy): the active set, the queue (spilled chunks
        included, as Arrow batches), held ingress messages and the batches of remote requests
        in flight, whose effects are not applied yet, split by key group
        (:func:`~statefun_api.queued_state.queued_snapshot`: a restored subtask receives its
        key groups' only); keyed state is snapshotted by the task."""
        pending = self._pending
        queued: list[MessageRecord] = []
        for key in self._ready:
            queued.extend(self._queued_records(key[0], key[1], pending[key[0]][key[1]]))
        if self._rpc is not None:
            queued.extend(self._rpc.pending_records())
        inbox = self._inbox
        batches = inbox.snapshot() if inbox is not None else []
        if self._overflow:
            batches.append(typed_records_batch(self._overflow))
        for piece in self._held:
            batches.append(typed_records_batch(piece.records() if type(piece) is CompactMessages else piece))  # type: ignore[union-attr,arg-type]
        if self._has_work():
            self._busy_checkpoints.add(checkpoint_id)
        return queued_snapshot(queued, batches, self._key_group, self._max_parallelism)

    def restore_state(self, states: list[Any]) -> None:
        """Keep the restored queued messages (our key groups', or every old subtask's in a
        snapshot of the previous format) for :meth:`open`, which queues ours again."""
        self._restored_states = list(states or ())

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        """Count completed checkpoints that were taken while messages were queued."""
        if checkpoint_id in self._busy_checkpoints:
            self.counters["checkpoints_with_queued_work"] += 1
        self._busy_checkpoints = {c for c in self._busy_checkpoints if c > checkpoint_id}

    def notify_checkpoint_aborted(self, checkpoint_id: int) -> None:
        """Forget an aborted checkpoint (while none completes, the set stays this small)."""
        self._busy_checkpoints.discard(checkpoint_id)

    def is_idle(self) -> bool:
        """False while messages are queued, remote calls are in flight or delayed messages are pending."""
        return not self._has_work() and not self.pending_delayed() and (self._rpc is None or self._rpc.is_idle())

    def _has_work(self) -> bool:
        inbox = self._inbox
        return bool(self._pending_count or self._overflow or self._held or (inbox is not None and len(inbox)))

    def in_flight(self) -> int:
        """The subtask's in-flight work: messages queued (active set, queue in memory or
        spilled) and messages queued for or in flight to remote functions. Held ingress
        messages are not admitted yet, so they do not count."""
        n = self._pending_count + len(self._overflow)
        if self._inbox is not None:
            n += len(self._inbox)
        rpc = self._rpc
        if rpc is not None:
            n += rpc.queued() + rpc.records_in_flight()
        return n

    def accepts_input(self) -> bool:
        """False while ingress messages are held back (the in-flight work reached
        ``max_in_flight``) or a remote address has a full queue behind its request in
        flight: the task then takes no further ingress batch. The feedback edge is never
        paused (the task does not consult this for it)."""
        if self._held or self.in_flight() >= self.config.max_in_flight:
            return False
        return self._rpc is None or self._rpc.accepts_input()

    def end_input(self) -> None:
        """All inputs (and the loop) ended; anything still queued is invoked now, and
        remote calls in flight are waited for."""
        rpc = self._rpc
        while True:
            while rpc is not None and (not rpc.is_idle() or self._has_work()):
                self._step()  # also sends ready addresses
                if rpc.in_flight():
                    rpc.apply_completions(block_s=0.5)
            if not self._has_work():
                break
            self._step()
        self._flush()
        self._update_gauges()

    def close(self) -> None:
        """Stop the remote-call I/O thread, if any (replies still on their way are dropped),
        and delete spill files."""
        if self._rpc is not None:
            self._rpc.close()
        if self._inbox is not None:
            self._inbox.close()

    # ------------------------------------------------------------------ input
    def process_batch(self, batch: Batch, input_index: int = 0) -> None:
        """Queue the batch's messages: ingress messages (no caller) are admitted while the
        in-flight work is under ``max_in_flight`` and held otherwise; messages from the
        feedback edge are always queued. The invocations run in mailbox continuations."""
        if _from_ingress(batch):
            compact = compact_message_batch(batch.arrow()) if batch.is_arrow else None
            if compact is not None and self._takes_compact(compact):  # (an ingress's Arrow batch, at p > 1)
                self._held.append(compact)
                self._held_n += len(compact)
            else:
                self._hold(batch.records())
            self._admit()
        elif batch.is_arrow and (self._pending_count >= self._active_limit or self._overflow or len(self._inbox or ())):
            self._inbox.push_arrow(batch.arrow())  # type: ignore[union-attr]  # (created in open)
        else:
            self._accept(batch.records())
        if self._rpc is not None and self._rpc.has_ready:
            try:
                self._rpc.send_ready()
            except Exception:  # (the call is queued again: the next step sends it again)
                self._schedule_continuation()
                raise
        self._update_gauges()
        self._schedule_continuation()

    def pending_messages(self) -> int:
        """Messages accepted and not yet invoked (active set and queue, spilled included),
        plus ingress messages held back."""
        n = self._pending_count + len(self._overflow) + self._held_n
        return n + (len(self._inbox) if self._inbox is not None else 0)

    def pending_delayed(self) -> int:
        """Delayed messages waiting for their time."""
        timers = self._delay_timers
        return 0 if timers is None else timers.num_processing_timers()

    def delayed_timer_entries(self) -> int:
        """Entries of the delayed-message timer heap, for metrics: the pending messages plus
        cancelled ones not dropped yet, which stay below ``2 * pending_delayed() + 64``."""
        timers = self._delay_timers
        return 0 if timers is None else timers.stats()["processing_heap"]

    def _storage_slots(self, typename: str) -> StorageSlots:
        """A reusable storage of the function ``typename`` bound to its value states: read and
        written straight in the backend's tables when it offers them for every one of them
        (the heap backend, states without TTL: ``value_table``), else through the states."""
        states = [st for _, st, _ in self._values[typename]]
        # (sync functions whose code shows no deletion: Python's own reads and assignments; a
        # function that may delete gets the class that deletes idempotently and reads None
        # after a deletion, as does a function type that deleted unseen (see _drain))
        fn = self._fns[typename]
        deletes = self._may_delete.get(typename)
        if deletes is None:  # (once per function type: a function that keeps its storage gets new slots often)
            deletes = self._may_delete[typename] = may_delete_values(fn.fun)
        strict = not fn.is_async and typename not in self._deletes_again and not deletes
        slots = StorageSlots(typename, self._fns[typename].specs, states, strict_delete=strict)
        value_table = getattr(self.backend, "value_table", None)
        if value_table is None:  # (RocksDB: values through the states)
            return slots
        direct = [value_table(st) for st in states]
        if all(d is not None for d in direct):  # (a TTL makes the function's states go through the API)
            slots.bind_tables([d[0] for d in direct], direct[0][1] if direct else set())  # type: ignore[index]
        return slots

    def remote_in_flight(self) -> int:
        """Requests to remote functions in flight (invocations of embedded async functions included)."""
        return 0 if self._rpc is None else self._rpc.in_flight()

    def embedded_in_flight(self) -> int:
        """Invocations of embedded async functions in flight (on the function loop)."""
        return 0 if self._rpc is None else self._rpc.embedded_in_flight()

    def retries_in_flight(self) -> int:
        """Remote or async calls in flight that invoke the messages of a failed call again
        (in a dispatcher that goes on after a failure: see :meth:`_step`)."""
        return 0 if self._rpc is None else self._rpc.retries_in_flight()

    # ------------------------------------------------------------------ queue
    def _key_group(self, key: tuple[str, str]) -> int:
        kg = self._kg_cache.get(key)
        if kg is None:
            if len(self._kg_cache) >= _KG_CACHE_LIMIT:
                self._kg_cache.clear()
            kg = self._kg_cache[key] = key_group_for(key, self._max_parallelism)
        return kg

    def _cache_key_groups(self, keys: Iterable[tuple[str, str]]) -> None:
        """Compute the key groups of the addresses among ``keys`` that :meth:`_drain` has no
        target for yet, at once (hashed with numpy as the exchange hashes message records:
        ~0.1 us an address instead of ~2 us for a ``key_group_for`` in Python each), so that
        a burst of messages to addresses seen for the first time (ids seen once: orders,
        sessions) does not pay a Python hash per address."""
        targets = self._targets
        kg_cache = self._kg_cache
        new = list(filterfalse(targets.__contains__, keys))  # (no Python step per key: addresses met before are most)
        if kg_cache and len(new) >= _KG_BATCH_MIN:
            new = list(filterfalse(kg_cache.__contains__, new))
        if len(new) < _KG_BATCH_MIN:
            return
        if len(kg_cache) + len(new) > _KG_CACHE_LIMIT:
            kg_cache.clear()
            new = new[:_KG_CACHE_LIMIT]  # (the cache's bound holds for any fan-out; the rest are hashed as met)
        groups = message_record_key_groups(new, self._max_parallelism, min_records=_KG_BATCH_MIN)
        if groups is not None:
            kg_cache.update(zip(new, groups.tolist()))

    def _hold(self, records: list[MessageRecord]) -> None:
        """Hold an ingress batch's ``records``: in compact form when they are a routed
        ingress's :class:`~statefun_api.routing.IngressRecords` to function types invoked here
        whose compact value typename they share (see ``_pending`` in ``__init__``)."""
        compact = records.compact if type(records) is IngressRecords else None
        if compact is not None and all(map(self._takes_compact, compact)):
            for c in compact:  # (a CompactMessages of our own: split as it is admitted)
                self._held.append(CompactMessages(c.typename, c.value_typename, c.ids, c.values))
        else:
            self._held.append(list(records))
        self._held_n += len(records)

    def _takes_compact(self, messages: CompactMessages) -> bool:
        typename = messages.typename
        return typename in self._invoked_here and self._compact_vt.setdefault(typename, messages.value_typename) == messages.value_typename

    def _queued_records(self, typename: str, fid: str, q: Any) -> list[MessageRecord]:
        """The records of the messages queued for the address ``(typename, fid)`` as ``q``."""
        tq = type(q)
        if tq is list:
            return q  # type: ignore[no-any-return]
        if tq is tuple:
            return [q]
        vt = self._compact_vt[typename]
        return [(typename, fid, "", "", vt, v, True) for v in (q if tq is _QueuedValues else (q,))]

    def _admit(self) -> None:
        """Move held ingress messages into the queue while the in-flight work is under the cap."""
        held = self._held
        if not held:
            return
        room = self.config.max_in_flight - self.in_flight()
        while held and room > 0:
            piece = held[0]
            n = len(piece)
            if n <= room:
                held.popleft()
            elif type(piece) is CompactMessages:
                piece = piece.split(room)
                n = room
            else:  # (the head taken in C: no Python step per message)
                head = piece[:room]  # type: ignore[index]
                del piece[:room]  # type: ignore[union-attr]
                piece = head
                n = room
            room -= n
            self._held_n -= n
            self._accept(piece)

    def _accept(self, records: list[MessageRecord] | CompactMessages) -> None:
        """Queue ``records`` in arrival order: into the active set while it has room and
        nothing older waits in the queue, the rest into the queue."""
        inbox = self._inbox
        assert inbox is not None  # created in open
        if type(records) is CompactMessages:
            if not self._overflow and not len(inbox):
                room = self._active_limit - self._pending_count
                if room >= len(records):
                    self._enqueue_compact(records)
                    return
                if room > 0:
                    self._enqueue_compact(records.split(room))
            inbox.push_compact(records)
            return
        assert type(records) is list
        i = 0
        if not self._overflow and not len(inbox):
            room = self._active_limit - self._pending_count
            i = min(room, len(records))
            if i > 0:
                self._enqueue_many(records[:i] if i < len(records) else records)
        if i < len(records):
            inbox.push(records[i:] if i else records)

    def _refill(self) -> None:
        """Move queued messages into the active set, oldest first, up to its limit (and
        while remote queues have room)."""
        inbox = self._inbox
        assert inbox is not None
        rpc = self._rpc
        limit = self.config.max_in_flight
        while len(inbox) and self._pending_count < self._active_limit:
            if rpc is not None and rpc.queued() >= limit:
                return
            for piece in inbox.pop_pieces(self._active_limit - self._pending_count):
                if type(piece) is CompactMessages:
                    self._enqueue_compact(piece)
                else:
                    self._enqueue_many(piece)  # type: ignore[arg-type]

    def _enqueue_compact(self, messages: CompactMessages) -> None:
        """Queue ingress messages in compact form (to a function type invoked here) into the
        active set, in order (see ``_pending`` in ``__init__``)."""
        typename = messages.typename
        vt = messages.value_typename
        pending = self._pending.get(typename)
        if pending is None:
            pending = self._pending[typename] = {}
        ready = self._ready
        before = len(ready)
        for fid, value in zip(messages.ids, messages.values):
            q = pending.get(fid)
            if q is None:
                pending[fid] = value
                ready.append((typename, fid))
            else:
                tq = type(q)
                if tq is _QueuedValues:
                    q.append(value)
                elif tq is list:
                    q.append((typename, fid, "", "", vt, value, True))
                elif tq is tuple:
                    pending[fid] = [q, (typename, fid, "", "", vt, value, True)]
                else:
                    pending[fid] = _QueuedValues((q, value))
        self._pending_count += len(messages)
        if len(ready) - before >= _KG_BATCH_MIN:
            self._cache_key_groups(islice(ready, before, None))

    def _enqueue_many(self, records: list[MessageRecord]) -> None:
        """:meth:`_enqueue` of each record, in order (one pass; with remote or async function
        types, only their records take the type check's detour through ``RemoteFunctions``)."""
        by_type = self._pending
        ready = self._ready
        rpc = self._rpc
        typename: str | None = None
        pending: dict[str, Any] = {}
        if rpc is None:
            before = len(ready)
            for record in records:
                if record[0] != typename:  # (a batch's records are mostly to one function type)
                    typename = record[0]
                    pending = by_type.get(typename)  # type: ignore[assignment]
                    if pending is None:
                        pending = by_type[typename] = {}
                q = pending.get(record[1])
                if q is None:
                    pending[record[1]] = record  # (one message: its record; see __init__)
                    ready.append(record[:2])
                elif type(q) is list:
                    q.append(record)
                elif type(q) is tuple:
                    pending[record[1]] = [q, record]
                else:  # (behind messages in compact form)
                    pending[record[1]] = [*self._queued_records(typename, record[1], q), record]  # type: ignore[arg-type]
            self._pending_count += len(records)
            if len(ready) - before >= _KG_BATCH_MIN:
                self._cache_key_groups(islice(ready, before, None))
            return
        here = self._invoked_here
        local = 0
        remote_keys: list[tuple[str, str]] = []
        enqueue = rpc.enqueue
        last_type: str | None = None
        endpoint = None
        for record in records:
            if record[0] != last_type:  # (a batch's records are mostly to one function type)
                last_type = record[0]
                endpoint = None if last_type in here else rpc.endpoint_for(last_type)
            if endpoint is not None:
                key = record[:2]
                enqueue(key, record, endpoint)
                remote_keys.append(key)
                continue
            if record[0] != typename:
                typename = record[0]
                pending = by_type.setdefault(typename, {})
            q = pending.get(record[1])
            if q is None:
                pending[record[1]] = record
                ready.append(record[:2])
            elif type(q) is list:
                q.append(record)
            elif type(q) is tuple:
                pending[record[1]] = [q, record]
            else:  # (behind messages in compact form)
                pending[record[1]] = [*self._queued_records(typename, record[1], q), record]  # type: ignore[arg-type]
            local += 1
        self._pending_count += local
        if len(remote_keys) >= _KG_BATCH_MIN:  # (their requests read and write state at their key groups)
            self._cache_key_groups(remote_keys)

    def _enqueue(self, record: MessageRecord) -> None:
        key = (record[TARGET_TYPENAME], record[TARGET_ID])
        rpc = self._rpc
        if rpc is not None and record[TARGET_TYPENAME] not in self._invoked_here:
            endpoint = rpc.endpoint_for(record[TARGET_TYPENAME])
            if endpoint is not None:
                rpc.enqueue(key, record, endpoint)
                return
        pending = self._pending.get(key[0])
        if pending is None:
            pending = self._pending[key[0]] = {}
        q = pending.get(key[1])
        if q is None:
            pending[key[1]] = record
            self._ready.append(key)
        elif type(q) is list:
            q.append(record)
        elif type(q) is tuple:
            pending[key[1]] = [q, record]
        else:  # (behind messages in compact form)
            pending[key[1]] = [*self._queued_records(key[0], key[1], q), record]
        self._pending_count += 1

    def _route(self, record: MessageRecord) -> None:
        key = (record[TARGET_TYPENAME], record[TARGET_ID])
        if self._key_group(key) in self._range:
            self.counters["local_messages"] += 1
            overflow = self._overflow
            if overflow or self._pending_count >= self._active_limit or len(self._inbox):  # type: ignore[arg-type]
                overflow.append(record)
                if len(overflow) >= _CHUNK:
                    self._inbox.push(overflow)  # type: ignore[union-attr]
                    self._overflow = []
            else:
                self._enqueue(record)
        else:
            self.counters["remote_messages"] += 1
            remote = self._remote
            remote.append(record)
            if len(remote) >= _CHUNK:
                for batch in self._feedback.batches(remote):
                    self.output.emit_side(FEEDBACK_TAG, batch)
                self._remote = []

    def _drain(self, budget: int) -> None:
        """Invoke the ready addresses in order, up to ``budget`` messages (an address with more
        than ``max_batch_per_address`` waiting gets that many and queues again at the back).

        Each invocation runs the function of the address with its records: the storage from
        keyed state, messages from the records without decoding values held decoded, and the
        changed values go back to keyed state as they are (decoded built-in values are
        serialized only by a snapshot, a remote call or an egress). A sync function runs here
        in one frame up to its result, which :meth:`_apply` applies (the path shared with
        async and remote functions): load, then the loop of
        :func:`~statefun_api.invocation.invoke_prepared` (same semantics and errors).

        One :class:`_DispatchContext` (and its result) serves consecutive invocations, and one
        Message object consecutive messages, as long as the function keeps no reference to
        them (checked with the reference count after each call: a function that keeps one,
        e.g. to send it on, gets a fresh object next time); the storage likewise (a new one
        for the function type once it is kept), and one Address (``context.address``) whose
        fields are set per invocation, until an invocation keeps it. So an address met for
        the first time leaves nothing behind for the garbage collector to trace (its cache
        entry is its key group). The whole step is one Python frame: what an
        invocation needs of the dispatcher stays in locals from one address to the next."""
        limit = self.config.max_batch_per_address
        refcount = _refcount  # (a local: read once per message)
        pending = self._pending
        ready = self._ready
        targets = self._targets
        callers = self._callers
        layouts = self._layouts
        context = self._context  # (its `_address` and `address` are `address`, when both are kept)
        sent: list[MessageRecord] = [] if context is None else context.sent  # (empty: _apply empties it)
        # (empty: emptied after an invocation that filled it; replaced with the context)
        result = InvocationResult() if context is None else context._result
        m = self._message  # reused while no function keeps it
        self._message = None
        address = self._address  # reused while no function keeps it (its fields set per invocation)
        self._address = None
        fields: dict[str, str] = {} if address is None else address.__dict__
        address_tn = self._address_tn  # the typename `address` holds (then `layout` is its function's)
        layout: _Layout | None = None
        vt_name: str | None = self._message_vt  # the typename of the decoded value m._type holds
        invocations = messages = 0
        done = False
        failed: tuple[str, str] | None = None  # the address of the invocation under way (its records: `records`)
        records: list[MessageRecord] = []
        values: list[Any] | None = None  # (messages in compact form: their values, `records` too)
        try:
            while ready and budget > 0:
                key = ready.popleft()
                queued = pending[key[0]].pop(key[1])
                tq = type(queued)
                values = None
                if tq is list:
                    records = queued
                    n = len(records)
                    if n > limit:
                        pending[key[0]][key[1]] = records[limit:]
                        records = records[:limit]
                        n = limit
                        ready.append(key)
                elif tq is tuple:  # one message (see __init__)
                    records = [queued]
                    n = 1
                else:  # in compact form: values (see __init__)
                    if tq is _QueuedValues:
                        values = queued
                        n = len(values)
                        if n > limit:
                            pending[key[0]][key[1]] = _QueuedValues(values[limit:])
                            values = values[:limit]
                            n = limit
                            ready.append(key)
                    else:
                        values = [queued]
                        n = 1
                    records = values  # (read through _invocation_records)
                self._pending_count -= n
                budget -= n
                failed = key  # (no tuple per invocation: a container allocation on the hot path)
                kg = targets.get(key)  # the key group of an address of our key groups
                if kg is None:
                    kg = self._target_of(key, records, values)
                if address is None:
                    address = _new_address(Address)
                    fields = address.__dict__  # (set as Address.of sets them)
                    address_tn = None
                    if context is not None:
                        context._address = address
                        context.address = address  # type: ignore[misc]
                if key[0] != address_tn or layout is None:
                    address_tn = key[0]
                    layout = layouts[address_tn]
                    fun = layout.fun
                    is_async = layout.is_async
                    fields["namespace"], fields["name"] = parse_typename(address_tn)
                fields["id"] = key[1]
                slots = layout.slots
                direct = slots.direct  # values read/written in the backend's tables, no current key
                if not direct:
                    self.backend.set_current_key_with_group(key, kg)
                if context is None:
                    result = InvocationResult()
                    context = self._context = _DispatchContext(address, slots.storage, result)
                    context.storage = slots.storage  # type: ignore[misc]  # slots of BatchContext
                    context.address = address  # type: ignore[misc]
                    sent = context.sent = []
                context.sender = key
                try:
                    try:
                        storage = slots.load_at(kg, key) if direct else slots.load()
                    except TypeError as exc:
                        raise StatefulFunctionError(
                            f"cannot load the state of {address}: {exc}",
                            address=address,
                            message_typename=self._invocation_records(key, records, values)[0][VALUE_TYPENAME],
                        ) from exc
                    if context._storage is not storage:
                        context._storage = storage
                        context.storage = storage  # type: ignore[misc]
                    if is_async:  # run to completion on a private event loop
                        result_of = invoke_prepared(layout.fn, address, storage, *self._messages_of(key, self._invocation_records(key, records, values)))
                        if direct:
                            self._apply(key, address, self._invocation_records(key, records, values), result_of, (), slots, kg)
                        else:
                            self._apply(key, address, self._invocation_records(key, records, values), result_of, slots.changes())
                    else:
                        if m is None:
                            m = _new_message(Message)
                            vt_name = None
                        m.target_typename, m.target_id = key
                        has_caller = False
                        if values is not None:  # in compact form: one value typename, no caller
                            value_tn = self._compact_vt[key[0]]
                            if value_tn != vt_name:
                                vt_name = value_tn
                                m._type = builtin_type(value_tn)
                            remaining_values = iter(values)
                            for value in remaining_values:
                                m._tv = None  # (a TypedValue the function asked for is made again for this value)
                                m._obj = value
                                try:
                                    outcome = fun(context, m)
                                except Exception as exc:
                                    error = explain_attribute_error(storage, exc)
                                    index = n - length_hint(remaining_values) - 1
                                    raise invocation_failure(address, index, n, m.value_typename(), context._caller, error) from exc
                                if outcome is not None:
                                    index = n - length_hint(remaining_values) - 1
                                    settle_outcome(outcome, address, index, n, m.value_typename(), context._caller)
                                if refcount(m) > 2:  # the function kept the message
                                    m = _new_message(Message)
                                    m.target_typename, m.target_id = key
                                    m._type = builtin_type(value_tn)
                        # (the record's fields unpacked by name at once: one step instead of one index each;
                        # a message's index in the batch, for errors only, is what the iterator has left)
                        remaining = iter(records if values is None else ())
                        for _target_tn, _target_id, caller_tn, caller_id, value_tn, value, has_value in remaining:
                            if type(value) is bytes:
                                m._tv = TypedValue(value_tn, has_value, value)
                                m._type = None
                                m._obj = None
                                vt_name = None
                            else:
                                if value_tn != vt_name:
                                    vt_name = value_tn
                                    m._type = builtin_type(value_tn)
                                m._tv = None  # (a TypedValue the function asked for is made again for this value)
                                m._obj = value
                            if caller_tn:
                                caller = callers.get((caller_tn, caller_id))
                                context._caller = caller if caller is not None else self.address_of((caller_tn, caller_id))
                                has_caller = True
                            elif has_caller:
                                context._caller = None
                                has_caller = False
                            try:
                                outcome = fun(context, m)
                            except Exception as exc:
                                error = explain_attribute_error(storage, exc)  # (an undeclared name assigned)
                                index = n - length_hint(remaining) - 1
                                raise invocation_failure(address, index, n, m.value_typename(), context._caller, error) from exc
                            if outcome is not None:  # a sync wrapper returning a coroutine, or a generator (refused)
                                index = n - length_hint(remaining) - 1
                                settle_outcome(outcome, address, index, n, m.value_typename(), context._caller)
                            if refcount(m) > 2:  # the function kept the message (local `m` + the call's argument)
                                m = _new_message(Message)
                                m.target_typename, m.target_id = key
                                vt_name = None
                        if has_caller:  # (the next invocation starts without a caller)
                            context._caller = None
                        if sent or result.outgoing or result.delayed_actions or result.egress:
                            if direct:
                                self._apply(key, address, self._invocation_records(key, records, values), result, (), slots, kg, sent)
                            else:
                                self._apply(key, address, self._invocation_records(key, records, values), result, slots.changes(), sent=sent)
                            if result.outgoing or result.delayed_actions or result.egress:
                                result.outgoing = []  # (the reused result starts empty)
                                result.delayed_actions = []
                                result.egress = []
                        elif direct:  # (_apply of an invocation that only changed its state)
                            slots.store_at(kg, key)
                            invocations += 1
                            messages += n
                        else:
                            self._apply(key, address, self._invocation_records(key, records, values), result, slots.changes(), sent=sent)
                except Exception as exc:
                    cause = exc.__cause__
                    if type(cause) is AttributeError and deleted_again(storage, cause):
                        # a value deleted twice, or read after a deletion, through code that
                        # may_delete_values did not see (storage_class's strict_delete raised where
                        # StateFun's storage does nothing or reads None): nothing of the batch was
                        # applied; the function type gets the storage that deletes idempotently and
                        # the batch is invoked again
                        self._deletes_again.add(key[0])
                        self._failed_invocation(key, self._invocation_records(key, records, values))  # (drops the context, new slots, records back first)
                        budget += n
                        context = None
                        address = None
                        m = None
                        failed = None
                        continue
                    raise UserCodeError(describe_records(self._invocation_records(key, records, values)), exc) from exc
                failed = None
                # whether the function kept the context, the storage or the address: each has at least
                # the references counted below, so one sum over them tells whether any has more
                if refcount(context) + refcount(storage) + refcount(address) > 11 + slots.refs:
                    if refcount(context) > 3:  # the function kept the context (self._context, local, argument)
                        context = self._context = None
                        address = None  # (the kept context holds it)
                    # references: the local `storage`, the argument, the reused context's two, the slots' own
                    if refcount(storage) > 4 + slots.refs:
                        layout.slots = self._storage_slots(key[0])  # the function kept it
                    # references: the local `address`, the context's two, the argument
                    if address is not None and refcount(address) > 4:  # kept by the function or its effects
                        address = None
            done = True
        finally:
            if done:  # (after a failure the message and the address may be the function's: not reused)
                self._message = m
                self._message_vt = vt_name
                self._address = address
                self._address_tn = address_tn
            elif failed is not None:
                self._failed_invocation(failed, self._invocation_records(failed, records, values))
            self._invocations += invocations
            self._messages += messages

    def _invocation_records(self, key: tuple[str, str], records: list[MessageRecord], values: list[Any] | None) -> list[MessageRecord]:
        """The records of an invocation in :meth:`_drain`: ``records``, or those of its messages
        in compact form (``values``), made when read (errors, async functions, :meth:`_apply`)."""
        if values is None:
            return records
        return _CompactRecords(key[0], key[1], self._compact_vt[key[0]], values)  # type: ignore[return-value]

    def _failed_invocation(self, key: tuple[str, str], records: list[MessageRecord]) -> None:
        """All or nothing after an invocation of ``key`` with ``records`` failed (in
        :meth:`_drain`, which raises its error next): nothing of it was applied (its effects
        are checked before any is: :meth:`_apply`); the reused context, whose result and
        ``sent`` list may hold its effects, and the function type's storage, which the
        function may have kept, are dropped; its records go back to the head of the
        address's queue and the address to the head of the ready addresses, so a dispatcher
        that goes on (in-process: :class:`~statefun_api.local.LocalDispatchers`) invokes
        them again first, from the same state, and a snapshot holds them. On a cluster the
        task fails and a new dispatcher restarts from the last checkpoint instead."""
        self._context = None
        layout = self._layouts.get(key[0])
        if layout is not None:
            layout.slots = self._storage_slots(key[0])
        pending = self._pending.get(key[0])
        if pending is None:
            pending = self._pending[key[0]] = {}
        if type(records) is not list:  # (messages in compact form: their records, _CompactRecords)
            records = list(records)
        rest = pending.get(key[1])
        if rest is not None:
            rest = self._queued_records(key[0], key[1], rest)
        pending[key[1]] = records + rest if rest else records
        if rest:  # (queued at the back meanwhile: more than max_batch_per_address, or sent to itself)
            try:
                self._ready.remove(key)
            except ValueError:
                pass
        self._ready.appendleft(key)
        self._pending_count += len(records)

    def _step(self) -> None:
        """One bounded piece of work: refill the active set, invoke up to ``drain_step``
        messages, admit held ingress messages if there is room, send what was produced.

        After a remote or async call failed (in a dispatcher that goes on: in-process), a
        step only sends the failed call again, until it succeeds: the messages queued
        meanwhile wait behind it, as behind a failed sync invocation (:meth:`_failed_invocation`)."""
        rpc = self._rpc
        if rpc is not None and rpc.retrying():
            self._flush()
            self._update_gauges()
            return
        self._refill()
        try:
            self._drain(self.config.drain_step)
        except Exception:
            self._flush()  # what the invocations before the failed one produced (it produced nothing)
            raise
        self._flush()
        self._admit()
        self._update_gauges()

    def _flush(self, send: bool = True) -> None:
        """Send what was produced (remote requests of ready addresses too, if ``send``)."""
        if self._overflow:
            self._inbox.push(self._overflow)  # type: ignore[union-attr]
            self._overflow = []
        if self._remote:
            for batch in self._feedback.batches(self._remote):
                self.output.emit_side(FEEDBACK_TAG, batch)
            self._remote = []
        if self._egress_out:
            for tag, values in self._egress_out.items():
                self.output.emit_side(tag, Batch.of_records(values))
            self._egress_out = {}
            self._egress_rows = 0
        if send and self._rpc is not None and self._rpc.has_ready:
            self._rpc.send_ready()

    def _update_gauges(self) -> None:
        c = self.counters
        if self._invocations:  # counted per invocation in plain ints, added up here
            c["invocations"] += self._invocations
            c["messages"] += self._messages
            self._invocations = self._messages = 0
        inbox = self._inbox
        c["queued_messages"] = self.pending_messages()
        c["held_ingress"] = self._held_n
        c["in_flight"] = self.in_flight()
        if inbox is not None:
            c["inbox_memory_bytes"] = inbox.memory_bytes
            c["spilled_bytes"] = inbox.spilled_bytes
            c["spilled_messages"] = inbox.spilled_messages
            c["spill_disk_bytes"] = inbox.disk_bytes
        c["remote_in_flight"] = self.remote_in_flight()
        now = time.monotonic()
        if now >= self._rss_due:  # reading /proc costs ~0.1 ms: sampled at most every _RSS_EVERY_S
            self._rss_due = now + _RSS_EVERY_S
            rss = _rss_bytes()
            if rss > c["rss_peak_bytes"]:
                c["rss_peak_bytes"] = rss

    def _schedule_continuation(self) -> None:
        if self._continuation_posted:
            return
        rpc = self._rpc
        if rpc is not None and rpc.retrying():  # only a failed call that waits to go again is work
            if not rpc.retry_ready():
                return
        elif not (self._has_work() and self._can_step()):
            return
        post = self.ctx.post
        if post is None:  # no mailbox to yield to: finish the work now
            while self._has_work() and self._can_step():
                self._step()
            self._flush()
            return
        self._continuation_posted = True
        post(self._continue)

    def _can_step(self) -> bool:
        """Whether a step can make progress now (not when only remote queues are full)."""
        if self._pending_count or self._overflow:
            return True
        if self._held and self.in_flight() < self.config.max_in_flight:
            return True
        if self._inbox is not None and len(self._inbox):
            return self._rpc is None or self._rpc.queued() < self.config.max_in_flight
        return False

    def _continue(self) -> None:
        self._continuation_posted = False
        try:
            self._step()
        except Exception as exc:
            failure = self._job_failed(exc)
            # the failed invocation is queued again (_failed_invocation): a task that goes on
            # (a test harness) retries it at its next step; a failing task drops the mail
            self._schedule_continuation()
            raise failure from exc
        self._schedule_continuation()

    def _on_remote_replies(self) -> None:
        """Posted by the remote client's I/O thread: apply every finished call, then continue."""
        rpc = self._rpc
        if rpc is None or rpc.closed:
            return
        try:
            rpc.apply_completions()
            self._step()
        except Exception as exc:
            failure = self._job_failed(exc)
            # what the calls applied before the failed one produced goes out (the failed call
            # produced nothing: it is queued again, RemoteFunctions._failed_call); a task that
            # goes on (a test harness) sends it again at its next step and takes the replies
            # still waiting; a failing task drops the mail
            self._flush(send=False)
            self._schedule_continuation()
            post = self.ctx.post
            if post is not None and rpc.has_completions():  # (replies whose wake-up was this call)
                post(self._on_remote_replies)
            raise failure from exc
        self._schedule_continuation()

    def _job_failed(self, exc: Exception) -> JobFailed:
        """A posted mailbox call is not guarded by the task: name operator, subtask and record."""
        if isinstance(exc, JobFailed):
            return exc
        record = None
        original: BaseException = exc
        if isinstance(exc, UserCodeError):
            record, original = short_repr(exc.record), exc.original
        ctx = self.ctx
        msg = (
            f"operator {ctx.operator_name!r} (subtask {ctx.subtask_index + 1}/{ctx.parallelism}) failed: "
            f"{type(original).__name__}: {original}"
        )
        if record is not None:
            msg += f"\n  while processing record: {record}"
        import traceback

        cause = "".join(traceback.format_exception(type(original), original, original.__traceback__))
        return JobFailed(msg, operator=ctx.operator_name, subtask=ctx.subtask_index, record=record, cause=cause)

    # ------------------------------------------------------------------ invocation
    def _target_of(self, key: tuple[str, str], records: list[MessageRecord], values: list[Any] | None = None) -> int:
        """The key group of ``key``, an address met for the first time (or again after the
        cache was cleared): checked, then cached for :meth:`_drain` when the key group is
        this subtask's (a record of another subtask's key group fails with the backend's
        StateError; one of an unknown function type with FunctionNotFound, an invalid id with
        :meth:`Address.of`'s ValueError). ``values``: as :meth:`_invocation_records`."""
        if key[0] not in self._layouts:
            self._not_found(key, self._invocation_records(key, records, values))
        fid = key[1]  # (checked as Address.of checks it, without making one: _drain sets the fields of its own)
        if type(fid) is not str or not fid.isascii() or not fid:
            problem = id_problem(fid)
            if problem is not None:
                raise ValueError(problem)
        kg = self._kg_cache.get(key)  # (computed for a burst of new addresses: _cache_key_groups)
        if kg is None:
            kg = self._key_group(key)
        if not self._kg_first <= kg <= self._kg_last:
            self.backend.set_current_key_with_group(key, kg)  # raises: not our key group
            return kg
        targets = self._targets
        if len(targets) >= _KG_CACHE_LIMIT:
            targets.clear()
        targets[key] = kg
        return kg

    def _messages_of(self, key: tuple[str, str], records: list[MessageRecord]) -> tuple[list[Message], list[Address | None]]:
        """The messages and callers of ``records`` (for async functions)."""
        typename, fid = key
        messages: list[Message] = []
        callers: list[Address | None] = []
        for r in records:
            value = r[VALUE]
            if type(value) is bytes:
                messages.append(Message._unchecked(typename, fid, TypedValue(r[VALUE_TYPENAME], r[HAS_VALUE], value)))
            else:
                messages.append(Message._decoded(typename, fid, builtin_type(r[VALUE_TYPENAME]), value))  # type: ignore[arg-type]
            callers.append(self.address_of((r[CALLER_TYPENAME], r[CALLER_ID])) if r[CALLER_TYPENAME] else None)
        return messages, callers

    def embedded_invocation(
        self, key: tuple[str, str], records: list[MessageRecord]
    ) -> tuple[Any, Address, AddressScopedStorage, list[Message], list[Address | None]]:
        """What :class:`~statefun_api.embedded_caller.EmbeddedCaller` needs to invoke the
        async function at ``key`` with ``records`` while other invocations run: the function,
        the address, a storage of its own holding the address's current values (as kept:
        decoded built-in values stay decoded) and the messages with their callers.

        Raises:
            UserCodeError: a stored value is not of its spec's declared type.
        """
        layout = self._layouts[key[0]]
        fn = layout.fn
        address = self.address_of(key)
        self.set_current_address(key)
        values = [(spec, st.value()) for spec, (_name, st, _tn) in zip(fn.specs, self._values[key[0]])]
        try:
            storage = load_storage(storage_class(fn.specs), key[0], values)
        except TypeError as exc:
            error = StatefulFunctionError(
                f"cannot load the state of {address}: {exc}", address=address, message_typename=records[0][VALUE_TYPENAME]
            )
            raise UserCodeError(describe_records(records), error) from exc
        messages, callers = self._messages_of(key, records)
        return fn, address, storage, messages, callers

    def _not_found(self, key: tuple[str, str], records: list[MessageRecord]) -> NoReturn:
        address = self.address_of(key)
        first = records[0]
        known = ", ".join(sorted(self.functions.typenames())) or "none"
        if self.config.endpoints:
            known += "; remote endpoints: " + ", ".join(repr(ep.functions) for ep in self.config.endpoints)
        exc = FunctionNotFound(
            f"cannot deliver a message of type {first[VALUE_TYPENAME]!r} from {record_caller(first)} to "
            f"{address}: no function is registered under {key[0]!r} (registered: {known})",
            address=address,
            message_typename=first[VALUE_TYPENAME],
        )
        raise UserCodeError(describe_records(records), exc) from exc

    # ------------------------------------------------------------------ applying results
    def apply_result(
        self,
        key: tuple[str, str],
        records: list[MessageRecord],
        result: InvocationResult,
        state_changes: Iterable[tuple[ValueState[TypedValue], TypedValue | None]] = (),
    ) -> None:
        """Apply what one invocation of the function at ``key`` with ``records`` produced:
        the one path for embedded functions and the replies of remote ones.

        In order: the egress messages are checked (an undeclared egress or an undecodable
        value fails before anything is applied); each ``(state, value)`` of ``state_changes``
        is written to the address's keyed state (``None`` clears it); ``result.outgoing``
        is routed (to this subtask's queue or the feedback edge); ``result.delayed_actions``
        are applied in call order; the egress records are emitted. It counts one invocation
        of ``len(records)`` messages. ``result.state_mutations`` is not read: the caller
        resolves its changes to state handles.

        Raises:
            StatefulFunctionError: an undeclared or undecodable egress, or a delayed message
                whose cancellation token is still pending.

        Example:
            >>> from raystream.statefun_api import StatefulFunctions, egress_message_builder, StringType
            >>> from raystream.statefun_api.local import LocalDispatchers
            >>> from raystream.statefun_api.effects import InvocationResult
            >>> run = LocalDispatchers(StatefulFunctions(), egresses=["demo/out"])
            >>> op = run.dispatchers[0]
            >>> done = InvocationResult(egress=[egress_message_builder("demo/out", "hi", StringType)])
            >>> op.apply_result(("demo/f", "1"), [], done)
            >>> op.flush(); run.egress("demo/out")
            ['hi']
        """
        self.set_current_address(key)
        self._apply(key, self.address_of(key), records, result, state_changes)

    def _apply(
        self,
        key: tuple[str, str],
        address: Address,
        records: list[MessageRecord],
        result: InvocationResult,
        state_changes: Iterable[tuple[Any, TypedValue | None]],
        slots: StorageSlots | None = None,
        kg: int = -1,
        sent: list[MessageRecord] | None = None,
    ) -> None:
        """:meth:`apply_result` with ``key`` already the backend's current key; or, with
        ``slots`` bound to the backend's tables, the changes of ``slots`` are written to
        ``key`` in key group ``kg`` and the current key is set only for delayed messages.
        ``sent``: message records the function sent (routed, then the list is emptied),
        before ``result.outgoing``.

        All or nothing: what can fail (an egress, the values assigned, a delayed message's
        token) is checked before anything is applied."""
        egress = self._egress_of(address, records, result) if result.egress else None
        if result.delayed_actions:
            if slots is not None:
                self.backend.set_current_key_with_group(key, kg)
            self._check_delayed(address, result)
        if slots is not None:
            slots.store_at(kg, key)
        for st, value in state_changes:
            if value is None:
                st.clear()
            else:
                st.update(value)
        if sent:
            if len(sent) >= _KG_BATCH_MIN:  # a fan-out: the key groups of its new addresses at once
                self._cache_key_groups(map(address_key, sent))
            route = self._route
            for record in sent:
                route(record)
            sent.clear()
        if result.outgoing:
            route = self._route
            for out in result.outgoing:
                route(message_to_record(out.message, out.caller))
        if result.delayed_actions:
            self._apply_delayed(key, address, records, result)
        if egress:
            self._add_egress(egress)
        self._invocations += 1
        self._messages += len(records)

    def address_of(self, key: tuple[str, str]) -> Address:
        """The :class:`~statefun_api.address.Address` of the key ``(typename, id)`` (cached:
        addresses are immutable and shared)."""
        address = self._callers.get(key)
        if address is None:
            if len(self._callers) >= _KG_CACHE_LIMIT:
                self._callers.clear()
            address = self._callers[key] = Address.of(key[0], key[1])
        return address

    def set_current_address(self, key: tuple[str, str]) -> None:
        """Make the address ``key`` the keyed state backend's current key (its values are
        then read and written through the function's ``ValueState`` handles)."""
        self.backend.set_current_key_with_group(key, self._key_group(key))

    def flush(self) -> None:
        """Send what the current step produced: local overflow to the queue, messages to
        other subtasks over the feedback edge, egress records, ready remote requests."""
        self._flush()

    def _add_egress(self, egress: list[tuple[str, Any]]) -> None:
        out = self._egress_out
        for tag, value in egress:
            values = out.get(tag)
            if values is None:
                out[tag] = [value]
            else:
                values.append(value)
        self.counters["egress_messages"] += len(egress)
        self._egress_rows += len(egress)
        if self._egress_rows >= _CHUNK:  # a long step sends its egress in chunks
            for tag, values in out.items():
                self.output.emit_side(tag, Batch.of_records(values))
            self._egress_out = {}
            self._egress_rows = 0

    def _egress_of(self, address: Address, records: list[MessageRecord], result: InvocationResult) -> list[tuple[str, Any]]:
        out = []
        egresses = self.config.egresses
        for message in result.egress:
            if message.typename not in egresses:
                known = ", ".join(sorted(egresses)) or "none"
                raise StatefulFunctionError(
                    f"function {address} sent a message of type {message.value_typename()!r} to egress "
                    f"{message.typename!r}, which does not exist (declared egresses: {known}); declare it "
                    f"with StatefulFunctionsJob.with_egress({message.typename!r}, ...)",
                    address=address,
                    message_typename=records[0][VALUE_TYPENAME] if records else None,
                )
            try:
                value = decode_egress_value(message, egresses[message.typename])
            except (TypeError, ValueError) as exc:
                raise StatefulFunctionError(
                    f"function {address} sent an undecodable message to egress {message.typename!r}: {exc}",
                    address=address,
                    message_typename=records[0][VALUE_TYPENAME] if records else None,
                ) from exc
            out.append((egress_tag(message.typename), value))
        return out

    # ------------------------------------------------------------------ delayed messages
    def _check_delayed(self, address: Address, result: InvocationResult) -> None:
        """Raise what :meth:`_apply_delayed` would meet, before anything of the invocation is
        applied: a delayed message without timers, or whose cancellation token is pending
        (in keyed state, or sent earlier in ``result`` and not cancelled since). The sender
        is the current key."""
        live: dict[str, bool] = {}  # tokens sent (True) or cancelled (False) by this invocation
        delayed = self._delayed
        for action in result.delayed_actions:
            token = action.cancellation_token
            if not isinstance(action, DelayedMessage):
                if token:
                    live[token] = False
                continue
            if self.ctx.register_processing_timer is None:
                raise StatefulFunctionError(
                    "delayed messages need processing-time timers, but the task gave the dispatcher "
                    "no register_processing_timer"
                )
            if not token:
                continue
            if live[token] if token in live else delayed.contains(token):
                raise StatefulFunctionError(
                    f"function {address} sent a delayed message of type "
                    f"{action.message.value_typename()!r} to {action.target} with cancellation token "
                    f"{token!r}, but a delayed message with that token is still pending; cancel it "
                    f"first or use another token",
                    address=address,
                    message_typename=action.message.value_typename(),
                )
            live[token] = True

    def _apply_delayed(
        self, sender: tuple[str, str], address: Address, records: list[MessageRecord], result: InvocationResult
    ) -> None:
        """Keep each delayed message in the sender's ``statefun.delayed`` map state and
        register its processing-time timer; a cancellation removes both (in call order).
        :meth:`_check_delayed` passed first."""
        now = self.clock.now_ms()
        delayed = self._delayed
        timers = self._delay_timers
        assert timers is not None  # created in open
        for action in result.delayed_actions:
            if isinstance(action, DelayedMessage):
                token = action.cancellation_token
                entry_key: Any = token if token else None
                seq = self._delay_seq.value() + 1
                self._delay_seq.update(seq)
                if entry_key is None:
                    entry_key = ("#", seq)
                fire_at = now + action.delay_ms
                delayed.put(entry_key, (seq, fire_at, message_to_record(action.message, action.caller)))
                timers.register_processing_time_timer(sender, entry_key, fire_at)
                self.counters["delayed_scheduled"] += 1
            else:
                token = action.cancellation_token
                entry = delayed.get(token)
                if entry is not None:  # cancelling an unknown (or fired) token is a no-op
                    delayed.remove(token)
                    timers.delete_processing_time_timer(sender, token, entry[1])
                    self.counters["delayed_cancelled"] += 1
                    self._forget_sequence_if_done()

    def _forget_sequence_if_done(self) -> None:
        """Clear the current sender's ``statefun.delay-seq`` once none of its delayed
        messages is pending: the sequence only orders and names pending messages, so a
        sender that has none starts again at 1 and keeps no state (a sender per session
        or order id used to keep its counter forever, growing memory and checkpoints)."""
        if self._delayed.is_empty():
            self._delay_seq.clear()

    def _fire_delayed(self, sender: tuple[str, str], entry_key: Any, time_ms: int) -> None:
        """The timer of a delayed message fired: take it out of keyed state and route it."""
        self.set_current_address(sender)
        entry = self._delayed.get(entry_key)
        if entry is None or entry[1] != time_ms:  # not this timer's message (cannot happen: checked)
            return
        self._delayed.remove(entry_key)
        self._forget_sequence_if_done()
        self.counters["delayed_fired"] += 1
        self._route(entry[2])

    def _register_wakeup(self, time_ms: int, fire: Callable[[int], None]) -> Any:
        """The timer service's one wake-up, registered with the task; after the due delayed
        messages fired, what they produced is sent and the work continues."""
        register = self.ctx.register_processing_timer
        assert register is not None  # only given to the timer service when there is one
        return register(time_ms, functools.partial(self._on_wakeup, fire))

    def _on_wakeup(self, fire: Callable[[int], None], time_ms: int) -> None:
        fire(time_ms)
        self._flush()
        self._update_gauges()
        self._schedule_continuation()


def _no_event_time(key: Any, ns: Any, time_ms: int) -> None:
    """The dispatcher registers no event-time timers."""


def _from_ingress(batch: Batch) -> bool:
    """Whether ``batch`` came from an ingress router (its messages have no caller; those of
    the feedback edge always have one), read without decoding an Arrow batch."""
    if not len(batch):
        return False
    if batch.is_arrow:
        rb = batch.arrow()
        if rb.num_columns == 7:
            return not rb.column(CALLER_TYPENAME)[0].as_py()
    return not batch.records()[0][CALLER_TYPENAME]


def _rss_bytes() -> int:
    """Resident set size of this process (Linux ``/proc``; elsewhere the peak from getrusage).

    ``/proc/self/statm`` stays open and is read with ``pread``: opening it again for every
    sample cost a busy dispatcher thread ~1 ms of CPU each (measured in a task executor at
    p=2, against ~5 us in an idle process), reading an open one a few microseconds."""
    global _STATM_FD
    try:
        if _STATM_FD is None or _STATM_FD[0] != os.getpid():  # (a forked child opens its own)
            _STATM_FD = (os.getpid(), os.open("/proc/self/statm", os.O_RDONLY))
        return int(os.pread(_STATM_FD[1], 128, 0).split()[1]) * _PAGE_SIZE
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


_STATM_FD: tuple[int, int] | None = None  # (pid, descriptor of /proc/self/statm)


def declared_egresses(egresses: Iterable[str] | Mapping[str, Type[Any] | None]) -> dict[str, Type[Any] | None]:
    """Normalize an egress declaration (names, or names -> value types) into a dict."""
    if isinstance(egresses, Mapping):
        return dict(egresses)
    return {name: None for name in egresses}
