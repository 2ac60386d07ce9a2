"""Windows and joins switched from RocksDB back to the heap backend through a savepoint, on
Ray, rescaling 2 -> 3 (issue 16).

The job of :mod:`tests.integration.test_rocksdb_windows` (session windows, sliding windows
with a ProcessWindowFunction, a window co-group, an interval join, a keyed co-process
function with timers) plus a final field aggregate (``sum("i", emit="final")``): on RocksDB
all of their state and timers are in the keyed backend, which the savepoint holds; the heap
operators of the second run take them into their own structures. The two runs' outputs
together must be the failure-free output (missing windows, join partners or sums would
show).
"""

from __future__ import annotations

from collections import Counter

import pytest

import raystream as rs
from tests.integration import gated
from tests.integration.test_fault_tolerance import make_env
from tests.integration.test_rocksdb_operator_state import _stop_with_savepoint
from tests.integration.test_rocksdb_windows import RATE, N, build, diff, left, outputs

pytest.importorskip("rocksdict")
pytestmark = pytest.mark.usefixtures("ray_session")


def build_with_sum(env: rs.StreamEnvironment, rate: float | None = RATE, gate: str | None = None) -> None:
    """The job of test_rocksdb_windows, plus a final ``sum`` per key over a third source
    (emitted at the end of input only: on RocksDB its values are in the savepoint); with
    ``gate``, all three sources pause halfway until that file exists."""
    build(env, rate, gate)
    (gated.generate(env, left, N, rate, 200, gate, "sum").uid("sum-source")
     .key_by("key").sum("i", emit="final").uid("field-sum")
     .map(lambda r: ("sum", r["key"], r["i"])).collect())


@pytest.fixture(scope="module")
def reference() -> list:
    """The failure-free output (heap backend, no rate limit)."""
    env = rs.StreamEnvironment(parallelism=2)
    build_with_sum(env, rate=None)
    got = outputs(env.execute("rocksdb-windows-to-heap-reference"))
    kinds = Counter(r[0] for r in got)
    assert set(kinds) == {"session", "sliding", "cogroup", "join", "co", "sum"} and kinds["join"] > 1000, kinds
    assert kinds["sum"] == 23  # one per key
    return got


def test_windows_joins_and_sums_on_rocksdb_restore_on_the_heap_rescaled_2_to_3(reference, tmp_path):
    got: list = []
    savepoint = None
    gate = str(tmp_path / "gate")
    for step, (parallelism, backend) in enumerate(((2, "rocksdb"), (3, "heap"))):
        env = make_env(parallelism, tmp_path / f"run{step}")
        env.set_state_backend(backend)
        # (no rate: the gate keeps the first run going until its savepoint; the rate is no state)
        build_with_sum(env, rate=None, gate=gate if step == 0 else None)
        client = env.execute_async(f"rocksdb-windows-to-heap-{step}", from_savepoint=savepoint)
        if step == 0:  # the three sources (2 subtasks each) paused halfway: the savepoint is mid-run
            gated.wait_until_paused(gate, 6)
            savepoint = _stop_with_savepoint(client, str(tmp_path / "sp"))
        result = client.wait()
        out = outputs(result)
        if step == 0:
            assert 0 < len(out) < len(reference), "the savepoint should be taken mid-run"
            assert not [r for r in out if r[0] == "sum"], "the sums are emitted at the end of input only"
        got.extend(out)
    got.sort()
    assert got == reference, diff(got, reference)
