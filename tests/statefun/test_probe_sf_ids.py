"""Function ids must be valid Unicode.

An id holding a lone surrogate (what ``json.loads('"\\udc80"')`` or
``bytes.decode(errors="surrogateescape")`` gives) was accepted by ``message_builder`` and
the routed ingress, then failed deep in routing: a bare ``UnicodeEncodeError`` from the
key-group hash in process, and on Ray ``key_by('operator.itemgetter(0, 1)') ... cannot
take the key: UnicodeEncodeError`` naming neither the id, the record nor the function. It
is now refused where the message is built, naming the id and the remedy.
"""

from __future__ import annotations

import json

import pytest

from raystream.engine.errors import UserCodeError
from raystream.engine.records import Batch
from raystream.statefun_api import (
    Address,
    IntType,
    StatefulFunctions,
    StringType,
    ValueSpec,
    egress_message_builder,
    make_json_type,
    message_builder,
)
from raystream.statefun_api.ingress import RoutedIngress
from raystream.statefun_api.local import LocalDispatchers

BAD = json.loads('"b\\udc80b"')  # an id as a JSON document can carry it


@pytest.mark.parametrize("value", [
    {"int_value": 1}, {"str_value": "x"}, {"long_value": 2}, {"bool_value": True},
    {"value": {"a": 1}, "value_type": make_json_type("t/J")},
])
def test_message_builder_refuses_an_id_with_a_lone_surrogate(value) -> None:
    with pytest.raises(ValueError, match=r"message to t/a: a function id must be valid Unicode, got 'b\\udc80b'"):
        message_builder("t/a", BAD, **value)
    with pytest.raises(ValueError, match="must be valid Unicode"):
        Address.of("t/a", BAD)


@pytest.mark.parametrize("parallelism", [1, 2])
def test_a_function_sending_to_such_an_id_fails_naming_itself_and_the_id(parallelism: int) -> None:
    fns = StatefulFunctions()

    @fns.bind("t/a")
    def forward(context, message):
        context.send(message_builder("t/b", json.loads(message.as_string()), str_value="x"))  # an id from a document

    @fns.bind("t/b")
    def sink(context, message):
        pass

    with LocalDispatchers(fns, parallelism=parallelism) as run:
        with pytest.raises(UserCodeError) as err:
            run.send(message_builder("t/a", "ann", str_value='"b\\udc80b"'))
        text = str(err.value.original)
        assert "function t/a/ann failed" in text and "must be valid Unicode, got 'b\\udc80b'" in text


@pytest.mark.parametrize("columnar", [False, True])
@pytest.mark.parametrize("value_type, value", [(StringType, "v"), (IntType, 3)])
def test_the_routed_ingress_names_the_record_with_such_an_id(columnar: bool, value_type, value) -> None:
    ingress = RoutedIngress(["t/a"], value_type, id_field="user", value_field="v")
    records = [{"user": "ann", "v": value}, {"user": BAD, "v": value}]
    with pytest.raises(UserCodeError, match=r"routed ingress's id \(field 'user'\): a function id must be valid Unicode") as err:
        ingress.route_batch(Batch.of_records(records), columnar=columnar)
    assert err.value.record == records[1]


@pytest.mark.parametrize("parallelism", [1, 2])
def test_unicode_ids_still_route_and_keep_state(parallelism: int) -> None:
    fns = StatefulFunctions()

    @fns.bind("t/count", specs=[ValueSpec("n", IntType)])
    def count(context, message):
        context.storage.n = (context.storage.n or 0) + 1
        context.send_egress(egress_message_builder("t/out", f"{context.address.id}:{context.storage.n}", StringType))

    ids = ["ünï", "😀", "日本", "a" * 300 + "é"]
    with LocalDispatchers(fns, parallelism=parallelism, egresses=["t/out"]) as run:
        run.send(*[message_builder("t/count", i, int_value=1) for i in ids * 2])
        assert sorted(run.egress("t/out")) == sorted(f"{i}:{n}" for i in ids for n in (1, 2))
        assert [run.state("t/count", i, "n") for i in ids] == [2] * len(ids)
