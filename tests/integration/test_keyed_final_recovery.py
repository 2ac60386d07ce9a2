"""Final values on the record API are exactly once across killed tasks (session Ray):
``sum(column, emit="final")`` and ``reduce(fn, emit="final", combinable=True)``, their
combiners before the shuffle included, give a plain Python loop's result however often
tasks die. Kills happen on conditions (a checkpoint completed, the restarted attempt
checkpointed again), never after a guessed time."""

from __future__ import annotations

from typing import Any

import ray

import raystream as rs
from raystream.operators.sinks import collected_records
from tests.waiting import wait_for

N = 24_000
RATE = 8_000  # records/s: the job runs ~3 s


def record(i: int) -> dict:
    return {"key": f"k{(i * 7919) % 37:02d}", "value": i % 101, "i": i}


def reference() -> dict[str, tuple[int, int]]:
    """Per key: (sum of value, i of the key's first record)."""
    out: dict[str, tuple[int, int]] = {}
    for i in range(N):
        r = record(i)
        total, first = out.get(r["key"], (0, r["i"]))
        out[r["key"]] = (total + r["value"], first)
    return out


def test_final_sum_and_combinable_reduce_are_exactly_once_across_kills(tmp_path):
    env = rs.StreamEnvironment(parallelism=2, flush_ms=20)
    env.enable_checkpointing(150, checkpoint_dir=str(tmp_path / "chk"))
    env.set_restart_strategy(rs.RestartStrategy.fixed_delay(5, 100))
    # one source subtask: each key's records stay in order ("the key's first record" is defined)
    keyed = env.generate(record, count=N, rate=RATE, batch_size=200).set_parallelism(1).key_by("key")
    sums = keyed.sum("value", emit="final").uid("final-sum").map(lambda r: ("sum", r["key"], r["value"], r["i"]))
    reduced = keyed.reduce(lambda a, b: {**a, "value": a["value"] + b["value"]}, emit="final", combinable=True)
    sums.union(reduced.uid("final-reduce").map(lambda r: ("reduce", r["key"], r["value"], r["i"]))).collect()
    graph = env.get_job_graph()
    keyed_vertex = next(v.id for v in graph.vertices if v.chain[0]["name"] == "sum")
    client = env.execute_async("final-values-kills")

    def info() -> dict[str, Any]:
        return client.info()

    def checkpointed_in(attempt: int, after: int | None) -> bool:
        i = info()
        latest = (i.get("checkpoints") or {}).get("latest_completed")
        return i["status"] == "RUNNING" and i["attempt"] == attempt and latest is not None and latest != after

    killed = []
    after = None
    for vertex, subtask in ((keyed_vertex, 1), (0, 0)):  # a keyed task, then the source's (and its combiners')
        attempt = info()["attempt"]
        wait_for(lambda: checkpointed_in(attempt, after), f"attempt {attempt} completed a checkpoint")  # noqa: B023
        after = info()["checkpoints"]["latest_completed"]
        ray.kill(client.task_actor(vertex, subtask), no_restart=True)
        killed.append((vertex, subtask))
        wait_for(lambda: info()["attempt"] != attempt, "the job restarted")  # noqa: B023
    result = client.wait()

    rows = collected_records(next(iter(result.sink_results.values())))
    want = reference()
    assert result.metrics["restarts"] == len(killed) == 2
    for tag in ("sum", "reduce"):
        got = sorted(r[1:] for r in rows if r[0] == tag)
        assert got == sorted((k, total, first) for k, (total, first) in want.items()), tag
