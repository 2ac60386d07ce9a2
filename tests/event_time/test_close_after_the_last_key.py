"""``close()`` comes after the last key, and a failure in it is a failure.

A KeyedProcessFunction that read or wrote keyed state in ``close()`` silently acted on the
key of the last record processed (printing its count, overwriting its value); it now gets a
StateError saying keyed state belongs to a record's or timer's key (Flink: no key is set).
And a ``close()`` that raised after every record was processed was only logged, the job
reporting success: a function that could not flush or release what it held failed without
anyone knowing. It now fails the job naming the operator and ``close()``. After another
failure, an error in ``close()`` is still only logged: the original failure is reported."""

from __future__ import annotations

import pytest

import raystream as rs
from raystream.checkpoint import ValueStateDescriptor


class CountThenReadInClose(rs.KeyedProcessFunction):
    def open(self, ctx):
        self.n = ctx.get_state(ValueStateDescriptor("n", default=0))

    def process_element(self, value, ctx):
        self.n.update(self.n.value() + 1)
        yield (value, self.n.value())

    def close(self):
        self.n.update(999)  # which key? none: the last record's key is not current any more


class FlushInClose(rs.KeyedProcessFunction):
    def __init__(self, fail_in_close: bool, fail_on: int | None = None) -> None:
        self.fail_in_close, self.fail_on = fail_in_close, fail_on

    def process_element(self, value, ctx):
        if value == self.fail_on:
            raise ValueError(f"bad record {value}")
        yield value

    def close(self):
        if self.fail_in_close:
            raise RuntimeError("could not flush the buffered writes")


def run(env: rs.StreamEnvironment, fn: rs.KeyedProcessFunction) -> list:
    return env.from_collection([1, 1, 2, 3]).key_by(lambda v: v).process(fn).execute_and_collect()


def test_keyed_state_in_close_is_refused_instead_of_acting_on_the_last_key(state_backend):
    env = rs.StreamEnvironment(parallelism=1)
    env.set_state_backend(state_backend)
    with pytest.raises(rs.JobFailed, match=r"failed in close\(\): StateError: state 'n' used without a current key") as err:
        run(env, CountThenReadInClose())
    assert "close() comes after the last key" in str(err.value)
    assert err.value.operator == "process"


def test_an_error_in_close_after_the_last_record_fails_the_job():
    env = rs.StreamEnvironment(parallelism=2)
    with pytest.raises(rs.JobFailed, match=r"operator 'process' \(subtask \d/2\) failed in close\(\): "
                                           r"RuntimeError: could not flush the buffered writes"):
        run(env, FlushInClose(fail_in_close=True))


def test_a_close_that_works_changes_nothing():
    env = rs.StreamEnvironment(parallelism=2)
    assert sorted(run(env, FlushInClose(fail_in_close=False))) == [1, 1, 2, 3]


def test_after_another_failure_the_original_error_is_reported_not_the_close():
    env = rs.StreamEnvironment(parallelism=1)
    with pytest.raises(rs.JobFailed, match="bad record 2") as err:
        run(env, FlushInClose(fail_in_close=True, fail_on=2))
    assert "close()" not in str(err.value)
