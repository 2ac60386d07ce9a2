"""A user's sink whose master-side calls fail: ``Sink.create_committer()`` raising,
``Committer.result()`` raising or returning a value that cannot be pickled to the driver. The
job fails at once with a JobFailed naming the sink, the call and the remedy.

Before, each came out as a bare Ray traceback (``ray::JobMasterActor.run()`` ... ``File
"engine/master.py" ... committer = sink.create_committer()``; for an unpicklable result one
from inside Ray's serialization of the master's reply) naming neither the sink nor a remedy.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

import raystream as rs
from raystream.engine.connectors import Committer, Sink, SinkWriter


class _Committer(Committer[list]):
    def __init__(self, result: str) -> None:
        self.rows: list = []
        self.how = result

    def commit(self, committables: list[list]) -> None:
        for rows in committables:
            self.rows.extend(rows)

    def result(self) -> Any:
        if self.how == "raises":
            raise RuntimeError("boom in result")
        if self.how == "unpicklable":
            return threading.Lock()
        return self.rows


class _Writer(SinkWriter[list]):
    def __init__(self) -> None:
        self.rows: list = []

    def write(self, batch: rs.Batch) -> None:
        self.rows.extend(batch.records())

    def prepare_commit(self, checkpoint_id: int | None) -> list[list]:
        rows, self.rows = self.rows, []
        return [rows] if rows else []


class RowsSink(Sink[list]):
    def __init__(self, how: str) -> None:
        self.how = how

    def create_writer(self, ctx: Any) -> SinkWriter[list]:
        return _Writer()

    def create_committer(self) -> Committer[list]:
        if self.how == "create_committer":
            raise RuntimeError("boom in create_committer")
        return _Committer(self.how)


def _run(tmp_path, how: str, parallelism: int, checkpointing: bool) -> Any:
    env = rs.StreamEnvironment(parallelism=parallelism)
    if checkpointing:
        env.enable_checkpointing(50, checkpoint_dir=str(tmp_path / "chk"))
    env.set_restart_strategy(rs.RestartStrategy.none())
    env.from_collection(list(range(100))).sink_to(RowsSink(how), name="rows").uid("rows")
    return env.execute(f"sink-{how}")


@pytest.mark.parametrize("parallelism,checkpointing", [(1, False), (2, True)])
@pytest.mark.parametrize("how,message", [
    ("create_committer", r"^RowsSink\.create_committer\(\) of sink 'rows' failed in the job master: "
                         r"RuntimeError: boom in create_committer; .*fix it"),
    ("raises", r"^_Committer\.result\(\) of sink 'rows' failed in the job master: RuntimeError: boom in result; "
               r"the job's output is committed"),
    ("unpicklable", r"^_Committer\.result\(\) of sink 'rows' returned a value that cannot be pickled to the "
                    r"driver: TypeError: .*lock.*return plain data"),
], ids=["create_committer", "result-raises", "result-unpicklable"])
def test_a_failing_master_side_sink_call_fails_the_job_naming_the_sink_and_the_call(
        tmp_path, how, message, parallelism, checkpointing):
    with pytest.raises(rs.JobFailed, match=message) as info:
        _run(tmp_path, how, parallelism, checkpointing)
    assert info.value.operator == "rows"
    assert "boom" in (info.value.cause or "") or how == "unpicklable"
    # the job master that reported it runs the next job as usual
    assert sorted(_run(tmp_path / "ok", "ok", parallelism, checkpointing).sink_results["rows"]) == list(range(100))
