"""Routing records keyed by NaN keeps no entry per record.

The key-group cache of ``key_groups_of_keys`` (per process, kept across batches, cleared at
a million entries) was keyed by the raw key: a NaN, which a dict never finds again under
another object, added an entry per record (every record unpickled from a channel carries a
new NaN object, also inside a tuple key), so a stream of NaN keys grew the cache by about
50 bytes a record until it was cleared, evicting the hot keys with it. Keys are now cached
canonical: all NaN keys share one entry.
"""

from __future__ import annotations

import gc
import pickle
import tracemalloc

from raystream.engine.keygroups import key_group_for, key_groups_of_keys

MAXP = 97  # a max_parallelism of its own: a cache of its own


def nan() -> float:
    return pickle.loads(pickle.dumps(float("nan")))


def test_nan_keys_keep_no_cache_entry_per_record():
    batches = [[nan() for _ in range(250)] + [("k", nan()) for _ in range(250)] for _ in range(200)]
    want = [key_group_for(float("nan"), MAXP)] * 250 + [key_group_for(("k", float("nan")), MAXP)] * 250
    assert key_groups_of_keys(batches.pop(), MAXP).tolist() == want
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for keys in batches:
            assert key_groups_of_keys(keys, MAXP).tolist() == want
        del batches, keys  # what the cache still holds of 99,500 NaN keys is all that stays
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert kept < 200_000, f"routing 99,500 NaN keys kept {kept} bytes"
