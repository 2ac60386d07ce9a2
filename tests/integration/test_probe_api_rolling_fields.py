"""Rolling ``sum``/``min``/``max(field)`` (``emit="updates"``) check every record, also the
first record of a key. The rolling reduce emits a key's first record as it is, without
calling the fold, so a key whose only record lacked the field (or held None in it) came out
silently as that key's "sum", while ``emit="final"`` and the same record second in its key
failed the job naming it. Now every record without a value in the field fails the job
naming the operator and the record, at parallelism 1 and 2; good input still matches a
plain-Python reference.
"""

from __future__ import annotations

import pytest

import raystream as rs
from raystream.engine.errors import JobFailed


@pytest.mark.parametrize("parallelism", [1, 2])
@pytest.mark.parametrize("how", ["sum", "min", "max"])
@pytest.mark.parametrize("records, message, named", [
    ([{"k": "a", "v": 1}, {"k": "b"}], r"the record has no field 'v'", "{'k': 'b'}"),
    ([{"k": "b", "v": None}], r"the record has no value \(None\) in 'v'", "{'k': 'b', 'v': None}"),
])
def test_a_keys_first_record_without_the_field_fails_the_job(parallelism, how, records, message, named):
    env = rs.StreamEnvironment(parallelism=parallelism)
    getattr(env.from_collection(records).map(lambda r: r).key_by("k"), how)("v").collect()
    with pytest.raises(JobFailed, match=rf"operator '{how}' .*{how}\('v'\): {message}") as info:
        env.execute("bad")
    assert f"while processing record: {named}" in str(info.value)


@pytest.mark.parametrize("parallelism", [1, 2])
def test_a_tuple_without_the_position_fails_the_job(parallelism):
    env = rs.StreamEnvironment(parallelism=parallelism)
    env.from_collection([("a", 1, 2), ("b",)]).map(lambda r: r).key_by(0).max(2).collect()
    with pytest.raises(JobFailed, match=r"operator 'max' .*max\(2\): the record has no field 2") as info:
        env.execute("bad")
    assert "while processing record: ('b',)" in str(info.value)


@pytest.mark.parametrize("parallelism", [1, 2])
@pytest.mark.parametrize("how", ["sum", "min", "max"])
def test_good_records_match_a_reference(parallelism, how):
    data = [{"k": "ab"[i % 3 % 2], "v": (i * 7) % 5, "i": i} for i in range(30)]
    fold = {"sum": lambda a, b: a + b, "min": min, "max": max}[how]
    firsts: dict = {}
    values: dict = {}
    want: dict = {}
    for r in data:
        k = r["k"]
        firsts.setdefault(k, r)
        values[k] = r["v"] if k not in values else fold(values[k], r["v"])
        want.setdefault(k, []).append({**firsts[k], "v": values[k]})
    env = rs.StreamEnvironment(parallelism=parallelism, batch_size=4)
    got = getattr(env.from_collection(data).set_parallelism(1).key_by("k"), how)("v").execute_and_collect()
    by_key: dict = {}
    for r in got:
        by_key.setdefault(r["k"], []).append(r)
    assert by_key == want
