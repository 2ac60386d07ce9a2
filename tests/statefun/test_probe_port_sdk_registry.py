"""A module not ported yet: the official SDK's registry handed to raystream says how to run it.

A porting user who kept ``from statefun import *`` (or imported the SDK's ``functions`` from a
file served by the SDK) gets, instead of "needs a StatefulFunctions registry, got <statefun.
statefun_builder.StatefulFunctions object at 0x...>", the two ways StateFun code runs here:
change the import to embed the functions, or serve them and declare their endpoint.
"""

from __future__ import annotations

import pytest

statefun = pytest.importorskip("statefun")

import raystream as rs  # noqa: E402
from raystream.engine.errors import GraphError  # noqa: E402
from raystream.statefun_api.job import StatefulFunctionsJob  # noqa: E402


def playground_style_sdk_functions():
    functions = statefun.StatefulFunctions()

    @functions.bind(typename="example/person", specs=[statefun.ValueSpec(name="visits", type=statefun.IntType)])
    async def person(context, message):
        context.storage.visits = (context.storage.visits or 0) + 1

    return functions


def test_the_official_sdks_registry_is_refused_with_the_two_ways_to_run_it():
    with pytest.raises(GraphError) as info:
        StatefulFunctionsJob(rs.StreamEnvironment(), playground_style_sdk_functions())
    message = str(info.value)
    assert "the official StateFun SDK's StatefulFunctions (`from statefun import *`)" in message
    assert "`from raystream.statefun_api import *`" in message  # embed them
    assert "with_endpoint(remote_endpoint(...)) or with_module_yaml(...)" in message  # or call them remotely


def test_anything_else_is_refused_as_before():
    with pytest.raises(GraphError, match=r"StatefulFunctionsJob needs a StatefulFunctions registry, got \{\}"):
        StatefulFunctionsJob(rs.StreamEnvironment(), {})
