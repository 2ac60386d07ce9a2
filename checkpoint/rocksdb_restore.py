"""Restoring the RocksDB state backend's snapshots: a database rebuilt from a snapshot's files
(base SST files, then its deltas applied in order), key-group ranges copied out of it for a
rescaled restore, and the conversions from and to the heap backend's format (switching a job
between the two backends through a checkpoint or savepoint; Flink's
``RocksDBIncrementalRestoreOperation`` and its heap/RocksDB savepoint compatibility).

Example:
    >>> import tempfile
    >>> from raystream.engine.keygroups import KeyGroupRange, holds_moved_number, key_group_for
    >>> from raystream.checkpoint import ValueStateDescriptor
    >>> from raystream.checkpoint.rocksdb_backend import RocksDBKeyedStateBackend
    >>> from raystream.checkpoint.rocksdb_files import parse_manifest, rocksdict_module, serialize_full
    >>> b = RocksDBKeyedStateBackend(KeyGroupRange(0, 127), 128)
    >>> b.set_current_key("k"); b.get_state(ValueStateDescriptor("v")).update(1)
    >>> source = parse_manifest(serialize_full(b.snapshot(1)))
    >>> heap = export_heap_snapshot(rocksdict_module(), source, KeyGroupRange(0, 127), tempfile.mkdtemp())
    >>> sorted(heap.states), len(heap.key_groups)
    (['_timers/event_time', '_timers/processing_time', 'v'], 1)
    >>> b.close()
"""

from __future__ import annotations

import logging
import os
import shutil
import struct
import uuid
from types import ModuleType
from typing import Any

from raystream.engine.errors import CheckpointError
from raystream.engine.keygroups import KeyGroupRange, holds_moved_number, key_group_for
from raystream.engine.serde import dumps, loads

from .heap import TIMERS_KIND
from .rocksdb_files import SnapshotSource, SstFile, open_db, read_delta
from .rocksdb_keys import (
    KEY_GROUP_BYTES,
    STATE_ID_BYTES,
    decode_key,
    encode_key,
    key_group_prefix,
    key_part,
    split_db_key,
    state_id,
)
from .rocksdb_timers import timer_value
from .snapshot import KeyedStateSnapshot, StateMeta

__all__ = ["copy_key_groups", "export_heap_snapshot", "import_heap_snapshot", "materialize", "refile_big_numbers",
           "rekey_legacy"]

log = logging.getLogger(__name__)


def materialize(snap: SnapshotSource, directory: str, rocksdict: ModuleType | None = None, *,
                write_buffer_bytes: int = 16 << 20, block_cache_bytes: int = 32 << 20) -> dict[str, SstFile]:
    """Write the base files of ``snap`` into ``directory`` (an openable RocksDB directory)
    and, if it has deltas, apply them in order (``rocksdict`` and the :func:`open_db`
    options needed then); returns its SST files that are in checkpoint storage and may be
    referenced again."""
    os.makedirs(directory, exist_ok=True)
    names = [f.name for f in snap.sst] + list(snap.private)
    for name in names:
        with open(os.path.join(directory, name), "wb") as out:
            out.write(snap.read(name))
    if snap.deltas:
        if rocksdict is None:
            raise CheckpointError(f"the RocksDB snapshot of checkpoint {snap.checkpoint_id} has deltas: "
                                  "materialize() needs the rocksdict module to apply them")
        db = open_db(rocksdict, directory, write_buffer_bytes=write_buffer_bytes, block_cache_bytes=block_cache_bytes)
        try:
            _apply_deltas(rocksdict, db, snap, directory)
        finally:
            db.close()
    return {f.name: f for f in snap.sst if f.path is not None} if snap.from_checkpoint else {}


#: delta entries merged in memory (a later delta's entry replacing an earlier one's) before
#: they go to RocksDB as one sorted SST file
_MERGE_ENTRIES = 1 << 18


def _apply_deltas(rocksdict: ModuleType, db: Any, snap: SnapshotSource, directory: str) -> None:
    """Apply the deltas of ``snap`` in order on top of ``db``: the entries of consecutive
    Arrow deltas are merged in memory (at most :data:`_MERGE_ENTRIES` at a time), each
    merge written as one sorted SST file and ingested (write batches would go through the
    memtable and stall on its flushes: ~7 us per entry at 3M entries); SST deltas (chains
    written before the Arrow format) are ingested as they are.

    Raises:
        CheckpointError: a delta is unreadable or cannot be applied (the message names it
            and the checkpoint).
    """
    scratch = os.path.dirname(directory.rstrip(os.sep))
    merged: dict[bytes, bytes | None] = {}

    def ingest(path: str) -> None:
        options = rocksdict.IngestExternalFileOptions()
        options.set_move_files(True)
        try:
            db.ingest_external_file([path], options)
        finally:
            if os.path.exists(path):
                os.remove(path)

    def flush() -> None:
        if merged:
            path = os.path.join(scratch, f"ingest-{uuid.uuid4().hex[:8]}.sst")
            write_sst(rocksdict, path, merged)
            merged.clear()
            ingest(path)

    name = "?"
    try:
        for f in snap.deltas:
            name = f.name
            data = snap.read(name)
            if name.endswith(".sst"):
                flush()
                path = os.path.join(scratch, f"ingest-{uuid.uuid4().hex[:8]}.sst")
                with open(path, "wb") as out:
                    out.write(data)
                ingest(path)
                continue
            for keys, values in read_delta(data):
                merged.update(zip(keys, values))
                if len(merged) >= _MERGE_ENTRIES:
                    flush()
        flush()
    except Exception as exc:
        raise CheckpointError(f"cannot apply delta {name!r} of the RocksDB snapshot of checkpoint "
                              f"{snap.checkpoint_id}: {exc}") from exc


def write_sst(rocksdict: ModuleType, path: str, entries: dict[bytes, bytes | None]) -> None:
    """Write ``entries`` (None: a deletion) as one sorted SST file at ``path``."""
    writer = rocksdict.SstFileWriter(rocksdict.Options(raw_mode=True))
    writer.open(path)
    for k in sorted(entries):
        v = entries[k]
        if v is None:
            del writer[k]
        else:
            writer[k] = v
    writer.finish()


def copy_key_groups(rocksdict: ModuleType, source_dir: str, db: Any, key_groups: KeyGroupRange) -> None:
    """Copy the entries of ``key_groups`` from the database in ``source_dir`` into ``db``."""
    opts = rocksdict.Options(raw_mode=True)
    src = rocksdict.Rdict(source_dir, opts, access_type=rocksdict.AccessType.read_only())
    try:
        end = key_groups.end + 1
        upper = key_group_prefix(end) if end < 1 << 16 else b"\xff\xff\xff"
        it = src.iter()  # (no ReadOptions bounds: rocksdict encodes them as typed keys)
        it.seek(key_group_prefix(key_groups.start))
        batch, n = rocksdict.WriteBatch(raw_mode=True), 0
        while it.valid():
            key = it.key()
            if key >= upper:
                break
            batch.put(key, it.value())
            n += 1
            if n % 10_000 == 0:
                db.write(batch)
                batch = rocksdict.WriteBatch(raw_mode=True)
            it.next()
        db.write(batch)
    finally:
        src.close()


#: timer queues of the keyed operators, for manifests written before they listed their queues
_LEGACY_TIMER_QUEUES = ("_timers/event_time", "_timers/processing_time")
_TIME_AT = KEY_GROUP_BYTES + STATE_ID_BYTES
_KEY_LEN = struct.Struct(">I")


_NO_KEY: Any = object()


def export_heap_snapshot(rocksdict: ModuleType, source: SnapshotSource, key_groups: KeyGroupRange,
                         work_dir: str) -> KeyedStateSnapshot:
    """The key groups of ``source`` in ``key_groups`` in the heap backend's snapshot format
    (switching a job from RocksDB back to the heap backend). Entries keep their format
    (TTL timestamps included); the timers of each queue become a ``"timers"`` pseudo-state
    of ``[(time, key, namespace)]`` per key group, which the heap backend hands to the
    operators (:meth:`HeapKeyedStateBackend.take_restored_timers`). ``work_dir`` holds the
    database while it is read.

    Operators' own state on RocksDB (window contents, join buffers, final field
    aggregates) comes along as keyed state; their heap versions take it into their own
    structures (:meth:`HeapKeyedStateBackend.take_restored_state`).

    Raises:
        CheckpointError: the snapshot holds entries of a state it has no metadata for.
    """
    lo, hi = max(source.key_group_range.start, key_groups.start), min(source.key_group_range.end, key_groups.end)
    metas = dict(source.states)
    names = {state_id(n): n for n in metas}
    timers = {state_id(n): n for n in (source.timers or _LEGACY_TIMER_QUEUES)}
    out: dict[int, bytes] = {}
    if lo <= hi:
        directory = os.path.join(work_dir, f"export-{uuid.uuid4().hex[:8]}")
        try:
            materialize(source, directory, rocksdict)
            db = rocksdict.Rdict(directory, rocksdict.Options(raw_mode=True), access_type=rocksdict.AccessType.read_only())
            try:
                for kg in range(lo, hi + 1):
                    blob = _export_group(db, kg, metas, names, timers, source.checkpoint_id)
                    if blob is not None:
                        out[kg] = blob
            finally:
                db.close()
        finally:
            shutil.rmtree(directory, ignore_errors=True)
    for name in timers.values():
        metas[name] = StateMeta(TIMERS_KIND, None)
    return KeyedStateSnapshot(source.checkpoint_id, source.max_parallelism, source.key_group_range, metas, out,
                              source.key_types)


def _export_group(db: Any, kg: int, metas: dict[str, StateMeta], names: dict[bytes, str], timers: dict[bytes, str],
                  checkpoint_id: int) -> bytes | None:
    prefix = key_group_prefix(kg)
    upper = key_group_prefix(kg + 1) if kg + 1 < 1 << 16 else b"\xff\xff\xff"
    per_state: dict[str, Any] = {}
    # one key object per encoded key: a map state's entries of one key come as one entry per
    # map key, and a key that is not equal to itself (NaN) decoded once per entry would give
    # the heap as many keys, each with a part of the map
    keys: dict[bytes, Any] = {}
    it = db.iter()
    it.seek(prefix)
    while it.valid():
        k = it.key()
        if k >= upper:
            break
        sid = k[KEY_GROUP_BYTES:_TIME_AT]
        name = names.get(sid)
        if name is not None:
            _, kbytes, rest = split_db_key(k)
            value = loads(it.value(), f"an entry of state {name!r}")
            key = keys.get(kbytes, _NO_KEY)
            if key is _NO_KEY:
                key = keys[kbytes] = decode_key(kbytes)
            if metas[name].kind == "map":
                per_state.setdefault(name, {}).setdefault(key, {})[decode_key(rest)] = value
            else:
                per_state.setdefault(name, {})[key] = value
        elif sid in timers:
            time = int.from_bytes(k[_TIME_AT:_TIME_AT + 8], "big") - (1 << 63)
            (size,) = _KEY_LEN.unpack_from(k, _TIME_AT + 8)
            start = _TIME_AT + 12
            value = it.value()  # (the key it was registered with, when that does not decode as itself)
            key = loads(value, "a timer's key") if value else decode_key(k[start:start + size])
            ns = decode_key(k[start + size:])
            per_state.setdefault(timers[sid], []).append((time, key, ns))
        else:
            raise CheckpointError(
                f"the RocksDB snapshot of checkpoint {checkpoint_id} holds entries of key group {kg} under state "
                f"id {sid.hex()} that is neither a state ({sorted(metas)!r}) nor a timer queue "
                f"({sorted(timers.values())!r})"
            )
        it.next()
    return dumps(per_state, f"key group {kg}") if per_state else None


def import_heap_snapshot(rocksdict: ModuleType, db: Any, snap: KeyedStateSnapshot, key_groups: KeyGroupRange) -> None:
    """Load the key groups of a heap backend's snapshot (switching a job to RocksDB). A key
    that a snapshot written before 2026-12-07 filed under another key group (an integral
    float of 2**63 or more in magnitude, hashed by its bits then) goes to its own.

    Raises:
        CheckpointError: such a key's own key group is outside ``key_groups``.
    """
    for kg, blob in sorted(snap.key_groups.items()):
        if kg not in key_groups:
            continue
        batch = rocksdict.WriteBatch(raw_mode=True)
        prefix = key_group_prefix(kg)
        for name, entries in loads(blob, f"key group {kg}").items():
            meta = snap.states.get(name)
            if meta is None:
                raise CheckpointError(f"key group {kg} holds state {name!r} with no metadata")
            sid = state_id(name)
            for key, entry in entries.items():
                own = _own_key_group(key, kg, snap.max_parallelism, key_groups, name)
                base = (prefix if own == kg else key_group_prefix(own)) + sid + key_part(encode_key(key))
                if meta.kind == "map":
                    for map_key, value in entry.items():
                        batch.put(base + encode_key(map_key), dumps(value, f"state {name!r}"))
                else:
                    batch.put(base, dumps(entry, f"state {name!r}"))
        db.write(batch)



def _own_key_group(key: Any, kg: int, max_parallelism: int, key_groups: KeyGroupRange, state: str) -> int:
    """The key group of ``key``, filed under ``kg`` by a snapshot: ``kg`` unless the key is one
    that moved (:func:`~engine.keygroups.holds_moved_number`).

    Raises:
        CheckpointError: its own key group is outside ``key_groups``.
    """
    if not holds_moved_number(key):
        return kg
    own = key_group_for(key, max_parallelism)
    if own != kg and own not in key_groups:
        raise CheckpointError(
            f"state {state!r} holds key {key!r} in key group {kg}, but this raystream puts it in key group {own}, "
            f"outside this subtask's range {key_groups.start}..{key_groups.end}: the snapshot was written before an "
            "integral float from 2**63 on hashed as the int it equals (2026-12-07); restore it at parallelism 1 "
            "(every key group local: such keys are moved), take a savepoint, and rescale from that"
        )
    return own


def refile_big_numbers(rocksdict: ModuleType, db: Any, source: SnapshotSource | KeyedStateSnapshot,
                       key_groups: KeyGroupRange, max_parallelism: int) -> int:
    """Move the entries that a snapshot written before 2026-12-07 (key encoding 1 or 2, or a
    heap snapshot) filed under another key group than their key's own, in ``db``'s
    ``key_groups``: a key that is (or a tuple holding) an integral float of 2**63 or more in
    magnitude, which ``stable_hash`` hashed by its bits then and RocksDB stores as the int it
    equals (``2.0**70`` as ``2**70``); its timers likewise. Only keys of ints of 20 bytes or
    more and of tuples are decoded. When an entry is already under the new key (``2**70``
    and ``2.0**70`` were two keys then), it is kept and a warning counts the others. Returns
    how many entries moved.

    Raises:
        CheckpointError: such a key's own key group is outside ``key_groups`` (restore at
            parallelism 1, take a savepoint, rescale from that).
    """
    lo, hi = max(source.key_group_range.start, key_groups.start), min(source.key_group_range.end, key_groups.end)
    names = {state_id(n): n for n in source.states}
    timers = {state_id(n) for n in (getattr(source, "timers", None) or _LEGACY_TIMER_QUEUES)}
    moved = dropped = 0
    for kg in range(lo, hi + 1):
        prefix = key_group_prefix(kg)
        upper = key_group_prefix(kg + 1) if kg + 1 < 1 << 16 else b"\xff\xff\xff"
        moves: list[tuple[bytes, bytes, bytes]] = []  # (old db key, new db key, value)
        it = db.iter()
        it.seek(prefix)
        while it.valid():
            k = it.key()
            if k >= upper:
                break
            sid = k[KEY_GROUP_BYTES:_TIME_AT]
            if sid in timers:
                (size,) = _KEY_LEN.unpack_from(k, _TIME_AT + 8)
                kbytes = k[_TIME_AT + 12:_TIME_AT + 12 + size]
            else:
                _, kbytes, _rest = split_db_key(k)
            if (kbytes[:1] == b"i" and len(kbytes) >= 20) or kbytes[:1] == b"t":
                key = decode_key(kbytes)
                own = _own_key_group(key, kg, max_parallelism, key_groups, names.get(sid, "(timers)"))
                if own != kg:
                    moves.append((k, key_group_prefix(own) + k[KEY_GROUP_BYTES:], it.value()))
            it.next()
        if not moves:
            continue
        batch = rocksdict.WriteBatch(raw_mode=True)
        for old, new, value in moves:
            batch.delete(old)
            if db.get(new) is not None:
                dropped += 1
                continue
            batch.put(new, value)
            moved += 1
        db.write(batch)
    if dropped:
        log.warning("RocksDB restore of checkpoint %d: %d entries of integral floats from 2**63 on were kept apart from "
                    "the ints they equal by snapshots written before 2026-12-07 and are one key now: the int's entry "
                    "was kept, %d dropped", source.checkpoint_id, dropped, dropped)
    return moved


#: first bytes of an encoded key whose encoding did not change with KEY_ENCODING 2 (str,
#: bytes, int, None): their entries are not decoded by :func:`rekey_legacy`
_UNCHANGED_TAGS = frozenset(b"sbiN")


def rekey_legacy(rocksdict: ModuleType, db: Any, source: SnapshotSource, key_groups: KeyGroupRange) -> int:
    """Move the entries of a snapshot written with key encoding 1 (before 2026-12-07; see
    :mod:`checkpoint.rocksdb_keys`) that ``db`` holds for ``key_groups`` to the keys that
    encoding 2 gives them: a key (or map key) that Python holds equal to a value of another
    type (``True``, ``2.0``, ``Decimal(1)``, an ``IntEnum``, a namedtuple, a set) is stored
    under that value's encoding, and a timer of such a key keeps it as its value. Keys of str,
    bytes, int and None are read but never decoded. When equal keys had one entry each (the
    old encoding kept ``1`` and ``True`` apart), the entry already under the new key, else the
    first in the database's order, is kept, and a warning counts the others. Returns how many
    entries moved.

    Raises:
        CheckpointError: an entry of a state the snapshot has no metadata for.
    """
    lo, hi = max(source.key_group_range.start, key_groups.start), min(source.key_group_range.end, key_groups.end)
    kinds = {state_id(n): m.kind for n, m in source.states.items()}
    timers = {state_id(n) for n in (source.timers or _LEGACY_TIMER_QUEUES)}
    moved = dropped = 0
    for kg in range(lo, hi + 1):
        prefix = key_group_prefix(kg)
        upper = key_group_prefix(kg + 1) if kg + 1 < 1 << 16 else b"\xff\xff\xff"
        moves: dict[bytes, tuple[bytes, bytes]] = {}  # old db key -> (new db key, value)
        it = db.iter()
        it.seek(prefix)
        while it.valid():
            k = it.key()
            if k >= upper:
                break
            sid = k[KEY_GROUP_BYTES:_TIME_AT]
            new = _rekeyed(k, it.value(), sid in timers, kinds.get(sid), source.checkpoint_id)
            if new is not None:
                moves[k] = new
            it.next()
        if not moves:
            continue
        batch = rocksdict.WriteBatch(raw_mode=True)
        taken: set[bytes] = set()
        for old, (new_key, value) in moves.items():
            batch.delete(old)
            if new_key in taken or (new_key not in moves and db.get(new_key) is not None):
                dropped += 1  # (an entry under the new key is there already, or moved first)
                continue
            taken.add(new_key)
            batch.put(new_key, value)
            moved += 1
        db.write(batch)
    if dropped:
        log.warning("RocksDB restore of checkpoint %d: %d entries of keys that Python holds equal to others (1, True "
                    "and 1.0; an IntEnum and its int...) were kept apart by snapshots written before 2026-12-07 and "
                    "are one key now: one entry of each was kept, %d dropped", source.checkpoint_id, dropped, dropped)
    return moved


def _rekeyed(k: bytes, value: bytes, timer: bool, kind: str | None, checkpoint_id: int) -> tuple[bytes, bytes] | None:
    """``(new db key, new value)`` of a key-encoding-1 entry, or None if neither changes."""
    if timer:
        (size,) = _KEY_LEN.unpack_from(k, _TIME_AT + 8)
        start = _TIME_AT + 12
        kbytes = k[start:start + size]
        if kbytes[0] in _UNCHANGED_TAGS:
            return None
        key = decode_key(kbytes)
        kpart = key_part(encode_key(key))
        if kpart[4:] == kbytes:
            return None
        return k[:_TIME_AT + 8] + kpart + k[start + size:], timer_value(key, kpart)
    if kind is None:
        raise CheckpointError(
            f"the RocksDB snapshot of checkpoint {checkpoint_id} holds entries under state id "
            f"{k[KEY_GROUP_BYTES:_TIME_AT].hex()} that is neither a state nor a timer queue"
        )
    _, kbytes, rest = split_db_key(k)
    new_kbytes = kbytes if kbytes[0] in _UNCHANGED_TAGS else encode_key(decode_key(kbytes))
    new_rest = rest if not rest or rest[0] in _UNCHANGED_TAGS else encode_key(decode_key(rest))
    if new_kbytes == kbytes and new_rest == rest:
        return None
    return k[:_TIME_AT] + key_part(new_kbytes) + new_rest, value
