"""Build-time errors of StatefulFunctionsJob say what is wrong.

``with_ingress([records...], router)`` (a list, not a DataStream) used to answer "the
stream belongs to another StreamEnvironment", sending the user after a second environment
that does not exist.
"""

from __future__ import annotations

import pytest

import raystream as rs
from raystream.engine.errors import GraphError
from raystream.statefun_api import StatefulFunctions, StringType, make_json_type, message_builder
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


def test_an_egress_declared_twice_with_equal_looking_types_says_why_they_differ() -> None:
    """Two ``make_json_type("t/Receipt")`` calls make two Type objects: declaring an egress
    with each used to fail with "already declared with value type _SimpleType('t/Receipt'),
    not _SimpleType('t/Receipt')"."""
    env = rs.StreamEnvironment()
    sf = StatefulFunctionsJob(env, StatefulFunctions()).with_ingress(env.from_collection(["ann"]), route)
    receipt = make_json_type("t/Receipt")
    sf.with_egress("t/receipts", value_type=receipt)
    sf.egress_stream("t/receipts", receipt)  # the same object again: fine
    sf.egress_stream("t/receipts")  # no type: keeps the declared one
    with pytest.raises(GraphError, match=r"another Type object of the same typename 't/Receipt' \(each make_json_type"):
        sf.egress_stream("t/receipts", make_json_type("t/Receipt"))
    with pytest.raises(GraphError, match=r"already declared with value type 't/Receipt', not 'io.statefun.types/string'"):
        sf.with_egress("t/receipts", value_type=StringType)
