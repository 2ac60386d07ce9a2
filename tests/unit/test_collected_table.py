"""``execute_and_collect(as_table=True)`` of records that crossed the channels pickled to
stay exact gives the typed table those records used to give."""

from __future__ import annotations

import datetime as dt
import enum

import pyarrow as pa

from raystream.engine.records import records_to_arrow
from raystream.operators.sinks import collected_records, collected_table


class Level(enum.IntEnum):
    LOW = 1


def test_pickled_batches_become_typed_columns_and_the_records_stay_exact():
    utc = dt.timezone.utc
    records = [{"at": dt.datetime(2024, 1, 1, tzinfo=utc), "level": Level.LOW, "n": 1}]
    batches = [records_to_arrow(records), records_to_arrow([{"at": dt.datetime(2024, 1, 2, tzinfo=utc), "level": 2, "n": 2}])]
    table = collected_table(batches)
    assert table.schema.field("at").type == pa.timestamp("us", tz="UTC")
    assert table.column("level").to_pylist() == [1, 2] and table.column("n").to_pylist() == [1, 2]
    assert collected_records(batches[:1]) == records and collected_records(batches[:1])[0]["level"] is Level.LOW


def test_records_of_no_typed_form_stay_a_column_of_pickled_values():
    table = collected_table([records_to_arrow([{"a": 1}, {"a": [1, 2], "b": 2}])])
    assert table.column_names == ["record"]
    assert collected_table([]).num_rows == 0
