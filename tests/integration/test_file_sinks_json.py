"""``write_jsonl`` in a job keeps numpy values numbers (the sink chained to its source gets
them as they were made) and fails naming the record for a value JSON cannot hold."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest

import raystream as rs


def test_numpy_values_of_a_chained_source_are_written_as_numbers(tmp_path):
    env = rs.StreamEnvironment()
    env.generate(lambda i: {"v": np.int64(i), "f": np.float64(i) / 2, "at": dt.date(2024, 1, 1 + i)}, count=3).write_jsonl(str(tmp_path))
    env.execute("numpy jsonl")
    rows = sorted((json.loads(line) for f in tmp_path.glob("part-*.jsonl") for line in f.read_text().splitlines()),
                  key=lambda r: r["v"])
    assert rows == [{"v": i, "f": i / 2, "at": f"2024-01-0{1 + i}"} for i in range(3)]


def test_a_value_json_cannot_hold_fails_the_job_naming_record_and_field(tmp_path):
    env = rs.StreamEnvironment()
    env.from_collection([{"k": 1, "wait": dt.timedelta(seconds=2)}]).write_jsonl(str(tmp_path))
    with pytest.raises(rs.JobFailed, match=r"write_jsonl.*field \['wait'\] holds timedelta") as info:
        env.execute("bad jsonl")
    assert "'wait'" in str(info.value.record)
