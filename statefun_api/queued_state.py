"""The dispatcher's operator state: the messages not invoked yet, split by key group.

A :class:`~statefun_api.dispatcher.FunctionDispatcher` snapshots the messages it holds but
has not applied yet (the active set, remote requests in flight, the inbox with its spilled
chunks, held ingress messages) as operator state. It is a
:class:`~engine.operator.KeyGroupedState` keyed by the key group of each message's target
address, so a restored subtask (also at another parallelism) receives the messages of its
own key groups only, as keyed state is re-split, instead of every old subtask's queue::

    {"messages": KeyGroupedState({key_group: (records, arrow_batches), ...})}

``records`` are message records (:mod:`statefun_api.routing`), ``arrow_batches`` Arrow
batches of message records (the queue's form: spilled chunks are not made into Python
tuples); within a key group both keep the order they had in the dispatcher, records first,
so every address gets its messages in their order again.

Snapshots written before this format (``{"pending": [records], "queued": [batches]}``, every
old subtask's whole) are still restored: their messages are filtered by key group.

Example:
    >>> from raystream.engine.keygroups import KeyGroupRange, key_group_for
    >>> from raystream.engine.operator import key_group_share
    >>> from raystream.statefun_api import message_builder
    >>> from raystream.statefun_api.routing import message_to_record
    >>> records = [message_to_record(message_builder("a/f", i, int_value=1)) for i in ("1", "2", "3")]
    >>> state = queued_snapshot(records, [], lambda key: key_group_for(key, 128), 128)
    >>> mine = key_group_share(state, KeyGroupRange(0, 63))
    >>> own, unfiltered = restored_messages([mine])
    >>> sorted(r[1] for r in own) == sorted(r[1] for r in records if key_group_for(r[:2], 128) <= 63)
    True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from raystream.engine.operator import KeyGroupedState
from raystream.engine.records import Batch
from raystream.statefun_api.routing import MessageRecord, address_key, message_key_groups

__all__ = ["queued_snapshot", "restored_messages"]


def queued_snapshot(
    records: Sequence[MessageRecord],
    batches: Sequence[pa.RecordBatch],
    key_group: Callable[[tuple[str, str]], int],
    max_parallelism: int,
) -> dict[str, KeyGroupedState]:
    """The operator state of queued ``records`` and Arrow ``batches`` of message records,
    split by the key group of their target (``key_group(address_key)``, or hashed on the
    batches' columns): each key group gets its records and an Arrow batch per run of
    batches of one schema (cut with one ``take`` each, not one per batch and key group)."""
    parts = KeyGroupedState()
    for record in records:
        _part(parts, key_group(address_key(record)))[0].append(record)
    run: list[pa.RecordBatch] = []  # consecutive batches of one schema, cut together
    for rb in batches:
        if run and rb.schema != run[0].schema:
            _cut(parts, run, key_group, max_parallelism)
            run = []
        if rb.num_rows:
            run.append(rb)
    if run:
        _cut(parts, run, key_group, max_parallelism)
    return {"messages": parts}


def _cut(
    parts: KeyGroupedState, run: list[pa.RecordBatch], key_group: Callable[[tuple[str, str]], int], max_parallelism: int
) -> None:
    """Append the records of ``run`` (batches of one schema) to their key groups' parts: one
    Arrow batch per key group (a ``take`` of the concatenated run, in the run's order; a run
    of one batch of one key group is kept as it is)."""
    rb = run[0] if len(run) == 1 else pa.concat_batches(run)
    n = rb.num_rows
    kgs = message_key_groups(rb, max_parallelism)
    if kgs is None:  # (not the tuple form: key groups of its records)
        kgs = np.fromiter((key_group(address_key(r)) for r in Batch.of_arrow(rb).records()), np.int64, n)
    order = np.argsort(kgs, kind="stable")  # (stable: each group keeps its records' order)
    ordered = kgs[order]
    starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
    ends = np.append(starts[1:], n)
    for start, end in zip(starts.tolist(), ends.tolist()):
        _part(parts, int(ordered[start]))[1].append(rb if end - start == n else rb.take(pa.array(order[start:end])))


def _part(parts: KeyGroupedState, kg: int) -> tuple[list[MessageRecord], list[pa.RecordBatch]]:
    part: tuple[list[MessageRecord], list[pa.RecordBatch]] | None = parts.get(kg)
    if part is None:
        part = parts[kg] = ([], [])
    return part


def restored_messages(states: Sequence[Any]) -> tuple[list[MessageRecord], list[MessageRecord]]:
    """The queued messages of restored operator states, as ``(own, unfiltered)``: ``own``
    are those of :func:`queued_snapshot` states, already cut to the subtask's key groups by
    the restore; ``unfiltered`` those of snapshots of the previous format, every old
    subtask's whole (the caller keeps the ones of its key groups). Each in its order."""
    own: list[MessageRecord] = []
    unfiltered: list[MessageRecord] = []
    for state in states or ():
        if not state:
            continue
        parts = state.get("messages")
        if parts is not None:
            for records, batches in parts.values():
                own.extend(records)
                for rb in batches:
                    own.extend(Batch.of_arrow(rb).records())
        else:  # the previous format: {"pending": [records], "queued": [Arrow batches]}
            unfiltered.extend(state.get("pending", ()))
            for rb in state.get("queued", ()):
                unfiltered.extend(Batch.of_arrow(rb).records())
    return own, unfiltered
