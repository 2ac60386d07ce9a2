"""User errors: a function that cannot be shipped fails when the job is submitted, before Ray
starts, naming the operator, the function and the captured variable; a failing record is
located without running the user function twice."""

from __future__ import annotations

import threading

import pytest

import raystream as rs
from raystream.engine.client import ship
from raystream.engine.config import JobConfig
from raystream.engine.errors import GraphError
from raystream.engine.serde import find_unpicklable


def test_a_captured_lock_is_named_with_its_operator_and_function():
    lock = threading.Lock()

    def add_user(record):
        with lock:
            return record

    env = rs.StreamEnvironment(parallelism=2)
    env.from_collection([1, 2]).map(add_user).name("add users").collect()
    with pytest.raises(GraphError) as err:
        ship(env.get_job_graph(), JobConfig(name="locky"))
    msg = str(err.value)
    assert "operator 'add users'" in msg and "add_user" in msg and "captures 'lock'" in msg
    assert "_thread.lock" in msg


def test_find_unpicklable_looks_into_objects_and_containers():
    class Client:
        def __init__(self) -> None:
            self.conn = {"sock": threading.Lock()}

    assert find_unpicklable([1, "a"], "value") is None
    found = find_unpicklable(Client(), "the sink")
    assert found is not None and "attribute 'conn'" in found and "['sock']" in found


def test_a_failing_record_is_located_without_running_the_function_twice():
    from raystream.engine.errors import UserCodeError
    from raystream.engine.records import Batch
    from raystream.operators.basic import FilterOperator, MapOperator
    from raystream.operators.testing import CollectingOutput

    for op_class in (MapOperator, FilterOperator):
        calls: list[int] = []

        def fn(x: int, calls: list[int] = calls) -> int:
            calls.append(x)  # a side effect
            if x == 3:
                raise ValueError("three")
            return x

        op = op_class(fn)
        op.output = CollectingOutput()
        with pytest.raises(UserCodeError) as err:
            op.process_batch(Batch.of_records([1, 2, 3, 4, 5]))
        assert err.value.record == 3
        assert calls == [1, 2, 3]  # each record at most once: no re-run to find the culprit
