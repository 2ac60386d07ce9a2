"""``CollectionSource`` ships its items as pickled chunks: read back exactly, in order,
from any split and position, and pickled once however often the source is copied."""

from __future__ import annotations

import pickle
import sys
import threading

import cloudpickle
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import raystream as rs
from raystream.engine.connectors import END_OF_INPUT
from raystream.engine.errors import GraphError
from raystream.engine.observability import source_totals
from raystream.operators.sources import CollectionSource


def _read(source: CollectionSource, splits: list) -> list:
    reader = source.create_reader(None)  # type: ignore[arg-type]  # (the collection reader needs no context)
    reader.add_splits(splits)
    out: list = []
    while (batch := reader.poll_next()) is not END_OF_INPUT:
        out.extend(batch.records())
    return out


def _shipped(source: CollectionSource) -> CollectionSource:
    """The source as a task gets it: pickled by the driver, unpickled and pickled again by the
    job master (one task spec), unpickled by the task."""
    return pickle.loads(pickle.dumps(pickle.loads(pickle.dumps(source))))


@settings(max_examples=60, deadline=None)
@given(
    items=st.lists(st.one_of(st.integers(), st.text(max_size=5), st.tuples(st.integers(), st.none())), max_size=60),
    batch_size=st.integers(1, 9),
    parallelism=st.integers(1, 4),
)
def test_every_subtask_reads_its_range_of_the_shipped_items(items: list, batch_size: int, parallelism: int) -> None:
    source = _shipped(CollectionSource(items, batch_size))
    assert source.expected_records() == len(items)
    got = [_read(source, [split]) for split in source.create_splits(parallelism)]
    assert [x for part in got for x in part] == items
    assert [len(part) for part in got] == [len(s) for s in _ranges(len(items), parallelism)]


def _ranges(n: int, p: int) -> list[range]:
    return [range(n * i // p, n * (i + 1) // p) for i in range(p)]


def test_a_reader_restored_mid_split_goes_on_from_its_position() -> None:
    items = [("k", i) for i in range(1000)]
    source = _shipped(CollectionSource(items, batch_size=64))
    split = source.create_splits(3)[1]
    reader = source.create_reader(None)  # type: ignore[arg-type]
    reader.add_splits([split])
    first = reader.poll_next().records() + reader.poll_next().records()
    state = pickle.loads(pickle.dumps(reader.snapshot_state(1)))
    rest = _read(_shipped(CollectionSource(items, batch_size=64)), state)
    assert first + rest == items[split.start : split.end]


_pickled = 0


class _Counted:
    """An item that counts how often it is pickled."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __reduce__(self) -> tuple:
        global _pickled
        _pickled += 1
        return (_Counted, (self.n,))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Counted) and other.n == self.n


def test_the_items_are_pickled_once_however_often_the_source_is_copied() -> None:
    global _pickled
    _pickled = 0
    source = CollectionSource([_Counted(i) for i in range(100)], batch_size=16)
    shipped = pickle.loads(pickle.dumps(source))  # the driver
    specs = [pickle.dumps(shipped) for _ in range(4)]  # the job master, one spec per subtask
    assert _pickled == 100
    task = pickle.loads(specs[2])
    assert _read(task, task.create_splits(4)[2:3]) == [_Counted(i) for i in range(50, 75)]


def test_items_plain_pickle_cannot_do_go_through_cloudpickle() -> None:
    source = _shipped(CollectionSource([lambda x: x + 1, lambda x: x * 2], batch_size=1))
    assert [f(10) for f in _read(source, source.create_splits(1))] == [11, 20]


def test_instances_of_a_class_defined_in_main_travel_by_value() -> None:
    """A notebook's class: plain pickle would send ``__main__.Point`` by reference, which a
    task's process cannot resolve."""
    main = sys.modules["__main__"]
    point = type("Point", (), {"__init__": lambda self, x: setattr(self, "x", x)})
    point.__module__ = "__main__"
    main.Point = point  # type: ignore[attr-defined]
    try:
        blob = pickle.dumps(CollectionSource([point(1), point(2)], batch_size=1))
    finally:
        del main.Point  # type: ignore[attr-defined]
    source = pickle.loads(blob)  # as a task's process, which has no __main__.Point
    assert [p.x for p in _read(source, source.create_splits(1))] == [1, 2]


def test_an_item_that_cannot_be_pickled_is_named() -> None:
    items = [1, 2, 3, 4, 5, threading.Lock(), 7]
    with pytest.raises(GraphError, match=r"from_collection item 5 \(<unlocked _thread.lock"):
        pickle.dumps(CollectionSource(items, batch_size=4))


def test_a_job_with_an_unpicklable_item_fails_before_it_starts() -> None:
    env = rs.StreamEnvironment(parallelism=2)
    env.from_collection([1, threading.Lock()]).map(lambda x: x).collect()
    with pytest.raises(GraphError, match=r"cannot be sent to the task executors: from_collection item 1"):
        env.execute("unpicklable-item")


def test_progress_totals_know_a_shipped_collection_s_size() -> None:
    env = rs.StreamEnvironment(parallelism=2)
    env.from_collection(range(10)).map(lambda x: x).collect()
    graph = cloudpickle.loads(cloudpickle.dumps(env.get_job_graph()))
    assert sum(source_totals(graph).values()) == 10
