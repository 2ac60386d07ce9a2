"""``write_jsonl`` keeps value types: numpy scalars as the numbers and bools they hold, numpy
arrays, tuples and sets as lists, datetimes in ISO 8601, bytes in base64, Decimals as the
string of their exact value; anything else JSON cannot hold fails naming record and field.

Before, ``json.dumps(default=str)`` wrote ``np.int64(1)`` as the string "1", bytes as their
repr "b'\\\\t\\\\x00\\\\xff'" and a datetime as "2024-01-01 09:00:00+05:00"."""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import uuid

import numpy as np
import pytest

from raystream.engine.errors import UserCodeError
from raystream.engine.sink_operator import SinkOperator
from raystream.operators.sinks import JsonLinesSink
from raystream.operators.testing import OperatorHarness


def write(tmp_path, records: list) -> list:
    """The records ``write_jsonl`` writes, read back (one sink subtask, committed)."""
    sink = JsonLinesSink(str(tmp_path))
    harness = OperatorHarness(SinkOperator(sink))
    harness.process(records)
    sink.create_committer().commit([c for cs in harness.end_input().committables.values() for c in cs])
    return [json.loads(line) for f in sorted(tmp_path.glob("part-*.jsonl")) for line in f.read_text().splitlines()]


def test_numpy_values_are_written_as_the_numbers_bools_and_lists_they_hold(tmp_path):
    record = {"i": np.int64(1), "u": np.uint8(255), "f": np.float32(0.5), "d": np.float64(2.25),
              "b": np.bool_(True), "a": np.arange(3), "m": np.array([[1.5], [2.0]]),
              "t": np.datetime64("2024-01-02T03:04:05")}
    [back] = write(tmp_path, [record])
    assert back == {"i": 1, "u": 255, "f": 0.5, "d": 2.25, "b": True, "a": [0, 1, 2], "m": [[1.5], [2.0]],
                    "t": "2024-01-02T03:04:05"}
    assert type(back["i"]) is int and type(back["b"]) is bool


def test_times_bytes_decimals_tuples_and_sets(tmp_path):
    tz = dt.timezone(dt.timedelta(hours=5))
    record = {"at": dt.datetime(2024, 1, 1, 9, tzinfo=tz), "day": dt.date(2024, 1, 2), "clock": dt.time(7, 30),
              "raw": b"\t\x00\xff", "price": decimal.Decimal("1.10"), "pair": (1, "x"), "tags": {"b", "a"}}
    [back] = write(tmp_path, [record])
    assert back == {"at": "2024-01-01T09:00:00+05:00", "day": "2024-01-02", "clock": "07:30:00",
                    "raw": base64.b64encode(b"\t\x00\xff").decode(), "price": "1.10", "pair": [1, "x"],
                    "tags": ["a", "b"]}
    assert dt.datetime.fromisoformat(back["at"]) == record["at"]
    assert decimal.Decimal(back["price"]) == record["price"] and str(decimal.Decimal(back["price"])) == "1.10"


def test_plain_records_are_written_as_before(tmp_path):
    records = [{"k": "a", "n": 1, "x": 0.5, "ok": None, "l": [1, {"z": 2}]}, ("t", 1), 3, "s"]
    assert write(tmp_path, records) == [records[0], ["t", 1], 3, "s"]


def test_a_value_json_cannot_hold_fails_naming_the_record_and_the_field(tmp_path):
    record = {"k": 1, "nested": {"ids": [1, uuid.UUID(int=7)]}}
    with pytest.raises(UserCodeError, match=r"write_jsonl\(.*\): field \['nested'\]\['ids'\]\[1\] holds UUID "
                                            r"UUID\('00000000-0000-0000-0000-000000000007'\), which JSON cannot hold") as info:
        write(tmp_path, [{"k": 0}, record])
    assert info.value.record == record
    assert not list(tmp_path.glob("part-*"))


def test_a_record_json_cannot_hold_at_all_is_named(tmp_path):
    with pytest.raises(UserCodeError, match=r"the record holds timedelta"):
        write(tmp_path, [dt.timedelta(seconds=1)])
