"""Keys that Python holds equal (``1 == True == 1.0 == Decimal(1) == Fraction(1)``, an IntEnum
of 1, a namedtuple and its tuple, a set and its frozenset) are one key on the RocksDB backend
as on the heap backend, whose dicts hold them as one: the same keyed job gives the same output
on both. Before 2026-12-07 the RocksDB backend encoded each type apart: a keyed reduce over
``[1, True, 1.0, Decimal(1)]`` gave four running values of 1 on RocksDB, 1, 2, 3, 4 on the
heap, and a map state kept ``True`` and ``1`` as two entries.

A timer keeps the key it was registered with (``on_timer`` of a bool-keyed job sees ``True``,
not ``1``); str, int, bytes and None keys keep their bytes, so older snapshots of them restore
as they were, and an older snapshot's other keys are moved to their new bytes on restore
(``data/rocksdb_key_encoding_1.snapshot``, written by 2e2f101 with
``data/make_rocksdb_key_encoding_1.py``). Backends without Ray; jobs ``run_in_process``."""

from __future__ import annotations

import collections
import decimal
import enum
import fractions
import logging
import struct
from pathlib import Path

import pytest

import raystream as rs
from raystream.checkpoint import MapStateDescriptor, ValueStateDescriptor
from raystream.checkpoint.rocksdb_keys import decode_key, encode_key
from raystream.engine.keygroups import KeyGroupRange
from raystream.engine.local_runtime import run_in_process
from raystream.operators.sinks import collected_records

FULL = KeyGroupRange(0, 127)
LEGACY = Path(__file__).parent / "data" / "rocksdb_key_encoding_1.snapshot"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Colour(str, enum.Enum):
    RED = "red"


Point = collections.namedtuple("Point", "x y")

#: each a list of keys that Python holds equal (one key)
EQUAL = [
    [1, True, 1.0, decimal.Decimal("1.00"), fractions.Fraction(1), Level.LOW, complex(1, 0)],
    [2, 2.0, Level.HIGH, decimal.Decimal(2)],
    [0, False, -0.0],
    [decimal.Decimal("1.10"), fractions.Fraction(11, 10)],
    [2.5, decimal.Decimal("2.5"), fractions.Fraction(5, 2)],
    ["red", Colour.RED],
    [(1, 2), Point(1, 2), (True, 2.0)],
]


def test_equal_keys_share_one_state_and_equal_map_keys_one_entry(make_backend):
    b = make_backend(FULL, 128)
    count = b.get_state(ValueStateDescriptor("count", default=0))
    tags = b.get_state(MapStateDescriptor("tags"))
    for group in EQUAL:
        for key in group:
            b.set_current_key(key)
            count.update(count.value() + 1)
        b.set_current_key(group[-1])
        assert count.value() == len(group), group
    b.set_current_key("m")
    for map_key in [1, True, 1.0, decimal.Decimal(1), 2.5, fractions.Fraction(5, 2)]:
        tags.put(map_key, (tags.get(map_key) or 0) + 1)
    assert sorted(tags.values()) == [2, 4]
    assert tags.get(Level.LOW) == 4 and tags.contains(True) and tags.get(decimal.Decimal("2.50")) == 2


def test_str_int_bytes_none_and_float_keys_keep_their_bytes():
    """The bytes older RocksDB snapshots hold them under (their restore reads them as they are)."""
    assert encode_key("k00001") == b"sk00001"
    assert encode_key(-17) == b"i-17"
    assert encode_key(b"\x00x") == b"b\x00x"
    assert encode_key(None) == b"N"
    assert encode_key(2.5) == b"f" + struct.pack(">d", 2.5)
    assert encode_key(("a", 7)) == b"t" + struct.pack(">I", 2) + b"sa" + struct.pack(">I", 2) + b"i7"
    assert decode_key(encode_key(decimal.Decimal("1.10"))) == fractions.Fraction(11, 10)


class CountAndFire(rs.KeyedProcessFunction):
    """Counts per key; at the end of input (a timer at 10**6) emits the key as ``on_timer``
    sees it, its type and its count."""

    def open(self, ctx):
        self.count = ctx.get_state(ValueStateDescriptor("count", default=0))

    def process_element(self, value, ctx):
        self.count.update(self.count.value() + 1)
        ctx.timer_service().register_event_time_timer(10**6)

    def on_timer(self, timestamp, ctx):
        key = ctx.get_current_key()
        yield repr(key), type(key).__name__, self.count.value()


def _job(backend: str, keys: list, parallelism: int, how: str) -> list:
    env = rs.StreamEnvironment(parallelism=parallelism)
    env.set_state_backend(backend)
    stream = (env.from_collection([(k, i) for i, k in enumerate(keys)], batch_size=4)
              .assign_timestamps_and_watermarks(rs.WatermarkStrategy.for_monotonous_timestamps()
                                                .with_timestamp_assigner(lambda r: r[1]))
              .key_by(lambda r: r[0]))
    if how == "reduce":
        out = stream.map(lambda r: (r[0], 1)).key_by(lambda r: r[0]).reduce(lambda a, b: (a[0], a[1] + b[1]))
        out = out.map(lambda r: (repr(r[0]), r[1]))
    else:
        out = stream.process(CountAndFire())
    out.collect()
    [batches] = run_in_process(env.get_job_graph(), env._job_config(f"equal-keys-{backend}"), timeout_s=120)["results"].values()
    return sorted(collected_records(batches))


@pytest.mark.parametrize("parallelism", [1, 2])
@pytest.mark.parametrize("how", ["reduce", "process"])
def test_a_keyed_job_gives_the_same_output_on_heap_and_rocksdb(parallelism, how):
    pytest.importorskip("rocksdict")
    keys = [k for group in EQUAL for k in group] * 2
    heap = _job("heap", keys, parallelism, how)
    assert _job("rocksdb", keys, parallelism, how) == heap
    if how == "process":  # one timer per key: the key each fired with counted all of its class
        assert sorted(n for _r, _t, n in heap) == sorted(2 * len(g) for g in EQUAL)


def test_a_timer_fires_with_the_key_it_was_registered_with():
    """A bool-keyed job's ``on_timer`` sees ``True`` and ``False`` on RocksDB too (the timer
    keeps its key; the state's keys are ints)."""
    pytest.importorskip("rocksdict")
    keys = [True, False, True, Level.HIGH, Point(3, 4)]
    heap = _job("heap", keys, 1, "process")
    assert _job("rocksdb", keys, 1, "process") == heap
    assert [(r, t) for r, t, _n in heap] == [("<Level.HIGH: 2>", "Level"), ("False", "bool"),
                                             ("Point(x=3, y=4)", "Point"), ("True", "bool")]


def test_an_older_snapshot_restores_with_equal_keys_made_one(tmp_path, caplog):
    """Written before the change: 1 (count 1) and True (count 10) apart, 2.0 (5) with no int 2,
    Decimal('2.5'), Fraction(7, 2), (True, 1.0), frozenset({1.0, 2}), map keys True and 2.0,
    timers of True and 2.0; 's' and 9 (encodings that did not change)."""
    pytest.importorskip("rocksdict")
    from raystream.checkpoint import RocksDBStateBackend
    from raystream.checkpoint.rocksdb_backend import RocksDBKeyedStateBackend

    b = RocksDBKeyedStateBackend(FULL, 128, local_dir=str(tmp_path))
    try:
        with caplog.at_level(logging.WARNING, logger="raystream.checkpoint.rocksdb_restore"):
            b.restore([RocksDBStateBackend().deserialize_snapshot(LEGACY.read_bytes(), FULL)])
        assert "one entry of each was kept, 1 dropped" in caplog.text  # (1 and True: 1's state kept)
        count = b.get_state(ValueStateDescriptor("count", default=0))
        tags = b.get_state(MapStateDescriptor("tags"))
        for key, want in [(1, 1), (True, 1), (2, 5), (2.0, 5), (decimal.Decimal("2.5"), 3), (2.5, 3),
                          (3.5, 4), ((1, 1), 6), ("s", 7), (9, 8), (frozenset({1, 2}), 2), ({1, 2.0}, 2)]:
            b.set_current_key(key)
            assert count.value() == want, key
        for key in ["m", 5]:
            b.set_current_key(key)
            assert sorted(tags.items(), key=repr) == [("a", "x"), (1, "t"), (2, "two")]
            assert tags.get(True) == "t" and tags.get(2) == "two"
        queue = b.create_timer_queue("_timers/event_time")
        fired = [queue.pop_due(1000) for _ in range(3)]
        assert fired == [(50, 2.0, None), (70, "s", None), (100, True, None)]
        assert [type(k) for _t, k, _n in fired] == [float, str, bool]
        assert queue.pop_due(1000) is None
        b.set_current_key(True)
        queue.add(1, None, 100)  # (equal to the restored True's timer: it is there already)
        assert len(queue) == 1
    finally:
        b.close()
