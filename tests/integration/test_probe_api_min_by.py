"""``KeyedStream.min_by(field)`` / ``max_by(field)`` (Flink's ``minBy`` / ``maxBy``): rolling,
every record emits the whole record of its key holding the minimum (maximum) so far, the
first one on ties (``first=False``: the last), compared with a plain-Python reference at
parallelism 1 and 2 and at several batch cuts. Before, a Flink user's ``min_by`` did not
exist. A record without the field, with None in it, or a value that does not compare fails
the job naming the operator and the record (also a key's only record, which a reduce would
emit unchecked).
"""

from __future__ import annotations

import random

import pytest

import raystream as rs
from raystream.engine.errors import JobFailed


def reference(records: list, key, field, smaller: bool, first: bool) -> list:
    best: dict = {}
    out = []
    for r in records:
        k = key(r)
        if k not in best:
            best[k] = r
        else:
            a, b = best[k][field], r[field]
            if first:
                better = b < a if smaller else b > a
            else:
                better = b <= a if smaller else b >= a
            if better:
                best[k] = r
        out.append(best[k])
    return out


def per_key(records: list, key) -> dict:
    out: dict = {}
    for r in records:
        out.setdefault(key(r), []).append(r)
    return out


def by_k(record: dict) -> str:
    return record["k"]


def by_0(record: tuple) -> str:
    return record[0]


def dicts(n: int) -> list[dict]:
    rnd = random.Random(7)
    return [{"k": rnd.choice(["a", "b", "ü", "☃"]), "v": rnd.randint(0, 4), "i": i} for i in range(n)]


@pytest.mark.parametrize("parallelism", [1, 2])
@pytest.mark.parametrize("batch_size", [1, 3, 1000])
@pytest.mark.parametrize("how", ["min_by", "max_by"])
@pytest.mark.parametrize("first", [True, False])
def test_dict_records_match_a_reference(parallelism, batch_size, how, first):
    data = dicts(60)  # values 0..4: many ties, so first/last matters
    env = rs.StreamEnvironment(parallelism=parallelism, batch_size=batch_size)
    source = env.from_collection(data).set_parallelism(1)  # one source: each key's records in order
    got = getattr(source.key_by("k"), how)("v", first=first).execute_and_collect()
    want = reference(data, by_k, "v", how == "min_by", first)
    assert per_key(got, by_k) == per_key(want, by_k)


@pytest.mark.parametrize("parallelism", [1, 2])
def test_tuple_records_by_position(parallelism):
    data = [("a", 5, "x"), ("b", 1, "w"), ("a", 3, "y"), ("a", 3, "z"), ("a", 7, "q"), ("b", 0, "v")]
    env = rs.StreamEnvironment(parallelism=parallelism)
    got = env.from_collection(data).set_parallelism(1).key_by(0).min_by(1).execute_and_collect()
    assert per_key(got, by_0) == per_key(reference(data, by_0, 1, True, True), by_0)
    assert per_key(got, by_0)["a"] == [("a", 5, "x"), ("a", 3, "y"), ("a", 3, "y"), ("a", 3, "y")]


@pytest.mark.parametrize("parallelism", [1, 2])
def test_empty_input_gives_nothing(parallelism):
    env = rs.StreamEnvironment(parallelism=parallelism)
    assert env.from_collection([]).key_by(0).max_by(1).execute_and_collect() == []


@pytest.mark.parametrize("records, message", [
    ([{"k": "a", "v": 1}, {"k": "b"}], r"min_by\('v'\): the record has no field 'v'.*\n.*record: \{'k': 'b'\}"),
    ([{"k": "a", "v": None}], r"min_by\('v'\): the record has no value \(None\) in 'v'.*\n.*record: \{'k': 'a', 'v': None\}"),
    ([{"k": "a", "v": 1}, {"k": "a", "v": "x"}], r"min_by\('v'\): cannot compare 'x' \(str\) with 1 \(int\)"),
])
def test_bad_records_fail_the_job_naming_operator_and_record(records, message):
    env = rs.StreamEnvironment(parallelism=2)
    env.from_collection(records).map(lambda r: r).key_by("k").min_by("v").collect()
    with pytest.raises(JobFailed, match=r"operator 'min_by[^']*'.*" + message):
        env.execute("bad")
