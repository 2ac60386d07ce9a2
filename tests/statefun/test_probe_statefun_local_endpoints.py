"""The in-process runner (``LocalDispatchers``) takes the endpoints a job takes, and refuses
what a job refuses: two endpoints for one function pattern used to be accepted there, the
first one silently serving the functions, while ``StatefulFunctionsJob`` refused them."""

from __future__ import annotations

import pytest

import raystream as rs
from raystream.engine.errors import ConfigError
from raystream.statefun_api import StatefulFunctions
from raystream.statefun_api.endpoints import remote_endpoint
from raystream.statefun_api.job import StatefulFunctionsJob
from raystream.statefun_api.local import LocalDispatchers

A = remote_endpoint("remote/*", "http://functions-a:8000/{function.name}")
B = remote_endpoint("remote/*", "http://functions-b:8000/{function.name}")
EXACT = remote_endpoint("remote/greeter", "http://functions-b:8000/greeter")


@pytest.mark.parametrize("runner", ["local", "job"])
def test_two_endpoints_for_one_pattern_are_refused_by_both_runners(runner):
    message = r"function types 'remote/\*' are bound to two endpoints: .*functions-a.* and .*functions-b"
    with pytest.raises(ConfigError, match=message):
        if runner == "local":
            LocalDispatchers(StatefulFunctions(), endpoints=[A, B])
        else:
            StatefulFunctionsJob(rs.StreamEnvironment(), StatefulFunctions(), endpoints=[A, B])


def test_the_same_endpoint_twice_and_an_exact_binding_next_to_a_pattern_are_taken():
    with LocalDispatchers(StatefulFunctions(), endpoints=[A, A, EXACT]) as run:
        assert run.is_idle()
