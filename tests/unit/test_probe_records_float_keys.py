"""``aggregate()`` keyed by a float column holding ``0.0`` and ``-0.0`` (one key for Python,
two groups for Arrow's group-by) and NaN (one group for Arrow, every NaN object a key of its
own in a dict): before, the two zero rows of a batch got one accumulator slot and the first
row's values were overwritten by the second's (lost), and every batch's NaN row made a new
key (one output row per batch and subtask). Now the zeros fold into one key, as Python's
``{0.0: ..}`` does, and all NaNs are one key, as in Arrow, Flink and the vectorized ``sum``."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

import raystream as rs
from raystream.engine.config import JobConfig
from raystream.engine.local_runtime import run_in_process
from raystream.operators.key_slots import KeySlots
from raystream.operators.keyed import _occurrences
from raystream.operators.sinks import collected_records

KEYS = [0.0, -0.0, 1.5, math.nan, None]
N = 400


def _rec(i: int) -> dict:
    return {"k": KEYS[i % len(KEYS)], "v": i, "f": i / 2}


def _reference() -> dict:
    """Per key: (sum of v, count, min of f, max of f); 0.0 and -0.0 one key, NaN one key."""
    out: dict = {}
    for i in range(N):
        r = _rec(i)
        k = "nan" if isinstance(r["k"], float) and math.isnan(r["k"]) else r["k"]
        s, n, lo, hi = out.get(k, (0, 0, math.inf, -math.inf))
        out[k] = (s + r["v"], n + 1, min(lo, r["f"]), max(hi, r["f"]))
    return out


def _run(parallelism: int, emit: str) -> dict:
    env = rs.StreamEnvironment(parallelism=parallelism)
    (env.generate(batch_fn=lambda idx: pa.Table.from_pylist([_rec(i) for i in idx]), count=N, batch_size=50)
     .key_by("k").aggregate(s=("v", "sum"), n=("v", "count"), lo=("f", "min"), hi=("f", "max"), emit=emit)
     .collect())
    result = run_in_process(env.get_job_graph(), JobConfig(name="float-keys"), timeout_s=120)
    [batches] = result["results"].values()
    rows = collected_records(batches)
    last: dict = {}
    for r in rows:
        k = "nan" if isinstance(r["k"], float) and math.isnan(r["k"]) else r["k"]
        if emit == "final":
            assert k not in last, f"key {k!r} emitted twice: {rows}"
        last[k] = (r["s"], r["n"], r["lo"], r["hi"])
    return last


@pytest.mark.parametrize("emit", ["final", "updates"])
@pytest.mark.parametrize("parallelism", [1, 2])
def test_aggregate_by_float_keys_equals_python(parallelism: int, emit: str) -> None:
    assert _run(parallelism, emit) == _reference()


def test_key_slots_give_every_nan_one_slot_and_both_zeros_one() -> None:
    ks = KeySlots()
    a = ks.slots_of(pa.array([0.0, float("nan"), -0.0, 2.0]))
    b = ks.slots_of(pa.array([float("nan"), -0.0, None]))
    assert a.tolist() == [0, 1, 0, 2] and b.tolist() == [1, 0, 3]
    assert len(ks) == 4


def test_occurrences() -> None:
    assert _occurrences(np.array([3, 3, 0, 3])).tolist() == [0, 1, 0, 2]
    assert _occurrences(np.array([], dtype=np.int64)).tolist() == []
