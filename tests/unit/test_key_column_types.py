"""Keys of a batch's key column: canonical (one NaN key) whatever the column's type, with
no pass over the keys' types where the column's Arrow type holds no NaN."""

import math

import pyarrow as pa
import pytest

from raystream.engine.keygroups import canonical_keys, nan_free_type
from raystream.engine.partitioners import KeySelector
from raystream.engine.records import Batch


@pytest.mark.parametrize("arrow_type, expected", [
    (pa.string(), True), (pa.large_string(), True), (pa.binary(), True), (pa.int8(), True),
    (pa.uint64(), True), (pa.bool_(), True), (pa.float64(), False), (pa.float32(), False),
    (pa.list_(pa.int64()), False), (pa.struct([("a", pa.float64())]), False), (pa.null(), False),
])
def test_nan_free_types(arrow_type, expected):
    assert nan_free_type(arrow_type) is expected


def test_keys_of_a_nan_free_column_are_the_list_itself():
    keys = ["a", "b", "a"]
    assert canonical_keys(keys, pa.string()) is keys


def test_float_column_nans_are_one_key():
    records = [{"k": float("nan"), "v": 1}, {"k": -float("nan"), "v": 2}, {"k": 1.5, "v": 3}]
    batch = Batch.of_arrow(pa.RecordBatch.from_pylist(records))
    sel = KeySelector("k")
    keys = sel.keys_of_records(batch.records(), batch)
    assert sel.column_type(batch) == pa.float64()
    assert math.isnan(keys[0]) and keys[0] is keys[1] and keys[2] == 1.5


def test_str_column_keys_come_as_the_records_hold_them():
    records = [{"k": "x", "v": 1}, {"k": "y", "v": 2}, {"k": None, "v": 3}]
    batch = Batch.of_arrow(pa.RecordBatch.from_pylist(records))
    sel = KeySelector("k")
    assert sel.column_type(batch) == pa.string()
    assert sel.keys_of_records(batch.records(), batch) == ["x", "y", None]


def test_python_records_and_key_functions_take_the_type_pass():
    nan = float("nan")
    records = [{"k": nan}, {"k": float("nan")}]
    batch = Batch.of_records(records)
    for sel in (KeySelector("k"), KeySelector(lambda r: r["k"])):
        assert sel.column_type(batch) is None
        keys = sel.keys_of_records(batch.records(), batch)
        assert keys[0] is keys[1]


def test_missing_key_column_has_no_type():
    batch = Batch.of_arrow(pa.RecordBatch.from_pylist([{"v": 1}]))
    assert KeySelector("k").column_type(batch) is None
