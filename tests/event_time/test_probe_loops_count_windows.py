"""count_window(n).aggregate(name=(column, fn)): the rows of a count window (a GlobalWindow,
which has no bounds) failed the job with AttributeError: 'GlobalWindow' object has no
attribute 'start'; now window_start / window_end are None."""

import pytest

import raystream as rs


def test_count_window_aggregate_specs_at_parallelism_1():
    rows = [{"k": i % 2, "v": i} for i in range(11)]
    env = rs.StreamEnvironment(parallelism=1)
    out = (env.from_collection(rows, batch_size=3).key_by("k").count_window(2)
           .aggregate(s=("v", "sum"), n=("v", "count")).execute_and_collect())
    expect = []
    for k in (0, 1):
        vs = [r["v"] for r in rows if r["k"] == k]
        expect += [{"k": k, "window_start": None, "window_end": None, "s": vs[j] + vs[j + 1], "n": 2}
                   for j in range(0, len(vs) - 1, 2)]
    key = lambda r: (r["k"], r["s"])  # noqa: E731
    assert sorted(out, key=key) == sorted(expect, key=key)


@pytest.mark.parametrize("batch_size", [1, 4])
def test_count_window_aggregate_specs_at_parallelism_2(batch_size):
    # two source subtasks interleave each key's records, so which records share a window
    # is not fixed; the number of windows per key and their sizes are
    rows = [{"k": i % 3, "v": i} for i in range(30)]
    env = rs.StreamEnvironment(parallelism=2)
    out = (env.from_collection(rows, batch_size=batch_size).key_by("k").count_window(5)
           .aggregate(n=("v", "count"), lo=("v", "min")).execute_and_collect())
    assert sorted(r["k"] for r in out) == [0, 0, 1, 1, 2, 2]
    assert all(r["n"] == 5 and r["window_start"] is None and r["window_end"] is None for r in out)
    assert all(r["lo"] % 3 == r["k"] for r in out)


@pytest.mark.parametrize("size", [0, -1, 1.5, True, "3", None])
def test_count_window_of_a_bad_size_is_a_build_error_naming_count_window(size):
    # it was a ConfigError about CountTrigger, a class the user never named
    env = rs.StreamEnvironment(parallelism=1)
    keyed = env.from_collection([(1, 2)]).key_by(0)
    with pytest.raises(rs.GraphError, match=r"count_window\(.*\): size is the number of records per window and key"):
        keyed.count_window(size)
