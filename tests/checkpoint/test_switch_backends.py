"""Switching a job's keyed state backend through a checkpoint or savepoint, in both directions
and while rescaling: RocksDB -> heap (the heap backend reads RocksDB manifests, incremental
ones with their shared files and deltas, and converts their key groups) and heap -> RocksDB.
Every state kind (value, list, map, reducing, aggregating), TTL states (timestamps kept:
entries expire when they would have) and timer queues (handed to the operators on the heap).
No Ray: storage and restore plans are driven as the job master and the tasks drive them."""

from __future__ import annotations

import pytest

pytest.importorskip("rocksdict")

from raystream.checkpoint import (  # noqa: E402
    AggregateFunction,
    AggregatingStateDescriptor,
    CheckpointStorage,
    HeapKeyedStateBackend,
    HeapStateBackend,
    ListStateDescriptor,
    MapStateDescriptor,
    ReducingStateDescriptor,
    RocksDBKeyedStateBackend,
    RocksDBStateBackend,
    StateTtlConfig,
    ValueStateDescriptor,
)
from raystream.checkpoint.coordinator import METADATA_FORMAT  # noqa: E402
from raystream.engine.errors import StateError  # noqa: E402
from raystream.engine.keygroups import KeyGroupRange, key_group_for  # noqa: E402
from raystream.engine.operator import ManualClock  # noqa: E402

MAXP = 128
UID = "op"
EVENT, PROCESSING = "_timers/event_time", "_timers/processing_time"
TTL = StateTtlConfig(1000)


class Avg(AggregateFunction):
    def create_accumulator(self):
        return (0, 0)

    def add(self, value, acc):
        return (acc[0] + value, acc[1] + 1)

    def get_result(self, acc):
        return acc[0] / acc[1]

    def merge(self, a, b):
        return (a[0] + b[0], a[1] + b[1])


def descriptors() -> dict:
    return {
        "value": ValueStateDescriptor("value"),
        "list": ListStateDescriptor("list"),
        "map": MapStateDescriptor("map"),
        "reducing": ReducingStateDescriptor("reducing", max),
        "aggregating": AggregatingStateDescriptor("aggregating", Avg()),
        "ttl_value": ValueStateDescriptor("ttl_value", ttl=TTL),
        "ttl_list": ListStateDescriptor("ttl_list", ttl=TTL),
        "ttl_map": MapStateDescriptor("ttl_map", ttl=TTL),
    }


KEYS = [f"key-{i}" for i in range(60)] + list(range(40)) + [("t", 1), ("t", 2)]


def fill(b, clock: ManualClock, timers: bool) -> None:
    """Every state kind for the keys of ``b``: TTL entries written at t=0 (old) and t=600
    (young); timers when ``timers`` (on RocksDB: in its queues)."""
    s = {n: b.get_state(d) for n, d in descriptors().items()}
    queues = (b.create_timer_queue(EVENT), b.create_timer_queue(PROCESSING)) if timers else None
    for i, k in enumerate(KEYS):
        if key_group_for(k, MAXP) not in b.key_group_range:
            continue
        b.set_current_key(k)
        s["value"].update({"i": i, "k": k})
        for x in range(i % 4 + 1):
            s["list"].add(x * i)
            s["map"].put(f"m{x}", (i, x))
            s["reducing"].add(i * 10 + x)
            s["aggregating"].add(i + x)
        clock.set(0 if i % 2 else 600)
        s["ttl_value"].update(i)
        s["ttl_list"].add(i)
        s["ttl_map"].put("a", i)
        clock.set(600)
        if queues is not None:
            queues[0].add(k, None, 1000 + i)
            queues[0].add(k, "ns", 2000 + i)
            queues[1].add(k, None, 5000 + i)


def read(b) -> dict:
    """Every state of ``b`` per key (TTL states as visible now)."""
    s = {n: b.get_state(d) for n, d in descriptors().items()}
    out: dict = {}
    for name, state in s.items():
        for k in b.keys(name):
            b.set_current_key(k)
            if name in ("value", "ttl_value", "reducing", "aggregating"):
                got = state.value() if "value" in name else state.get()
            elif name in ("list", "ttl_list"):
                got = list(state.get())
            else:
                got = dict(state.items())
            out.setdefault(name, {})[k] = got
    return out


def expected(now: int) -> dict:
    out: dict = {n: {} for n in descriptors()}
    for i, k in enumerate(KEYS):
        n = i % 4 + 1
        out["value"][k] = {"i": i, "k": k}
        out["list"][k] = [x * i for x in range(n)]
        out["map"][k] = {f"m{x}": (i, x) for x in range(n)}
        out["reducing"][k] = i * 10 + n - 1
        out["aggregating"][k] = sum(i + x for x in range(n)) / n
        written = 0 if i % 2 else 600
        if written + TTL.ttl_ms > now:
            out["ttl_value"][k], out["ttl_list"][k], out["ttl_map"][k] = i, [i], {"a": i}
    return {n: v for n, v in out.items() if v}


def expected_timers() -> dict:
    event = {(1000 + i, k, None) for i, k in enumerate(KEYS)} | {(2000 + i, k, "ns") for i, k in enumerate(KEYS)}
    return {EVENT: event, PROCESSING: {(5000 + i, k, None) for i, k in enumerate(KEYS)}}


def take_timers(b: HeapKeyedStateBackend) -> dict:
    out = {}
    for name in (EVENT, PROCESSING):
        parts = b.take_restored_timers(name)
        assert all(key_group_for(k, MAXP) == kg for kg, ts in parts.items() for _, k, _ in ts)
        assert all(kg in b.key_group_range for kg in parts)
        out[name] = {tuple(t) for ts in parts.values() for t in ts}
    return out


def merged(parts: list[dict]) -> dict:
    out: dict = {}
    for p in parts:
        for name, entries in p.items():
            assert not set(out.get(name, {})) & set(entries)
            out.setdefault(name, {}).update(entries)
    return out


def write_checkpoint(storage, sb, cid: int, backends: list, job: str = "job") -> dict:
    subtasks = {s: {"keyed": sb.write_snapshot(storage, job, cid, f"{UID}/{s}-keyed", b.snapshot(cid)),
                    "committables": []} for s, b in enumerate(backends)}
    md = {"format": METADATA_FORMAT, "job_id": job, "checkpoint_id": cid, "max_parallelism": MAXP,
          "operators": {UID: {"parallelism": len(backends), "subtasks": subtasks}}, "carried_committables": {}}
    storage.write_metadata(job, cid, md)
    return md


def savepoint(storage, md: dict, where: str) -> tuple[dict, object]:
    """``md`` as a self-contained savepoint, read back (its shared files copied in)."""
    names = {}
    subtasks = {}
    for s, e in md["operators"][UID]["subtasks"].items():
        names[f"keyed-{s}"] = storage.read_state(e["keyed"])
        subtasks[s] = {"keyed": f"keyed-{s}", "committables": []}
    path = storage.write_savepoint(where, {**md, "operators": {UID: {"parallelism": len(subtasks),
                                                                     "subtasks": subtasks}}}, names)
    return storage.read_savepoint(path)


def restore(sb, md: dict, read_fn, parallelism: int, make) -> list:
    vertices = [{"id": 0, "parallelism": parallelism, "uids": [UID], "source_uid": None}]
    plan, _ = sb.restore_plan(md, read_fn, vertices, MAXP)
    out = []
    for s in range(parallelism):
        rng = KeyGroupRange.for_subtask(s, parallelism, MAXP)
        b = make(rng)
        b.restore([sb.deserialize_snapshot(x, rng) for x in plan[(0, s)][UID]["keyed"]])
        out.append(b)
    return out


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(600)


@pytest.fixture
def rocksdb(tmp_path, clock):
    made: list[RocksDBKeyedStateBackend] = []

    def make(rng=KeyGroupRange(0, MAXP - 1)) -> RocksDBKeyedStateBackend:
        made.append(RocksDBKeyedStateBackend(rng, MAXP, clock, local_dir=str(tmp_path / "local"), cache_size=16))
        return made[-1]

    yield make
    for b in made:
        b.close()


def heap(clock):
    return lambda rng=KeyGroupRange(0, MAXP - 1): HeapKeyedStateBackend(rng, MAXP, clock)


@pytest.mark.parametrize("how", ["checkpoint", "savepoint"])
@pytest.mark.parametrize(("old_p", "new_p"), [(1, 1), (2, 3), (3, 1)])
def test_rocksdb_checkpoints_and_savepoints_restore_into_the_heap_backend(rocksdb, tmp_path, clock, how, old_p, new_p):
    storage = CheckpointStorage(str(tmp_path / "chk"))
    old = [rocksdb(KeyGroupRange.for_subtask(s, old_p, MAXP)) for s in range(old_p)]
    for b in old:
        fill(b, clock, timers=True)
    write_checkpoint(storage, RocksDBStateBackend(), 1, old)  # the base ...
    for b in old:  # ... and a delta on top: a changed value, a cleared list, a removed map entry
        v, lst, m = b.get_state(descriptors()["value"]), b.get_state(descriptors()["list"]), b.get_state(descriptors()["map"])
        for k in ("key-3", 7):
            if key_group_for(k, MAXP) in b.key_group_range:
                b.set_current_key(k)
                v.update("changed")
                lst.clear()
                m.remove("m0")
    md = write_checkpoint(storage, RocksDBStateBackend(), 2, old)
    want = expected(600)
    for k in ("key-3", 7):
        want["value"][k] = "changed"
        del want["list"][k]
        del want["map"][k]["m0"]
    sb = HeapStateBackend()
    if how == "savepoint":
        md, reader = savepoint(storage, md, str(tmp_path / "sp"))
        read_fn = reader.read
    else:
        read_fn = storage.read_state
    new = restore(sb, md, read_fn, new_p, heap(clock))
    assert merged([read(b) for b in new]) == want
    timers = [take_timers(b) for b in new]
    assert {n: set().union(*(t[n] for t in timers)) for n in (EVENT, PROCESSING)} == expected_timers()
    assert all(b.take_restored_timers(EVENT) == {} for b in new)  # handed over once
    # TTL timestamps came along: the old half expires at 1000, the young half at 1600
    clock.set(1200)
    assert merged([read(b) for b in new]) == {**want, **{n: v for n, v in expected(1200).items() if n.startswith("ttl")}}
    # and the heap backends checkpoint the state in their own format (no timers in it)
    snaps = [b.snapshot(3) for b in new]
    assert all(EVENT not in s.states for s in snaps)


@pytest.mark.parametrize(("old_p", "new_p"), [(1, 2), (3, 2)])
def test_heap_savepoints_restore_into_rocksdb_and_back(rocksdb, tmp_path, clock, old_p, new_p):
    # heap (p=old_p) -> RocksDB (p=new_p) -> heap (p=1), through checkpoint storage each time
    storage = CheckpointStorage(str(tmp_path / "chk"))
    make_heap = heap(clock)
    old = [make_heap(KeyGroupRange.for_subtask(s, old_p, MAXP)) for s in range(old_p)]
    for b in old:
        fill(b, clock, timers=False)
    md = write_checkpoint(storage, HeapStateBackend(), 1, old)
    md, reader = savepoint(storage, md, str(tmp_path / "sp1"))
    mid = restore(RocksDBStateBackend(), md, reader.read, new_p, rocksdb)
    assert merged([read(b) for b in mid]) == expected(600)
    md2 = write_checkpoint(storage, RocksDBStateBackend(), 2, mid)
    md2, reader2 = savepoint(storage, md2, str(tmp_path / "sp2"))
    [back] = restore(HeapStateBackend(), md2, reader2.read, 1, make_heap)
    assert read(back) == expected(600)
    assert take_timers(back) == {EVENT: set(), PROCESSING: set()}


def test_a_local_rocksdb_snapshot_restores_into_a_heap_backend(rocksdb, clock):
    b = rocksdb()
    fill(b, clock, timers=True)
    b.snapshot(1)
    v = b.get_state(descriptors()["value"])
    k = next(k for k in KEYS if key_group_for(k, MAXP) < 64)
    b.set_current_key(k)
    v.update("later")
    snap = b.snapshot(2)  # a delta
    h = HeapKeyedStateBackend(KeyGroupRange(0, 63), MAXP, clock)
    data = RocksDBStateBackend().serialize_snapshot(snap)  # self-contained, as in process
    h.restore([HeapStateBackend().deserialize_snapshot(data, h.key_group_range)])
    want = {n: {k: x for k, x in e.items() if key_group_for(k, MAXP) < 64} for n, e in expected(600).items()}
    want["value"][k] = "later"
    assert read(h) == want


def test_window_state_on_rocksdb_is_kept_by_the_heap_backend_for_the_operator(rocksdb, clock):
    # the heap window operator keeps its contents in operator memory: the heap backend keeps a
    # RocksDB snapshot's window state as restored keyed state and hands it over once
    b = rocksdb()
    contents = b.get_state(MapStateDescriptor("_window/contents"))
    b.set_current_key("k")
    contents.put((0, 1000), [1, 2])
    data = RocksDBStateBackend().serialize_snapshot(b.snapshot(1))
    h = HeapKeyedStateBackend(KeyGroupRange(0, MAXP - 1), MAXP, clock)
    h.restore([HeapStateBackend().deserialize_snapshot(data, h.key_group_range)])
    assert h.take_restored_state("_window/contents") == {key_group_for("k", MAXP): {"k": {(0, 1000): [1, 2]}}}
    assert h.take_restored_state("_window/contents") == {} and "_window/contents" not in h.state_names()


def test_keyed_state_in_use_or_with_a_ttl_is_not_handed_over_as_operator_state(clock):
    b = HeapKeyedStateBackend(KeyGroupRange(0, MAXP - 1), MAXP, clock)
    b.set_current_key("k")
    b.get_state(ValueStateDescriptor("ttl", ttl=TTL)).update(1)
    v = b.get_state(ValueStateDescriptor("v"))
    v.update(2)
    with pytest.raises(StateError, match="'v' is registered with get_state"):
        b.take_restored_state("v")
    h = HeapKeyedStateBackend(KeyGroupRange(0, MAXP - 1), MAXP, clock)
    h.restore([b.snapshot(1)])
    with pytest.raises(StateError, match="restored state 'ttl' has a TTL"):
        h.take_restored_state("ttl")
    s = h.get_state(ValueStateDescriptor("ttl", ttl=TTL))  # still there
    h.set_current_key("k")
    assert s.value() == 1
