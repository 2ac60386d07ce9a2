"""Part files of the exactly-once file sinks are named by a token unique to each sink writer
(``part-<token>-<subtask>-<seq>.<ext>``, as Flink's FileSink names them by a uid): two sinks,
two runs or two attempts into one directory add files and never replace one another's; a
commit is idempotent and never overwrites a file that is not its own.

Before, files were ``part-<subtask>-<seq>`` and the commit's rename replaced what was there:
a second run (or a second sink) into a directory silently replaced the first one's files."""

from __future__ import annotations

import json
import re

import pyarrow.parquet as pq
import pytest

from raystream.engine.errors import JobFailed
from raystream.engine.sink_operator import SinkOperator
from raystream.operators.sinks import FileCommittable, FileSink, JsonLinesSink, ParquetSink
from raystream.operators.testing import OperatorHarness

NAME = re.compile(r"^part-[0-9a-f]{16}-\d{4}-\d{6}\.(jsonl|parquet)$")


def run(sink: FileSink, records: list, subtask: int = 0, restore: list | None = None) -> list[FileCommittable]:
    """One sink subtask writes ``records`` to its end: its final committables, committed."""
    harness = OperatorHarness(SinkOperator(sink), subtask_index=subtask, parallelism=2, restore=restore)
    harness.process(records)
    committables = [c for cs in harness.end_input().committables.values() for c in cs]
    sink.create_committer().commit(committables)
    return committables


def rows(directory) -> list:
    return sorted((json.loads(line) for f in directory.glob("part-*.jsonl") for line in f.read_text().splitlines()),
                  key=repr)


def test_a_second_run_into_the_directory_adds_files_and_replaces_none(tmp_path):
    first = run(JsonLinesSink(str(tmp_path)), [{"run": 1, "i": i} for i in range(3)])
    second = run(JsonLinesSink(str(tmp_path)), [{"run": 2, "i": i} for i in range(2)])
    assert {c.final for c in first}.isdisjoint(c.final for c in second)
    assert all(NAME.match(f.name) for f in tmp_path.glob("part-*"))
    assert rows(tmp_path) == sorted([{"run": 1, "i": i} for i in range(3)] + [{"run": 2, "i": i} for i in range(2)], key=repr)


def test_two_sinks_of_one_subtask_into_one_directory_keep_both(tmp_path):
    a = ParquetSink(str(tmp_path))
    b = ParquetSink(str(tmp_path))
    run(a, [{"src": "a", "i": i} for i in range(100)])
    run(b, [{"src": "b", "i": i} for i in range(50)])
    assert pq.read_table(tmp_path).num_rows == 150


def test_a_restored_attempt_names_its_files_apart_from_the_failed_one(tmp_path):
    sink = JsonLinesSink(str(tmp_path))
    harness = OperatorHarness(SinkOperator(sink), subtask_index=1, parallelism=2)
    harness.process([{"i": 0}])
    state = harness.snapshot()  # checkpoint 1 (its file is seq 0)
    harness.process([{"i": 1}])
    failed = [c for cs in harness.end_input().committables.values() for c in cs]  # seq 1
    sink.create_committer().commit(failed)  # (say it was committed before the attempt failed)
    restored = run(sink, [{"i": 1}], subtask=1, restore=[state])  # seq 1 again, from checkpoint 1
    assert failed and restored and {c.final for c in failed}.isdisjoint(c.final for c in restored)
    assert len(list(tmp_path.glob("part-*"))) == 2
    assert all(re.search(r"-0001-\d{6}\.jsonl$", c.final) for c in failed + restored)


def test_a_recommit_is_a_no_op(tmp_path):
    sink = JsonLinesSink(str(tmp_path))
    committables = run(sink, [{"i": 0}, {"i": 1}])
    assert committables[0].size == len(b'{"i": 0}\n{"i": 1}\n')
    before = {f.name: f.read_bytes() for f in tmp_path.iterdir() if f.is_file()}  # (not the .raystream/ dir)
    committer = sink.create_committer()
    committer.commit(committables)
    committer.commit(committables)
    assert {f.name: f.read_bytes() for f in tmp_path.iterdir() if f.is_file()} == before
    assert committer.result() == [c.final for c in committables]


def test_a_move_that_copied_and_did_not_delete_is_finished(tmp_path):
    """Object stores move by copy + delete: a commit cut between them left both files."""
    sink = JsonLinesSink(str(tmp_path))
    (tmp_path / ".inprogress-x").write_bytes(b"{}\n")
    (tmp_path / "part-x.jsonl").write_bytes(b"{}\n")
    sink.create_committer().commit([FileCommittable(str(tmp_path / ".inprogress-x"), str(tmp_path / "part-x.jsonl"), 3)])
    assert sorted(f.name for f in tmp_path.iterdir()) == ["part-x.jsonl"]


@pytest.mark.parametrize("pending", [b'{"mine": 1}\n', None])
def test_a_commit_never_overwrites_a_file_that_is_not_its_own(tmp_path, pending):
    sink = JsonLinesSink(str(tmp_path))
    (tmp_path / "part-x.jsonl").write_bytes(b'{"theirs": 1}\n{"theirs": 2}\n')
    if pending is not None:
        (tmp_path / ".inprogress-x").write_bytes(pending)
    committable = FileCommittable(str(tmp_path / ".inprogress-x"), str(tmp_path / "part-x.jsonl"), len(b'{"mine": 1}\n'))
    with pytest.raises(JobFailed, match=r"cannot commit .*part-x\.jsonl.*exists .*not this commit's.*never replaces"):
        sink.create_committer().commit([committable])
    assert (tmp_path / "part-x.jsonl").read_bytes() == b'{"theirs": 1}\n{"theirs": 2}\n'


def test_a_commit_whose_pending_file_is_gone_and_target_missing_fails(tmp_path):
    sink = JsonLinesSink(str(tmp_path))
    with pytest.raises(JobFailed, match="pending file .* is gone"):
        sink.create_committer().commit([FileCommittable(str(tmp_path / ".inprogress-x"), str(tmp_path / "part-x.jsonl"))])
