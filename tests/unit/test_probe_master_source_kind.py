"""A savepoint restored into a job whose source under the same uid is another kind of source.

Before: a savepoint of ``env.generate(...).uid("src")`` restored into
``env.from_collection(...).uid("src")`` failed every attempt with a bare
``AttributeError: '_GenSplit' object has no attribute 'end'`` inside the reader, until the
restart strategy gave up. Now the job master checks the restored splits against the new source
while it plans the restore (``Source.accepts_restored_split``) and fails once, not retried,
with a CheckpointError naming the uid, both split kinds and the remedy. Per-split watermark
state (``_SplitWatermark``) still restores into a watermarked source of the same kind, plain
splits into one, and the reverse (the watermark strategy removed: the splits' positions are kept,
their watermark state dropped). In process, without Ray.
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any, Callable

import pytest

import raystream as rs
from raystream.engine.config import JobConfig
from raystream.engine.errors import CheckpointError
from raystream.engine.local_runtime import run_in_process
from raystream.operators.sinks import collected_records
from tests.waiting import wait_for

N = 400
RATE = 200  # records/s: a job of 2 s, stopped with a savepoint after its first checkpoint (50 ms)


def _job(tmp_path, name: str, build: Callable[[rs.StreamEnvironment], Any], savepoint: str | None = None,
         allow_non_restored_state: bool = False) -> tuple[Any, JobConfig]:
    env = rs.StreamEnvironment(parallelism=2, flush_ms=0)
    env.enable_checkpointing(50, checkpoint_dir=str(tmp_path / f"chk-{name}"))
    build(env)
    config = JobConfig(name=name, checkpoint=env.checkpoint_config, from_savepoint=savepoint,
                       allow_non_restored_state=allow_non_restored_state,
                       restart=rs.RestartStrategy.fixed_delay(3, 0))
    return env.get_job_graph(), config


def _stop_with_savepoint(tmp_path, build: Callable[[rs.StreamEnvironment], Any]) -> tuple[str, list]:
    """Run ``build``'s job until it has read a few records, then stop it with a savepoint."""
    graph, config = _job(tmp_path, "first", build)
    written: dict[str, Any] = {}

    def drill(master, runtime) -> None:
        wait_for(lambda: master.status == "RUNNING" and master.coordinator is not None
                 and master.coordinator.stats().get("completed", 0) >= 1, "a completed checkpoint")
        written["sp"] = asyncio.run_coroutine_threadsafe(
            master.stop_with_savepoint(str(tmp_path / "sp")), runtime.loop).result(60)

    result = run_in_process(graph, config, timeout_s=120, on_start=drill)
    return written["sp"], [r for batches in result["results"].values() for r in collected_records(batches)]


def _generated(env: rs.StreamEnvironment) -> None:
    env.generate(lambda i: {"i": i, "ts": i}, count=N, rate=RATE).uid("src").map(lambda r: r["i"]).uid("m").collect()


def _watermarked(env: rs.StreamEnvironment) -> Any:
    strategy = rs.WatermarkStrategy.for_monotonous_timestamps().with_timestamp_column("ts")
    env.generate(lambda i: {"i": i, "ts": i}, count=N, rate=RATE).uid("src") \
        .assign_timestamps_and_watermarks(strategy).map(lambda r: r["i"]).uid("m").collect()


def _from_collection(env: rs.StreamEnvironment) -> None:
    env.from_collection(list(range(10))).uid("src").map(lambda x: x).uid("m").collect()


def _read_text(env: rs.StreamEnvironment, path: str) -> None:
    env.read_text(path).uid("src").map(lambda x: x).uid("m").collect()


@pytest.mark.parametrize("first, second, kinds", [
    (_generated, _from_collection, ("_GenSplit", "RangeSplit")),
    (_generated, "read_text", ("_GenSplit", "_TextSplit")),
    (_watermarked, _from_collection, ("_SplitWatermark(_GenSplit)", "RangeSplit")),
])
def test_a_savepoint_of_another_kind_of_source_fails_once_with_the_remedy(tmp_path, first, second, kinds):
    sp, _ = _stop_with_savepoint(tmp_path, first)
    if second == "read_text":
        (tmp_path / "in.txt").write_text("a\nb\n")
        second = partial(_read_text, path=str(tmp_path / "in.txt"))
    graph, config = _job(tmp_path, "second", second, savepoint=sp)
    masters: list[Any] = []
    with pytest.raises(CheckpointError) as err:
        run_in_process(graph, config, timeout_s=120, on_start=lambda master, _rt: masters.append(master))
    message = str(err.value)
    for part in ("'src'", *kinds, "uid()", "allow_non_restored_state=True"):
        assert part in message, f"{part!r} not in {message!r}"
    wait_for(lambda: masters, "the drill thread got the master")
    assert masters[0].restarts == 0 and masters[0].failures == 0, "a restore that cannot work is not retried"


def test_the_remedy_works(tmp_path):
    sp, _ = _stop_with_savepoint(tmp_path, _generated)
    graph, config = _job(tmp_path, "second",
                         lambda env: env.from_collection(list(range(10))).uid("src2").map(lambda x: x).uid("m").collect(),
                         savepoint=sp, allow_non_restored_state=True)
    result = run_in_process(graph, config, timeout_s=120)
    assert sorted(r for b in result["results"].values() for r in collected_records(b)) == list(range(10))


@pytest.mark.parametrize("first, second", [(_watermarked, _watermarked), (_generated, _watermarked),
                                           (_watermarked, _generated)])
def test_a_source_of_the_same_kind_restores_with_or_without_per_split_watermarks(tmp_path, first, second):
    # (watermarked into plain: the splits' watermark state is dropped, their positions kept)
    sp, before = _stop_with_savepoint(tmp_path, first)
    assert 0 < len(before) < N
    graph, config = _job(tmp_path, "second", second, savepoint=sp)
    result = run_in_process(graph, config, timeout_s=120)
    after = [r for b in result["results"].values() for r in collected_records(b)]
    assert sorted(before + after) == list(range(N))
