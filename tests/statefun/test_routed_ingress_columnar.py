"""The routed ingress's Arrow form: at parallelism > 1 it emits its messages as one Arrow
batch in the engine's form of message records, keyed on its columns.

The batch must be exactly what the engine's generic conversion makes of the records (same
schema, metadata and values, so the dispatcher reads back the same records), its key groups
must equal those of the records' keys, and a parallel routed job must give what a router
job gives.
"""

from __future__ import annotations

from itertools import repeat

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

import raystream as rs
from raystream.engine.channels import LocalSender, OutputInfo, RecordWriter
from raystream.engine.config import JobConfig
from raystream.engine.errors import UserCodeError
from raystream.engine.keygroups import key_group_for, key_groups_of_tuples
from raystream.engine.local_runtime import run_in_process
from raystream.engine.partitioners import KeyGroupPartitioner, KeySelector
from raystream.engine.records import Batch, arrow_to_records, records_to_arrow
from raystream.operators.sources import GeneratorSource
from raystream.statefun_api import (
    BoolType,
    DoubleType,
    FloatType,
    IntType,
    LongType,
    StringType,
    make_json_type,
    message_builder,
)
from raystream.statefun_api.ingress import RoutedIngress
from raystream.statefun_api.job import StatefulFunctionsJob
from raystream.statefun_api.routing import (
    address_key,
    message_key_groups,
    message_record_key_groups,
    records_to_arrow_batch,
)
from tests.statefun.test_routed_ingress import (
    _counter_functions,  # the same counter as the record-path tests
)

_VALUES = [
    (IntType, [1, -(2**31), 2**31 - 1], True),
    (LongType, [2**40, -(2**63), 0], True),
    (DoubleType, [1.5, float("inf"), 0.0], True),
    (FloatType, [1.5, 2.0, -3.25], False),  # floats are held encoded (float32)
    (StringType, ["a", "ü", "x" * 100], True),
    (BoolType, [True, False, True], True),
]


@pytest.mark.parametrize(("value_type", "values", "arrow"), _VALUES)
@pytest.mark.parametrize("targets", [["demo/f"], ["demo/f", "other.ns/g"]])
def test_the_arrow_batch_is_the_generic_conversion_of_the_records(value_type, values, arrow, targets):
    op = RoutedIngress(targets, value_type)
    batch = Batch.of_records(list(zip(["a", "bé", "c" * 60], values)))
    records = op.route(batch)
    out = op.route_batch(batch, columnar=True)
    assert out.is_arrow == arrow
    generic = records_to_arrow(records)
    assert out.arrow().schema.equals(generic.schema, check_metadata=True)
    assert out.arrow().equals(generic)
    assert arrow_to_records(out.arrow()) == records


def test_an_arrow_id_column_is_read_as_it_is():
    op = RoutedIngress(["demo/f"], IntType, id_field="user", value_field="n")
    dicts = [{"user": "ann", "n": 1}, {"user": "bob", "n": 2}]
    expected = op.route(Batch.of_records(dicts))
    for user_type in (pa.string(), pa.large_string()):
        rb = pa.RecordBatch.from_arrays([pa.array(["ann", "bob"], user_type), pa.array([1, 2])], ["user", "n"])
        out = op.route_batch(Batch.of_arrow(rb), columnar=True)
        assert out.is_arrow and out.records() == expected
        assert out.arrow().schema.equals(records_to_arrow(expected).schema, check_metadata=True)


@pytest.mark.parametrize(
    ("value_type", "pairs"),
    [
        (DoubleType, [("a", 1.5), ("b", -0.0)]),  # -0.0 is held encoded
        (make_json_type("demo/Cart"), [("a", {"items": [1]})]),  # a custom type: serialized
    ],
)
def test_messages_arrow_cannot_hold_decoded_stay_records(value_type, pairs):
    op = RoutedIngress(["demo/f"], value_type)
    out = op.route_batch(Batch.of_records(pairs), columnar=True)
    assert not out.is_arrow
    assert out.records() == op.route(Batch.of_records(pairs))


@pytest.mark.parametrize(
    ("value_type", "records", "record", "message"),
    [
        (IntType, [("a", 1), ("", 2)], ("", 2), "must be a non-empty string, got ''"),
        (IntType, [("a", 1), ("b", 2**40)], ("b", 2**40), "out of range for sfixed32"),
        (IntType, [("a", 1), ("b", True)], ("b", True), ""),
        (IntType, [("a", 1), ("b", 1.0)], ("b", 1.0), ""),
        (LongType, [("a", 1), ("b", 2**63)], ("b", 2**63), ""),
    ],
)
def test_a_bad_record_fails_naming_it_as_on_the_records_path(value_type, records, record, message):
    with pytest.raises(UserCodeError) as info:
        RoutedIngress(["demo/f"], value_type).route_batch(Batch.of_records(records), columnar=True)
    assert info.value.record == record
    assert message in str(info.value.original)


def test_bad_records_fail_as_on_the_records_path():
    op = RoutedIngress(["demo/f"], IntType, id_field="user", value_field="n")
    rb = pa.RecordBatch.from_pylist([{"user": "a", "n": 1}, {"user": "", "n": 2}])
    with pytest.raises(UserCodeError, match="must be a non-empty string, got ''") as info:
        op.route_batch(Batch.of_arrow(rb), columnar=True)
    assert info.value.record == {"user": "", "n": 2}


_typenames = st.sampled_from(["demo/f", "ns.ü/fn", "a/" + "x" * 60, "x/y"]) | st.builds(
    lambda ns, name: f"{ns}/{name}", st.text(min_size=1, max_size=20), st.text(min_size=1, max_size=70)
)
_ids = st.text(min_size=1, max_size=80).filter(lambda s: all(not 0xD800 <= ord(c) <= 0xDFFF for c in s))


@given(
    st.lists(st.tuples(_typenames, _ids), min_size=1, max_size=60),
    st.integers(min_value=1, max_value=1 << 15),
    st.booleans(),
)
def test_key_groups_of_message_batches_equal_those_of_their_keys(addresses, max_parallelism, one_typename):
    if one_typename:  # the ingress's case: one typename throughout
        addresses = [(addresses[0][0], i) for _, i in addresses]
    records = [(t, i, "", "", "io.statefun.types/int", 1, True) for t, i in addresses]
    expected = [key_group_for(address_key(r), max_parallelism) for r in records]
    rb = records_to_arrow(records)
    assert message_key_groups(rb, max_parallelism).tolist() == expected
    assert message_key_groups(records_to_arrow_batch(records), max_parallelism).tolist() == expected
    selector = KeySelector(address_key, stable_keys=True, batch_key_groups=message_key_groups)
    assert selector.key_groups(Batch.of_arrow(rb), max_parallelism).tolist() == expected
    assert selector.key_groups(Batch.of_records(records), max_parallelism).tolist() == expected
    # the Python records of a router or a fan-out: from their typename and id columns
    assert message_record_key_groups(records, max_parallelism, min_records=1).tolist() == expected
    selector = KeySelector(address_key, stable_keys=True, record_key_groups=message_record_key_groups)
    assert selector.key_groups(Batch.of_records(records), max_parallelism).tolist() == expected


def test_key_groups_of_message_records_arrow_cannot_hold_are_those_of_their_keys():
    # an id with a lone surrogate (a str Python holds, UTF-8 cannot): left to the key-by-key
    # path, which fails as it does without the hook (no stable hash for it)
    records = [("demo/f", "a\udc80", "", "", "io.statefun.types/int", 1, True), ("demo/f", "b", "", "", "io.statefun.types/int", 1, True)]
    assert message_record_key_groups(records, 128, min_records=1) is None
    assert message_record_key_groups([], 128) is None
    few = [("demo/f", "b", "", "", "io.statefun.types/int", 1, True)] * 10  # below min_records: the keys' path
    assert message_record_key_groups(few, 128) is None
    failures = []
    for selector in (KeySelector(address_key, record_key_groups=message_record_key_groups), KeySelector(address_key)):
        with pytest.raises(UnicodeError) as err:
            selector.key_groups(Batch.of_records(records), 128)
        failures.append(str(err.value))
    assert failures[0] == failures[1]
    # a record of another form: the same
    odd = [("demo/f", 7, "", "", "io.statefun.types/int", 1, True)]
    assert message_record_key_groups(odd, 128, min_records=1) is None
    selector = KeySelector(address_key, record_key_groups=message_record_key_groups)
    assert selector.key_groups(Batch.of_records(odd), 128).tolist() == [key_group_for(("demo/f", 7), 128)]


@given(st.lists(st.tuples(st.binary(max_size=70), st.integers(-(2**63), 2**63 - 1), st.booleans()), min_size=1, max_size=40))
def test_key_groups_of_binary_integer_and_bool_columns(rows):
    columns = [pa.array([r[0] for r in rows], pa.binary()), pa.array([r[1] for r in rows]), pa.array([r[2] for r in rows])]
    assert key_groups_of_tuples(columns, 128).tolist() == [key_group_for(r, 128) for r in rows]


def test_unsigned_columns_hash_as_their_ints():
    values = [0, 2**63, 2**64 - 1]
    assert key_groups_of_tuples([pa.array(values, pa.uint64())], 1000).tolist() == [key_group_for((v,), 1000) for v in values]


def test_columns_hashed_only_row_by_row_give_none():
    assert key_groups_of_tuples([pa.array(["a", None])], 128) is None
    assert key_groups_of_tuples([pa.array([1.5, 2.5])], 128) is None
    assert message_key_groups(pa.RecordBatch.from_pylist([{"a": 1}]), 128) is None
    selector = KeySelector(address_key, batch_key_groups=message_key_groups)
    columns = [pa.array(["demo/f", None])] + [pa.array(["x", "y"])] * 6
    nulls = pa.RecordBatch.from_arrays(columns, [f"f{i}" for i in range(7)]).replace_schema_metadata({b"raystream.kind": b"tuple"})
    # the keys of the records instead
    assert selector.key_groups(Batch.of_arrow(nulls), 128).tolist() == [key_group_for(("demo/f", "x"), 128), key_group_for((None, "y"), 128)]


def test_an_arrow_message_batch_goes_to_a_local_target_as_arrow():
    delivered = []
    sender = LocalSender(0, None, lambda channel, seq, items, ack: (delivered.extend(items), ack()))
    selector = KeySelector(address_key, stable_keys=True, batch_key_groups=message_key_groups)
    writer = RecordWriter(OutputInfo(KeyGroupPartitioner(selector), 1, 1, 0), [sender], 0, 128, batch_size=1, flush_ms=0)
    batch = RoutedIngress(["demo/f"], IntType).route_batch(Batch.of_records([("a", 1), ("b", 2)]), columnar=True)
    writer.write(batch)
    assert [type(item) for item in delivered] == [pa.RecordBatch]
    assert arrow_to_records(delivered[0]) == batch.records()


def _pairs(keys: list[str], arrow: bool):
    """The ingress records at ``indices``: ``(key, 1)`` pairs, or an Arrow batch of them (a
    local function: pickled by value for Ray's workers)."""

    def at(indices: range):
        picked = [keys[i] for i in indices]
        if arrow:
            return pa.RecordBatch.from_arrays([pa.array(picked), pa.array([1] * len(picked))], ["key", "n"])
        return list(zip(picked, repeat(1)))

    return at


def _egress(parallelism: int, routed: bool, arrow: bool, keys: list[str], ray: bool) -> list[str]:
    env = rs.StreamEnvironment(parallelism=parallelism)
    sf = StatefulFunctionsJob(env, _counter_functions())
    stream = env.from_source(GeneratorSource(batch_fn=_pairs(keys, arrow), count=len(keys), batch_size=256), "pairs")
    if routed:
        fields = {"id_field": "key", "value_field": "n"} if arrow else {}
        sf.with_routed_ingress(stream, "demo/counter", IntType, **fields)
    else:
        sf.with_ingress(stream, lambda r: message_builder("demo/counter", r[0], int_value=r[1]))
    if ray:
        return sorted(sf.egress_stream("demo/out").execute_and_collect())
    sf.egress_stream("demo/out").collect()
    result = run_in_process(env.get_job_graph(), JobConfig(name="routed"))
    return sorted(r for batches in result["results"].values() for b in batches for r in arrow_to_records(b))


_KEYS = [f"k{i % 41}" if i % 5 else "ü" * (i % 23 + 1) for i in range(3000)]


@pytest.mark.parametrize("arrow", [False, True])
def test_a_parallel_routed_job_in_process_equals_the_router_job(arrow):
    expected = _egress(1, False, False, _KEYS, ray=False)
    assert len(expected) > len(_KEYS)  # forwarded messages too
    assert _egress(2, True, arrow, _KEYS, ray=False) == expected


def test_a_parallel_routed_job_on_ray_equals_the_router_job(ray_session):
    expected = _egress(1, False, False, _KEYS, ray=True)
    assert _egress(2, True, False, _KEYS, ray=True) == expected
    assert _egress(2, True, True, _KEYS, ray=True) == expected


class _Id(str):
    """A str subclass: stable_hash hashes it by repr, not as the plain str."""


def test_str_subclass_ids_keep_the_key_groups_of_their_keys():
    records = [("demo/f", _Id(f"i{n}") if n % 2 else f"i{n}", "", "", "io.statefun.types/int", 1, True) for n in range(300)]
    assert message_record_key_groups(records, 128, min_records=1) is None
    selector = KeySelector(address_key, record_key_groups=message_record_key_groups)
    assert selector.key_groups(Batch.of_records(records), 128).tolist() == [key_group_for(address_key(r), 128) for r in records]
