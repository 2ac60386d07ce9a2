import numpy as np
import pyarrow as pa
from hypothesis import given
from hypothesis import strategies as st

from raystream.engine.keygroups import KeyGroupRange, key_group_for
from raystream.engine.partitioners import (
    BroadcastPartitioner,
    KeyGroupPartitioner,
    KeySelector,
    RebalancePartitioner,
    split_batch_by_targets,
)
from raystream.engine.records import Batch


@given(st.lists(st.text(max_size=5), max_size=300), st.integers(1, 6), st.booleans())
def test_hash_partitioner_routes_each_record_once_to_its_key_group_owner(keys, n, columnar):
    records = [{"k": k, "i": i} for i, k in enumerate(keys)]
    batch = Batch.of_arrow(pa.RecordBatch.from_pylist(records, schema=pa.schema([("k", pa.string()), ("i", pa.int64())]))) if columnar else Batch.of_records(records)
    part = KeyGroupPartitioner(KeySelector("k"))
    part.setup(0, n, 128)
    seen = []
    for target, sub in part.select(batch):
        r = KeyGroupRange.for_subtask(target, n, 128)
        for rec in sub.records():
            assert key_group_for(rec["k"], 128) in r
            seen.append(rec["i"])
    assert sorted(seen) == list(range(len(keys)))


def test_rebalance_rotates_and_broadcast_copies():
    b = Batch.of_records([1, 2])
    rr = RebalancePartitioner()
    rr.setup(1, 3, 128)
    assert [rr.select(b)[0][0] for _ in range(4)] == [1, 2, 0, 1]
    bc = BroadcastPartitioner()
    bc.setup(0, 3, 128)
    assert [t for t, _ in bc.select(b)] == [0, 1, 2]


def test_function_key_selector():
    part = KeyGroupPartitioner(KeySelector(lambda r: r % 10))
    part.setup(0, 4, 128)
    out = part.select(Batch.of_records(list(range(100))))
    assert sum(len(s) for _, s in out) == 100
    assert np.all([len({x % 10 for x in s.records()}) <= 10 for _, s in out])


def test_a_missing_key_blames_the_key_by_and_its_consumer_not_the_upstream_operator():
    import pytest

    from raystream.engine.errors import JobFailed
    from raystream.engine.partitioners import KeyGroupPartitioner, KeySelector
    from raystream.engine.records import Batch

    part = KeyGroupPartitioner(KeySelector("usr")).feeding("reduce")
    part.setup(0, 2, 128)
    with pytest.raises(JobFailed) as err:
        part.select(Batch.of_records([{"user": 1}, {"user": 2}]))
    msg = str(err.value)
    assert "key_by('usr') into operator 'reduce'" in msg and "{'user': 1}" in msg and "['user']" in msg
    assert err.value.operator == "key_by('usr') into operator 'reduce'"


def test_one_target_takes_a_columnar_batch_whole_and_still_names_a_missing_key_column():
    import pyarrow as pa
    import pytest

    from raystream.engine.errors import JobFailed

    part = KeyGroupPartitioner(KeySelector("key")).feeding("window")
    part.setup(0, 1, 128)
    batch = Batch.of_arrow(pa.RecordBatch.from_pydict({"key": ["a", "b", "a"], "v": [1, 2, 3]}))
    [(target, out)] = part.select(batch)
    assert target == 0 and out is batch  # no hashing, no copy
    assert part.select(Batch.of_arrow(pa.RecordBatch.from_pydict({"key": pa.array([], pa.string())}))) == []
    with pytest.raises(JobFailed, match=r"key_by\('usr'\) into operator 'window'.*columns are \['key', 'v'\]"):
        missing = KeyGroupPartitioner(KeySelector("usr")).feeding("window")
        missing.setup(0, 1, 128)
        missing.select(batch)


@given(st.lists(st.integers(0, 19), max_size=200), st.integers(1, 20), st.booleans())
def test_split_by_targets_keeps_each_targets_rows_in_order(targets, n, columnar):
    """Both ways of splitting (a pass per target for a few targets, a stable sort for many)
    give every target its rows once, in the batch's order."""
    targets = [t % n for t in targets]
    records = [{"t": t, "i": i} for i, t in enumerate(targets)]
    batch = Batch.of_arrow(pa.RecordBatch.from_pylist(records, schema=pa.schema([("t", pa.int64()), ("i", pa.int64())]))) if columnar else Batch.of_records(records)
    got = split_batch_by_targets(batch, np.array(targets, dtype=np.int64), n)
    want = {t: [r for r in records if r["t"] == t] for t in sorted(set(targets))} if n > 1 else ({0: records} if records else {})
    assert [t for t, _ in got] == list(want)
    assert {t: sub.records() for t, sub in got} == want
