"""A job whose source fails in one of its calls fails naming the source and the call.

Before, a user source whose ``create_reader``, ``add_splits`` or ``snapshot_state`` raised
failed the job with ``task 'my-src -> my-sink (1/2)' failed: RuntimeError: ...``, naming
neither the source nor the call, and a ``snapshot_state`` that returned None with
``'NoneType' object is not iterable``.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

import raystream as rs
from raystream.engine.connectors import END_OF_INPUT, Source, SourceReader
from raystream.engine.records import Batch

pytestmark = pytest.mark.usefixtures("ray_session")


@dataclass
class Part:
    split_id: str
    pos: int
    end: int


class _Reader(SourceReader):
    def __init__(self, fail: str) -> None:
        self.fail = fail
        self.parts: list[Part] = []

    def add_splits(self, splits):
        if self.fail == "add_splits":
            raise RuntimeError("boom in add_splits")
        self.parts.extend(splits)

    def poll_next(self):
        while self.parts and self.parts[0].pos >= self.parts[0].end:
            self.parts.pop(0)
        if not self.parts:
            return END_OF_INPUT
        p = self.parts[0]
        out = list(range(p.pos, min(p.end, p.pos + 10)))
        p.pos += len(out)
        return Batch.of_records(out)

    def snapshot_state(self, checkpoint_id):
        if self.fail == "snapshot_state":
            return None  # (a forgotten return)
        return [Part(p.split_id, p.pos, p.end) for p in self.parts]


class PartSource(Source):
    def __init__(self, fail: str) -> None:
        self.fail = fail

    def create_splits(self, parallelism):
        return [Part(f"p{i}", i * 100, i * 100 + 100) for i in range(2)]

    def create_reader(self, ctx):
        if self.fail == "create_reader":
            raise RuntimeError("boom in create_reader")
        return _Reader(self.fail)

    def describe(self):
        return "PartSource(2 parts)"


@pytest.mark.parametrize("parallelism", [1, 2])
@pytest.mark.parametrize("fail, says", [
    ("create_reader", "failed in create_reader(): RuntimeError: boom in create_reader"),
    ("add_splits", "failed in add_splits(): RuntimeError: boom in add_splits"),
    ("snapshot_state", "failed in snapshot_state() at the end of input: TypeError: _Reader.snapshot_state() must "
                       "return a list"),
])
def test_a_failing_source_call_is_named(parallelism, fail, says):
    env = rs.StreamEnvironment(parallelism=parallelism)
    env.set_restart_strategy(rs.RestartStrategy.none())
    env.from_source(PartSource(fail), name="my-src").map(lambda x: x + 1).collect()
    with pytest.raises(rs.JobFailed) as info:
        env.execute("failing source")
    msg = str(info.value)
    assert msg.startswith("source operator 'my-src' (PartSource(2 parts), subtask "), msg
    assert says in msg, msg
    assert info.value.operator == "my-src"


def test_the_same_source_without_a_failure_reads_everything():
    env = rs.StreamEnvironment(parallelism=2)
    out = env.from_source(PartSource("nothing"), name="my-src").map(lambda x: x + 1).execute_and_collect()
    assert sorted(out) == list(range(1, 201))
