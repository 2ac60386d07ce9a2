"""``write_jsonl`` writes strict JSON: a NaN or infinite float is written as ``null`` (as
``JSON.stringify`` and pandas' ``to_json`` do), wherever it is (no Ray).

Before, ``json.dumps`` wrote them bare (``{"x": NaN}``, ``Infinity``), which is not JSON:
``jq``, JavaScript's ``JSON.parse``, Spark and every strict reader refused the file."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from raystream.engine.errors import UserCodeError
from raystream.engine.sink_operator import SinkOperator
from raystream.operators.sinks import JsonLinesSink
from raystream.operators.testing import OperatorHarness


def strict_loads(line: str):
    """``json.loads`` refusing what RFC 8259 has not (Python's accepts NaN and Infinity)."""
    def refuse(name):
        raise ValueError(f"not JSON: {name}")
    return json.loads(line, parse_constant=refuse)


def write(tmp_path, records: list) -> list:
    sink = JsonLinesSink(str(tmp_path))
    harness = OperatorHarness(SinkOperator(sink))
    harness.process(records)
    sink.create_committer().commit([c for cs in harness.end_input().committables.values() for c in cs])
    return [strict_loads(line) for f in sorted(tmp_path.glob("part-*.jsonl")) for line in f.read_text().splitlines()]


def test_nan_and_infinities_are_written_as_null(tmp_path):
    records = [{"x": 1.5, "y": float("nan")}, {"x": float("inf"), "y": -math.inf}, {"x": 2.0, "y": 3.0}]
    assert write(tmp_path, records) == [{"x": 1.5, "y": None}, {"x": None, "y": None}, {"x": 2.0, "y": 3.0}]


def test_numpy_and_nested_non_finite_values_too(tmp_path):
    record = {"f32": np.float32("nan"), "f64": np.float64("-inf"), "arr": np.array([1.0, np.nan, np.inf]),
              "nested": {"l": [1.0, float("nan")], "t": (float("inf"), 2)}, "s": {float("nan")}}
    assert write(tmp_path, [record]) == [{"f32": None, "f64": None, "arr": [1.0, None, None],
                                         "nested": {"l": [1.0, None], "t": [None, 2]}, "s": [None]}]


def test_plain_floats_and_scalar_records(tmp_path):
    assert write(tmp_path, [0.25, float("nan"), 1e308, float("-inf")]) == [0.25, None, 1e308, None]


def test_a_value_json_cannot_hold_next_to_a_nan_still_fails_naming_its_field(tmp_path):
    with pytest.raises(UserCodeError, match=r"field \['o'\] holds object"):
        write(tmp_path, [{"x": float("nan"), "o": object()}])
