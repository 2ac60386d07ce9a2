"""Jobs on the RocksDB state backend on Ray: stop with a savepoint and rescale 2 -> 3 -> 1
(keyed state re-split by key-group range from self-contained savepoints), also switching a
job from the heap backend to RocksDB through a savepoint. Kills and storage faults on
RocksDB are in ``test_drill.py``."""

from __future__ import annotations

import time
from typing import Any

import pytest

import raystream as rs
from raystream.checkpoint import ValueStateDescriptor
from raystream.operators.sinks import collected_records

pytest.importorskip("rocksdict")
pytestmark = pytest.mark.usefixtures("ray_session")

N = 12_000
RATE = 2_000  # records/s: ~6 s per run, time for a savepoint while it runs


def record(i: int) -> dict:
    return {"key": f"k{(i * 7919) % 37:02d}", "value": i % 101, "i": i}


def reference() -> list:
    totals: dict[str, int] = {}
    out = []
    for i in range(N):
        r = record(i)
        totals[r["key"]] = totals.get(r["key"], 0) + r["value"]
        out.append((r["key"], totals[r["key"]], i))
    return sorted(out)


class RunningSum(rs.KeyedProcessFunction):
    def open(self, ctx: Any) -> None:
        self.total = ctx.get_state(ValueStateDescriptor("total", default=0))
        self.seen = ctx.get_state(ValueStateDescriptor("seen", default=0))

    def process_element(self, value: dict, ctx: Any) -> Any:
        total = self.total.value() + value["value"]
        self.total.update(total)
        self.seen.update(self.seen.value() + 1)
        yield (value["key"], total, value["i"])


@pytest.mark.parametrize("backends", [("rocksdb", "rocksdb", "rocksdb"), ("heap", "rocksdb", "rocksdb")])
def test_stop_with_savepoint_then_rescale_2_to_3_to_1(tmp_path, backends):
    outputs: list = []
    savepoint = None
    for step, (parallelism, backend) in enumerate(zip((2, 3, 1), backends)):
        env = rs.StreamEnvironment(parallelism=parallelism, flush_ms=20)
        env.enable_checkpointing(150, checkpoint_dir=str(tmp_path / f"chk{step}"))
        env.set_state_backend(backend)
        (
            # the rate keeps the first two runs going until their savepoint; the last runs
            # the rest at full speed (the same restore and output; the rate is no state)
            env.generate(record, count=N, rate=RATE if step < 2 else None, batch_size=200)
            .set_parallelism(1)
            .key_by("key")
            .process(RunningSum())
            .uid("running-sum")
            .collect()
        )
        client = env.execute_async(f"rocksdb-rescale-{step}", from_savepoint=savepoint)
        if step < 2:
            deadline = time.monotonic() + 60
            while (client.info().get("checkpoints") or {}).get("completed", 0) < 1 and time.monotonic() < deadline:
                time.sleep(0.05)
            savepoint = client.stop_with_savepoint(str(tmp_path / f"sp-{step}"))
            if backends[step] == "rocksdb":
                assert (tmp_path / f"sp-{step}" / "shared").is_dir()  # SST files copied in
        result = client.wait()
        outputs.extend(tuple(r) for b in result.sink_results.values() for r in collected_records(b))
    assert sorted(outputs) == reference()
