"""Source splits dealt out by weight (``engine.connectors.assign_splits``): fresh splits in the
master, restored ones in the restore plan, and the built-in sources' split weights."""

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raystream.checkpoint import CheckpointStorage, dumps
from raystream.checkpoint.coordinator import (
    CheckpointConfig,
    CheckpointCoordinator,
    build_restore_plan,
)
from raystream.engine.connectors import assign_splits, split_weight
from raystream.engine.errors import CheckpointError, JobFailed
from raystream.engine.master import _plan_splits
from raystream.operators.sources import CollectionSource, GeneratorSource, ParquetSource, TextSource
from raystream.operators.time import WatermarkedSource, WatermarkStrategy


@dataclass
class Part:
    split_id: str
    rows: int

    def weight(self) -> float:
        return self.rows


def loads(readers):
    return [sum(split_weight(s) for s in r) for r in readers]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 1000), max_size=40), st.integers(1, 6))
def test_every_split_goes_to_one_reader_in_order_and_the_work_is_balanced(rows, parallelism):
    parts = [Part(f"p{i}", r) for i, r in enumerate(rows)]
    readers = assign_splits(parts, parallelism)
    assert len(readers) == parallelism
    dealt = [p.split_id for r in readers for p in r]
    assert sorted(dealt) == sorted(p.split_id for p in parts)  # each exactly once
    for r in readers:  # in the original order (files and row groups are read forward)
        assert [parts.index(p) for p in r] == sorted(parts.index(p) for p in r)
    work = loads(readers)
    # greedy from the heaviest: no reader ends more than one split's weight above another
    assert max(work) - min(work) <= max(rows, default=0)


@given(st.integers(0, 50), st.integers(1, 7))
def test_equal_weights_are_dealt_round_robin(n, parallelism):
    splits = [f"s{i}" for i in range(n)]  # no weight(): 1.0 each
    assert assign_splits(splits, parallelism) == [splits[i::parallelism] for i in range(parallelism)]


def test_files_of_one_and_a_half_row_groups_are_not_dealt_all_large_groups_to_one_reader(tmp_path):
    # 6 files of 2 row groups (4,096 + 1,024 rows): round-robin gave reader 0 every large group
    for f in range(6):
        table = pa.table({"v": list(range(5120))})
        pq.write_table(table, tmp_path / f"part-{f}.parquet", row_group_size=4096)
    source = ParquetSource(str(tmp_path))
    splits = source.create_splits(2)
    assert [s.rows for s in splits] == [4096, 1024] * 6
    readers = assign_splits(splits, 2)
    assert loads(readers) == [15360.0, 15360.0]
    for r in readers:  # each file's row groups in order within a reader
        assert [(s.path, s.row_group) for s in r] == sorted((s.path, s.row_group) for s in r)


class _Vertex:
    def __init__(self, source, parallelism):
        self.source, self.parallelism, self.name = source, parallelism, "src"


def test_the_built_in_sources_weigh_their_splits(tmp_path):
    text = tmp_path / "a.txt"
    text.write_text("x\n" * 100)
    (tmp_path / "b.txt").write_text("y\n" * 10)
    t_splits = TextSource(str(tmp_path / "*.txt"), split_bytes=64).create_splits(2)
    assert [split_weight(s) for s in t_splits] == [64.0, 64.0, 64.0, 8.0, 20.0]
    t_splits[0].position = 40
    assert split_weight(t_splits[0]) == 24.0
    c_splits = CollectionSource(list(range(10))).create_splits(3)
    assert [split_weight(s) for s in c_splits] == [3.0, 3.0, 4.0]
    g_splits = GeneratorSource(lambda i: i, count=10).create_splits(3)
    assert [split_weight(s) for s in g_splits] == [4.0, 3.0, 3.0]  # indices 0,3,6,9 / 1,4,7 / 2,5,8
    assert split_weight(GeneratorSource(lambda i: i).create_splits(1)[0]) == 1.0  # unbounded
    watermarked = WatermarkedSource(
        CollectionSource(list(range(10))), WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(lambda r, t: r)
    )
    assert [len(r) for r in _plan_splits(_Vertex(watermarked, 2))] == [1, 1]


@dataclass
class BadSplit:
    split_id: str

    def weight(self) -> float:
        return -1.0


class BadSource(CollectionSource):
    def create_splits(self, parallelism):
        return [BadSplit("bad-0")]

    def describe(self):
        return "bad source"


def test_a_bad_weight_fails_the_job_naming_the_source_and_the_split():
    with pytest.raises(JobFailed, match=r"source 'src' \(bad source\): .*weight\(\) of source split BadSplit\(split_id='bad-0'\).*>= 0"):
        _plan_splits(_Vertex(BadSource([1]), 2))


def test_restored_splits_are_dealt_by_the_work_left_in_them(tmp_path):
    storage = CheckpointStorage(str(tmp_path))
    coord = CheckpointCoordinator(CheckpointConfig(100, checkpoint_dir=str(tmp_path)), "job", [(0, 0), (0, 1)], storage)
    p = coord.trigger()
    # subtask 0 holds two big splits, subtask 1 two nearly read ones
    held = {0: [Part("a", 1000), Part("b", 900)], 1: [Part("c", 10), Part("d", 5)]}
    for s in range(2):
        op = storage.write_state("job", p.checkpoint_id, f"src/0-{s}-op", dumps({"splits": held[s]}))
        coord.acknowledge(p.checkpoint_id, (0, s), {"src": {"op": op}})
    coord.begin_finalize(p)
    coord.complete(p, {"parallelism": {0: 2}, "max_parallelism": 128})
    assert coord.end_finalize(p)
    _cid, meta = coord.latest_restorable()
    for parallelism, expected in ((2, [["a"], ["b", "c", "d"]]), (3, [["a"], ["b"], ["c", "d"]])):
        vertices = [{"id": 0, "parallelism": parallelism, "uids": ["src"], "source_uid": "src"}]
        plan, _ = build_restore_plan(meta, storage.read_state, vertices, 128)
        assert [[s.split_id for s in plan[(0, i)]["src"]["splits"]] for i in range(parallelism)] == expected
    held_bad = [BadSplit("x")]
    p = coord.trigger()
    for s in range(2):
        op = storage.write_state("job", p.checkpoint_id, f"src/0-{s}-op", dumps({"splits": held_bad}))
        coord.acknowledge(p.checkpoint_id, (0, s), {"src": {"op": op}})
    coord.begin_finalize(p)
    coord.complete(p, {"parallelism": {0: 2}, "max_parallelism": 128})
    assert coord.end_finalize(p)
    _cid, meta = coord.latest_restorable()
    with pytest.raises(CheckpointError, match="restored source splits of 'src'"):
        build_restore_plan(meta, storage.read_state, [{"id": 0, "parallelism": 2, "uids": ["src"], "source_uid": "src"}], 128)


def _restore_plan(tmp_path, held: dict, parallelism: int, with_order: bool = True):
    storage = CheckpointStorage(str(tmp_path))
    coord = CheckpointCoordinator(CheckpointConfig(100, checkpoint_dir=str(tmp_path)), "job", [(0, 0), (0, 1)], storage)
    p = coord.trigger()
    for s in range(2):
        blob = {"splits": [split for _o, split in held[s]]}
        if with_order:
            blob["order"] = [o for o, _split in held[s]]
        op = storage.write_state("job", p.checkpoint_id, f"src/0-{s}-op", dumps(blob))
        coord.acknowledge(p.checkpoint_id, (0, s), {"src": {"op": op}})
    coord.begin_finalize(p)
    coord.complete(p, {"parallelism": {0: 2}, "max_parallelism": 128})
    assert coord.end_finalize(p)
    _cid, meta = coord.latest_restorable()
    vertices = [{"id": 0, "parallelism": parallelism, "uids": ["src"], "source_uid": "src"}]
    plan, _ = build_restore_plan(meta, storage.read_state, vertices, 128)
    return [([s.split_id for s in plan[(0, i)]["src"]["splits"]], plan[(0, i)]["src"]["split_order"]) for i in range(parallelism)]


def test_restored_splits_are_read_in_the_sources_order_whatever_subtask_held_them(tmp_path):
    # files f0..f5 ascending in event time, the old subtasks holding f0, f2, f4 and f1, f3, f5:
    # one reader must not get f4 before f3 (its watermark would pass f3's records)
    held = {0: [(0, Part("f0", 10)), (2, Part("f2", 10)), (4, Part("f4", 10))],
            1: [(1, Part("f1", 10)), (3, Part("f3", 10)), (5, Part("f5", 10))]}
    assert _restore_plan(tmp_path / "a", held, 1) == [(["f0", "f1", "f2", "f3", "f4", "f5"], [0, 1, 2, 3, 4, 5])]
    assert _restore_plan(tmp_path / "b", held, 2) == [(["f0", "f2", "f4"], [0, 2, 4]), (["f1", "f3", "f5"], [1, 3, 5])]
    # a checkpoint of a version that kept no ordinals: the subtasks' lists one after the other
    assert _restore_plan(tmp_path / "c", held, 1, with_order=False)[0][0] == ["f0", "f2", "f4", "f1", "f3", "f5"]


def test_fresh_splits_carry_their_ordinals(tmp_path):
    for f in range(3):
        pq.write_table(pa.table({"v": list(range(5120))}), tmp_path / f"part-{f}.parquet", row_group_size=4096)
    dealt = _plan_splits(_Vertex(ParquetSource(str(tmp_path)), 2))
    assert [[o for o, _s in r] for r in dealt] == [[0, 4], [1, 2, 3, 5]]  # 8,192 / 7,168 rows, in order
    assert all(s.split_id == f"{tmp_path}/part-{o // 2}.parquet#{o % 2}" for r in dealt for o, s in r)


@pytest.mark.parametrize("module", ["raystream.engine.connectors", "raystream.operators.sources"])
def test_doctests(module):
    import doctest
    import importlib

    assert doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS).failed == 0


def test_the_connectors_doc_example_runs(capsys):
    import pathlib
    import re

    text = (pathlib.Path(__file__).parents[2] / "docs" / "connectors.md").read_text()
    section = text.split("## Splits are dealt out by the work left in them", 1)[1]
    block = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    exec(compile(block, "docs/connectors.md", "exec"), {"__name__": "doc"})
    assert capsys.readouterr().out.strip() == "[['a', 'b'], ['c', 'd']]"
