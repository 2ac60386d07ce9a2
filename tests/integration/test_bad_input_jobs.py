"""Jobs on Ray given input that used to be changed, dropped or reported without its place:
text lines with other line separators, records Parquet cannot hold as flat columns, a
source reader returning the wrong thing."""

from __future__ import annotations

import glob
import importlib
import sys
import threading
import uuid

import cloudpickle
import pyarrow.parquet as pq
import pytest

import raystream as rs
from raystream.engine.connectors import END_OF_INPUT, Source, SourceReader


def test_read_text_splits_lines_at_newlines_only_and_names_an_undecodable_file(tmp_path):
    (tmp_path / "a.txt").write_bytes("a\x0cb\r\nc\u2028d\n\ne\x1cf\n".encode())
    env = rs.StreamEnvironment(parallelism=2)
    assert env.read_text(str(tmp_path / "a.txt")).execute_and_collect() == ["a\x0cb", "c\u2028d", "", "e\x1cf"]
    (tmp_path / "bad.txt").write_bytes(b"fine\nnot \xff utf-8\n")
    env = rs.StreamEnvironment(parallelism=1)
    with pytest.raises(rs.JobFailed, match=r"read_text: .*bad.txt at byte 9: cannot decode as 'utf-8'"):
        env.read_text(str(tmp_path / "bad.txt")).execute_and_collect()
    env = rs.StreamEnvironment(parallelism=1)
    assert env.read_text(str(tmp_path / "bad.txt"), encoding="latin-1").execute_and_collect() == ["fine", "not \xff utf-8"]


def test_write_parquet_writes_nested_values_as_columns_and_refuses_mixed_types(tmp_path):
    records = [{"a": 1, "tags": ["x", "y"], "m": {"k": 1}}, {"a": 2, "tags": [], "m": {"k": 2}}]
    env = rs.StreamEnvironment(parallelism=1)
    env.from_collection(records).write_parquet(str(tmp_path / "nested"))
    env.execute("nested")
    table = pq.read_table(glob.glob(str(tmp_path / "nested" / "*.parquet"))[0])
    assert table.to_pylist() == records  # (was one binary column of pickles)
    env = rs.StreamEnvironment(parallelism=1)
    env.from_collection([{"a": 1}, {"a": 2.5}]).write_parquet(str(tmp_path / "mixed"))
    with pytest.raises(rs.JobFailed, match=r"write_parquet.*these records cannot be: column 'a' mixes int and float") as info:
        env.execute("mixed")
    assert info.value.record == "{'a': 2.5}"


class _ListReader(SourceReader):
    def __init__(self):
        self.done = False

    def add_splits(self, splits):
        pass

    def poll_next(self):
        if self.done:
            return END_OF_INPUT
        self.done = True
        return ["a", "b"]  # not a Batch

    def snapshot_state(self, checkpoint_id):
        return []


class _ListSource(Source):
    def create_splits(self, parallelism):
        return []

    def create_reader(self, ctx):
        return _ListReader()

    def describe(self):
        return "lists"


def test_a_reader_returning_something_else_than_a_batch_is_named():
    env = rs.StreamEnvironment(parallelism=1)
    with pytest.raises(rs.JobFailed, match=r"_ListReader.poll_next\(\) must return a Batch, NOTHING_AVAILABLE or END_OF_INPUT .*got list"):
        env.from_source(_ListSource()).execute_and_collect()


@pytest.mark.parametrize("emit", ["updates", "final"])
def test_a_vectorized_aggregate_of_a_column_it_cannot_sum_names_the_aggregation_and_type(emit):
    env = rs.StreamEnvironment(parallelism=1)
    rows = [{"key": "a", "value": "x"}, {"key": "b", "value": "y"}]
    env.from_collection(rows).key_by("key").aggregate(total=("value", "sum"), n=("value", "count"), emit=emit).collect()
    with pytest.raises(rs.JobFailed, match=r"aggregate\(total=\('value', 'sum'\), n=\('value', 'count'\)\): cannot compute "
                                           r"sum of column 'value' \(string\), count of column 'value' \(string\); sum and mean need"):
        env.execute(f"aggregate-{emit}")


@pytest.mark.parametrize("combine", [False, True])
def test_a_window_aggregate_of_a_column_it_cannot_average_names_the_aggregation_and_type(combine):
    from raystream.operators.time import WatermarkStrategy
    from raystream.operators.windows import TumblingEventTimeWindows

    env = rs.StreamEnvironment(parallelism=1)
    rows = [{"key": "a", "value": "x", "ts": 1}, {"key": "a", "value": "y", "ts": 2}]
    strategy = WatermarkStrategy.for_monotonous_timestamps().with_timestamp_column("ts")
    (env.from_collection(rows).assign_timestamps_and_watermarks(strategy).key_by("key")
     .window(TumblingEventTimeWindows.of(10)).aggregate(avg=("value", "mean"), combine=combine).collect())
    with pytest.raises(rs.JobFailed, match=r"window aggregate.*: cannot compute .*of column 'value' \(string\)"):
        env.execute("window-mean")


def test_a_record_that_cannot_be_pickled_names_itself_and_the_task():
    """A record that crosses a shuffle must be picklable: the failure names the task that
    sent it and the record (a lock in a tuple), whichever side of the shuffle meets it first."""
    env = rs.StreamEnvironment(parallelism=2)
    env.from_collection(list(range(10))).map(lambda x: (x % 2, threading.Lock())).key_by(lambda r: r[0]) \
        .reduce(lambda a, b: a).collect()
    with pytest.raises(rs.JobFailed, match=r"cannot pickle '_thread.lock' object") as info:
        env.execute("unpicklable")
    text = str(info.value)
    assert "_thread.lock object at" in text and ("from_collection -> map" in text or "'collect'" in text), text


@pytest.fixture
def driver_only_module(tmp_path):
    """A module the driver imports through a ``sys.path`` entry it added at run time (as a
    notebook's ``sys.path.append("../src")``): Ray's workers cannot import it."""
    name = f"raystream_driver_only_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text("def key(i):\n    return ('k', i)\n\ndef double(x):\n    return x * 2\n")
    sys.path.insert(0, str(tmp_path))
    try:
        yield importlib.import_module(name)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(name, None)


@pytest.mark.parametrize("where", ["source", "operator"])
def test_code_the_workers_cannot_import_is_named_with_what_to_do(driver_only_module, where):
    """The job master unpickles sources and sinks, the tasks the operators: either names the
    module it cannot import and the ways to ship it (was a bare traceback from inside Ray for a
    source), and shipping it by value as the message says makes the job run."""
    name = driver_only_module.__name__

    def build() -> rs.StreamEnvironment:
        env = rs.StreamEnvironment(parallelism=2)
        if where == "source":
            env.generate(driver_only_module.key, count=10).collect()
        else:
            env.generate(10).map(driver_only_module.double).collect()
        return env

    with pytest.raises(rs.JobFailed) as info:
        build().execute_and_collect(f"driver-only-{where}")
    text = str(info.value)
    assert f"No module named '{name}'" in text, text
    assert f"cloudpickle.register_pickle_by_value({name})" in text and "runtime_env" in text, text
    assert ("sources and sinks of job" if where == "source" else "the operators of") in text, text
    assert "ray::" not in text, text  # (no Ray traceback)
    cloudpickle.register_pickle_by_value(driver_only_module)
    try:
        out = sorted(build().execute_and_collect(f"driver-only-{where}-by-value"))
    finally:
        cloudpickle.unregister_pickle_by_value(driver_only_module)
    assert out == ([("k", i) for i in range(10)] if where == "source" else [2 * i for i in range(10)])


def test_a_generator_function_that_raises_names_the_index():
    env = rs.StreamEnvironment(parallelism=2)
    env.generate(lambda i: 100 // (i - 7), count=20).collect()
    with pytest.raises(rs.JobFailed, match=r"operator 'generate' .*ZeroDivisionError.*\n  while processing index: 7$"):
        env.execute("generator")


@pytest.mark.parametrize("records,error,named", [
    ([{"k": 1, "v": 1}, {"k": 1}, {"k": 1, "v": 2}], r"sum\('v'\): the record has no field 'v'", "{'k': 1}"),
    ([{"k": 2, "v": 1}, {"k": 1}, {"k": 1, "v": 2}], r"sum\('v'\): the record has no field 'v'", "{'k': 1}"),
    ([{"k": 1, "v": 1}, {"k": 1, "v": None}], r"sum\('v'\): the record has no value \(None\) in 'v'", "{'k': 1, 'v': None}"),
    ([{"k": 1, "v": 1}, {"k": 1, "v": "x"}], r"sum\('v'\): cannot fold 'x' \(str\) into 1 \(int\)", "{'k': 1, 'v': 'x'}"),
])
def test_a_rolling_sum_names_the_record_at_fault(records, error, named):
    """sum(emit="updates") failed with a bare KeyError or TypeError naming a record of the
    key that was fine (the next one), where emit="final" explained itself."""
    env = rs.StreamEnvironment(parallelism=1)
    env.from_collection(records).key_by("k").sum("v").collect()
    with pytest.raises(rs.JobFailed, match=error) as info:
        env.execute_and_collect()
    assert f"while processing record: {named}" in str(info.value)


def test_an_unhashable_key_on_the_heap_backend_says_what_to_key_by():
    env = rs.StreamEnvironment(parallelism=1)
    env.from_collection([{"k": 1, "v": 2}]).key_by(lambda r: [r["k"], "x"]).reduce(lambda a, b: a).collect()
    with pytest.raises(rs.JobFailed, match=r"(?s)unhashable type: 'list'.*while processing record: \{'k': 1, 'v': 2\}"
                                           r".*needs a hashable key instead, e.g. a tuple"):
        env.execute_and_collect()


class _RefusingSink(rs.Sink):
    """A sink whose committer refuses what it is given (an external system saying no)."""

    def create_writer(self, ctx):
        class W(rs.SinkWriter):
            def __init__(self):
                self.n = 0

            def write(self, batch):
                self.n += len(batch)

            def prepare_commit(self, checkpoint_id):
                return [self.n] if self.n else []

        return W()

    def create_committer(self):
        class C(rs.Committer):
            def commit(self, committables):
                raise ValueError(f"refused {committables}")

        return C()


def test_a_failing_final_commit_without_checkpointing_names_the_sink():
    """Without checkpointing the master committed at the end by calling the committer
    directly: its ValueError reached the user unwrapped, naming no sink."""
    env = rs.StreamEnvironment(parallelism=1)
    env.from_collection([1, 2, 3]).sink_to(_RefusingSink()).uid("refusing")
    with pytest.raises(rs.JobFailed, match=r"committing the output of sink 'refusing' failed: ValueError: refused \[3\]"):
        env.execute("refused")
