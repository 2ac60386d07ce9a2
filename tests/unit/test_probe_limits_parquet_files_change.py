"""``read_parquet`` over files that change after the job was planned: a file replaced by one
of other row groups, or deleted, fails naming it (no Ray).

Before, a file rewritten with fewer rows was read as it now was (the new rows came out as if
they were the planned row group) and then failed with pyarrow's ``ArrowInvalid: Some index in
row_group_indices is 1, which is either < 0 or >= num_row_groups(1)``, naming no file."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raystream.engine.connectors import END_OF_INPUT
from raystream.operators.sources import ParquetSource


def planned_reader(path: Path):
    source = ParquetSource(str(path))
    reader = source.create_reader(None)
    reader.add_splits(source.create_splits(1))
    return reader


def read_all(reader) -> list:
    out: list = []
    while (b := reader.poll_next()) is not END_OF_INPUT:
        out.extend(r["a"] for r in b.records())
    return out


def test_a_file_rewritten_with_other_row_groups_fails_naming_it_before_reading_them(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"a": list(range(100))}), path, row_group_size=10)
    reader = planned_reader(path)
    pq.write_table(pa.table({"a": [-1] * 5}), path)
    with pytest.raises(ValueError, match=rf"read_parquet: {path} changed since the job was planned: its row "
                                         r"group 0 had 10 rows, the file now has 5 rows"):
        read_all(reader)


def test_a_file_with_fewer_row_groups_fails_naming_it(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"a": list(range(100))}), path, row_group_size=10)
    reader = planned_reader(path)
    assert reader.poll_next() is not END_OF_INPUT  # row group 0 read (and held)
    pq.write_table(pa.table({"a": list(range(10))}), path)  # one row group of 10 rows
    reader.close()  # (the reader opens the file again)
    with pytest.raises(ValueError, match=r"its row group 1 had 10 rows, the file now has only 1 row group"):
        read_all(reader)


def test_a_file_deleted_after_planning_fails_naming_it(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"a": [1, 2]}), path)
    reader = planned_reader(path)
    path.unlink()
    with pytest.raises(FileNotFoundError, match=rf"read_parquet: input file {path} no longer exists"):
        read_all(reader)


def test_files_left_alone_read_as_before(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"a": list(range(100))}), path, row_group_size=7)
    assert read_all(planned_reader(path)) == list(range(100))
