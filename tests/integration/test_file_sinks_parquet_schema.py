"""``write_parquet`` in a job: a nullable field None in every record of the first source batch
and strings later is one string column (it failed: ``coupon: string does not match the
file's schema coupon: null``); a field of strings and ints fails naming both types."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import raystream as rs


@pytest.mark.parametrize("parallelism", [1, 2])
def test_a_field_none_in_the_first_batch_then_strings(tmp_path, parallelism):
    records = [{"k": i, "coupon": None if i < 4 else f"c{i}"} for i in range(10)]
    env = rs.StreamEnvironment(parallelism=parallelism)
    env.from_collection(records, batch_size=4).write_parquet(str(tmp_path))
    env.execute("nullable")
    table = pq.read_table(tmp_path)
    assert table.schema.field("coupon").type == pa.string()
    assert sorted(table.to_pylist(), key=lambda r: r["k"]) == records


def test_strings_then_ints_in_one_field_fail_naming_the_field_and_both_types(tmp_path):
    env = rs.StreamEnvironment()
    env.from_collection([{"k": 0, "x": "a"}, {"k": 1, "x": 7}], batch_size=1).write_parquet(str(tmp_path))
    with pytest.raises(rs.JobFailed, match=r"write_parquet.*field 'x' is int64 in this batch and string in the batches before"):
        env.execute("mixed")
