"""Writes ``rocksdb_key_encoding_1.snapshot``: a RocksDB keyed snapshot of key encoding 1, as
raystream wrote them before 2026-12-07 (``1``, ``True`` and ``2.0`` were separate keys), read
by ``tests/checkpoint/test_probe_backlog_rocksdb_equal_keys.py``. It was made with commit
2e2f101's code::

    git worktree add /tmp/wt 2e2f101
    cd /tmp/wt && PYTHONPATH=/tmp/wt python tests/checkpoint/data/make_rocksdb_key_encoding_1.py OUT

Run with today's code, it writes a snapshot of the current encoding instead (not the file's).
"""

from __future__ import annotations

import decimal
import fractions
import sys
import tempfile

from raystream.checkpoint import MapStateDescriptor, ValueStateDescriptor
from raystream.checkpoint.rocksdb_backend import RocksDBKeyedStateBackend
from raystream.checkpoint.rocksdb_files import serialize_full
from raystream.engine.keygroups import KeyGroupRange


def main(path: str) -> None:
    b = RocksDBKeyedStateBackend(KeyGroupRange(0, 127), 128, local_dir=tempfile.mkdtemp())
    count = b.get_state(ValueStateDescriptor("count", default=0))
    tags = b.get_state(MapStateDescriptor("tags"))
    queue = b.create_timer_queue("_timers/event_time")
    for key, n in [(1, 1), (True, 10), (2.0, 5), (decimal.Decimal("2.5"), 3), (fractions.Fraction(7, 2), 4),
                   ((True, 1.0), 6), ("s", 7), (9, 8), (frozenset({1.0, 2}), 2)]:
        b.set_current_key(key)
        count.update(n)
    for key in ["m", 5]:
        b.set_current_key(key)
        tags.put(True, "t")
        tags.put(2.0, "two")
        tags.put("a", "x")
    for key, time in [(True, 100), (2.0, 50), ("s", 70)]:
        b.set_current_key(key)
        queue.add(key, None, time)
    data = serialize_full(b.snapshot(1))
    b.close()
    with open(path, "wb") as f:
        f.write(data)


if __name__ == "__main__":
    main(sys.argv[1])
