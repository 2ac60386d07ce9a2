"""Build-time errors of StatefulFunctionsJob say what is wrong.

``with_ingress([records...], router)`` (a list, not a DataStream) used to answer "the
stream belongs to another StreamEnvironment", sending the user after a second environment
that does not exist.
"""

from __future__ import annotations

import pytest

import raystream as rs
from raystream.engine.errors import GraphError
from raystream.statefun_api import StatefulFunctions, StringType, message_builder
from raystream.statefun_api.job import StatefulFunctionsJob


def route(name):
    return message_builder("t/f", name, str_value=name)


@pytest.mark.parametrize("method", ["with_ingress", "with_routed_ingress"])
def test_an_ingress_that_is_not_a_datastream_is_named_with_the_remedy(method: str) -> None:
    env = rs.StreamEnvironment()
    sf = StatefulFunctionsJob(env, StatefulFunctions())
    args = (route,) if method == "with_ingress" else (["t/f"], StringType)
    with pytest.raises(GraphError, match=rf"{method}\(\) needs a DataStream .* got list \['ann', 'bob'\]; .*env.from_collection"):
        getattr(sf, method)(["ann", "bob"], *args)
    with pytest.raises(GraphError, match=r"belongs to another StreamEnvironment than this StatefulFunctionsJob's"):
        getattr(sf, method)(rs.StreamEnvironment().from_collection(["ann"]), *args)
    getattr(sf, method)(env.from_collection(["ann"]).key_by(lambda name: name), *args)  # a KeyedStream is a DataStream
