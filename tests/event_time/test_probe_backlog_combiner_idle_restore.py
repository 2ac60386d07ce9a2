"""A window aggregate with its combiner (p=2) restored from a checkpoint taken while one source
subtask was idle gives what a run without the failure gives.

While subtask 1 idles (``with_idleness``) the keyed window's watermark follows subtask 0's far
past subtask 1's records; a checkpoint completes then, and the job fails. After the restore
the combiners' watermarks start over (subtask 1's from its first records, far below the keyed
window's restored one). Before the fix the combiner pre-aggregated subtask 1's resumed records (late in
the failure-free run) into partials of windows the keyed operator had fired: the job failed
("a pre-aggregated partial ... arrived after every window of its pane closed") on every
restart. Now the combiner's snapshot holds the largest watermark it forwarded, restored as the
maximum over the old subtasks (at or above every keyed window subtask's), so it passes those
records through and the window gives them to the late side output, as without the failure.

In process (the job master and task code of a cluster, without Ray); sources wait on files,
opened on conditions (a window fired, a checkpoint completed, the failure happened), never
after a guessed time.
"""

from __future__ import annotations

import collections
import os
from pathlib import Path
from typing import Any

import pytest

import raystream as rs
from raystream.checkpoint import CheckpointStorage, DroppableState
from raystream.checkpoint.coordinator import METADATA_FORMAT, build_restore_plan
from raystream.engine.connectors import NOTHING_AVAILABLE, PollResult
from raystream.engine.local_runtime import run_in_process
from raystream.engine.serde import dumps
from raystream.operators.sinks import collected_records
from raystream.operators.sources import GeneratorSource, _GeneratorReader
from raystream.operators.time import WatermarkStrategy
from raystream.operators.windows import TumblingEventTimeWindows
from tests.integration.test_probe_rescale_combiner_idleness import AsRow, Count
from tests.waiting import wait_for

N = 2_000  # records: subtask 0 reads the even indices, subtask 1 the odd ones
PAUSE_AT = 1  # subtask 1 idles from the start until the gate opens (nothing read before: no start-up race)
HOLD = 1_600  # subtask 0 waits before this index until the gates open
CLAMP = 1_200  # subtask 1's records: times up to 10 * CLAMP, all late in the run without failure
FIRED = 10 * CLAMP + 100  # a window fired from this start on: the window's watermark is past every such record
LATE = rs.OutputTag("late")


def record(i: int) -> dict:
    ts = 10 * i if i % 2 == 0 else 10 * min(i, CLAMP)
    return {"key": f"k{i % 3}", "v": 1, "ts": ts, "i": i}


class GatedSource(GeneratorSource):
    """Split ``gen-1`` waits from ``PAUSE_AT``, ``gen-0`` from ``HOLD``, until the file ``gate``
    exists; ``gen-0``'s reader fails once while it waits and the file ``crash`` exists."""

    def __init__(self, base: str) -> None:
        super().__init__(record, count=N, batch_size=50)
        self.base = base

    def create_reader(self, ctx: Any) -> _Reader:
        return _Reader(self, ctx)


class _Reader(_GeneratorReader):
    def poll_next(self) -> PollResult:
        src = self.source
        assert isinstance(src, GatedSource)
        split = self.splits[0] if self.splits else None
        if split is not None and not os.path.exists(src.base + "/gate"):
            stop = PAUSE_AT if split.split_id == "gen-1" else HOLD
            if split.position >= stop:
                if split.split_id == "gen-0" and os.path.exists(src.base + "/crash") \
                        and not os.path.exists(src.base + "/crashed"):
                    open(src.base + "/crashed", "w").close()
                    raise RuntimeError("the failure of the drill")
                return NOTHING_AVAILABLE
        return super().poll_next()


def mark_fired(base: str):
    def mark(r: dict) -> tuple:
        if r["window_start"] >= FIRED:
            open(base + "/fired", "w").close()
        return ("window", r["key"], r["window_start"], r["n"])
    return mark


def _newest_complete(storage: Path) -> int:
    return max((int(d.name[4:]) for d in storage.glob("*/chk-*") if (d / "_metadata").exists()), default=0)


@pytest.mark.parametrize("api", ["vectorized", "AggregateFunction"])
def test_a_restore_from_a_checkpoint_taken_while_a_source_idled_equals_a_run_without_failure(api, tmp_path):
    base, storage = str(tmp_path), tmp_path / "chk"
    env = rs.StreamEnvironment(parallelism=2, flush_ms=10)
    env.enable_checkpointing(50, checkpoint_dir=str(storage))
    env.set_restart_strategy(rs.RestartStrategy.fixed_delay(2, 10))
    stream = env.from_source(GatedSource(base), name="gen").assign_timestamps_and_watermarks(
        WatermarkStrategy.for_bounded_out_of_orderness(0).with_timestamp_column("ts").with_idleness(50))
    windowed = stream.key_by("key").window(TumblingEventTimeWindows.of(100)).side_output_late_data(LATE)
    if api == "vectorized":
        windows = windowed.aggregate(n=("v", "count"), combine=True)
    else:
        windows = windowed.aggregate(Count(), AsRow(), combine=True)
    windows.map(mark_fired(base)).collect()
    windows.get_side_output(LATE).map(lambda r: ("late", r["i"])).collect()

    def drill(master: Any, runtime: Any) -> None:
        wait_for(lambda: os.path.exists(base + "/fired"), "the window fired past subtask 1's records", 120)
        # (two more: the second was triggered after the first completed, so after the firing)
        before = _newest_complete(storage)
        wait_for(lambda: _newest_complete(storage) >= before + 2, "a checkpoint completed while subtask 1 idled", 120)
        open(base + "/crash", "w").close()
        wait_for(lambda: os.path.exists(base + "/crashed"), "the failure", 120)
        open(base + "/gate", "w").close()

    result = run_in_process(env.get_job_graph(), env._job_config("idle-restore"), timeout_s=300, on_start=drill)
    assert os.path.exists(base + "/crashed")
    out = [r for batches in result["results"].values() for r in collected_records(batches)]

    # the run without failure: subtask 1's records are late, subtask 0's are in their windows
    on_time = [record(i) for i in range(N) if i % 2 == 0]
    counts = collections.Counter((r["key"], r["ts"] // 100 * 100) for r in on_time)
    expected = sorted([("window", k, s, n) for (k, s), n in counts.items()]
                      + [("late", i) for i in range(PAUSE_AT, N, 2)])
    assert sorted(out) == expected


def test_a_savepoint_with_a_combiners_watermark_restores_into_a_job_without_the_combiner(tmp_path):
    """(combine=False after a savepoint of combine=True: the combiner's watermark is dropped, as
    a stateless operator's nothing was; any other state of a missing operator is refused.)"""
    storage = CheckpointStorage(str(tmp_path))
    ops: dict = {}
    for uid, blob in (("src", {"operator": None, "splits": ["split"]}),
                      ("local", {"operator": DroppableState({"watermark": 15_979})}),
                      ("other", {"operator": {"watermark": 15_979}})):
        ops[uid] = {"parallelism": 2, "subtasks": {
            s: {"op": storage.write_state("job", 1, f"{uid}/{s}-op", dumps(blob)), "committables": []} for s in range(2)}}
    md = {"format": METADATA_FORMAT, "job_id": "job", "checkpoint_id": 1, "max_parallelism": 128,
          "operators": ops, "carried_committables": {}}
    job = [{"id": 0, "parallelism": 1, "uids": ["src", "other"], "source_uid": "src"}]
    plan, _ = build_restore_plan(md, storage.read_state, job, 128, allow_non_restored_state=False)
    assert "local" not in plan[(0, 0)]
    with pytest.raises(rs.CheckpointError, match=r"state for operators \['other'\] that the job does not have"):
        build_restore_plan(md, storage.read_state, [{**job[0], "uids": ["src"]}], 128, allow_non_restored_state=False)
