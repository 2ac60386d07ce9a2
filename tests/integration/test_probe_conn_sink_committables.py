"""A user's exactly-once sink whose writer forgets to return its committables fails the job
naming the sink (on Ray; the operator's part: ``tests/unit/test_probe_conn_sink_committables.py``).

Before, with checkpointing on, such a job finished as if all was well with none of its output
committed.
"""

from __future__ import annotations

from typing import Any

import pytest

import raystream as rs
from raystream.engine.connectors import Committer, Sink, SinkWriter


class _Committer(Committer[list]):
    def __init__(self) -> None:
        self.rows: list = []

    def commit(self, committables: list[list]) -> None:
        for rows in committables:
            self.rows.extend(rows)

    def result(self) -> list:
        return self.rows


class _Writer(SinkWriter[list]):
    def __init__(self, forgets: bool) -> None:
        self.forgets = forgets
        self.rows: list = []

    def write(self, batch: rs.Batch) -> None:
        self.rows.extend(batch.records())

    def prepare_commit(self, checkpoint_id: int | None) -> Any:
        rows, self.rows = self.rows, []
        if self.forgets:
            return None  # (meant: return [rows] if rows else [])
        return [rows] if rows else []


class RowsSink(Sink[list]):
    def __init__(self, forgets: bool) -> None:
        self.forgets = forgets

    def create_writer(self, ctx: Any) -> SinkWriter[list]:
        return _Writer(self.forgets)

    def create_committer(self) -> Committer[list]:
        return _Committer()


def _job(tmp_path, forgets: bool) -> rs.StreamEnvironment:
    env = rs.StreamEnvironment(parallelism=2)
    env.enable_checkpointing(50, checkpoint_dir=str(tmp_path / "chk"))
    env.set_restart_strategy(rs.RestartStrategy.none())
    env.from_collection(list(range(100))).sink_to(RowsSink(forgets), name="rows").uid("rows")
    return env


def test_a_writer_that_returns_no_committables_fails_the_job_naming_the_sink(tmp_path):
    assert sorted(_job(tmp_path / "ok", False).execute("rows-ok").sink_results["rows"]) == list(range(100))
    with pytest.raises(rs.JobFailed, match=r"_Writer.prepare_commit\(\) of sink 'RowsSink' must return a list") as info:
        _job(tmp_path / "bad", True).execute("rows-forgotten")
    assert info.value.operator == "rows"
