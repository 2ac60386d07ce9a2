"""records -> Arrow without a per-value type check for columns whose inferred Arrow type
proves their values were of one Python type (int64, bool, string), and with it for the
others (double, binary: pyarrow would coerce ints or str)."""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import zoneinfo

import numpy as np
import pyarrow as pa
import pytest

from raystream.engine.records import KIND_KEY, Batch, arrow_to_records, records_to_arrow


def _typed(records: list) -> list:
    return [[(k, type(v), v) for k, v in r.items()] if isinstance(r, dict) else [(type(v), v) for v in r]
            for r in records]


@pytest.mark.parametrize("records", [
    [{"a": 1, "b": "x", "c": True}, {"a": None, "b": None, "c": False}],
    [(1, "x", False), (2, "y", None)],
])
def test_int_bool_string_columns_are_typed_without_a_per_value_check(records):
    rb = records_to_arrow(records)
    assert rb.schema.metadata[KIND_KEY] in (b"row", b"tuple")
    assert [f.type for f in rb.schema] == [pa.int64(), pa.string(), pa.bool_()]
    assert _typed(arrow_to_records(rb)) == _typed(records)


@pytest.mark.parametrize("records", [
    [{"v": 1}, {"v": 2.5}],  # pyarrow would make a double column: 1 -> 1.0
    [{"v": 2.5}, {"v": True}],
    [{"v": b"x"}, {"v": "y"}],  # a binary column: "y" -> b"y"
    [(1.5, "a"), (2, "b")],
    [("a", b"x"), ("b", "y")],
])
def test_columns_that_arrow_would_coerce_keep_their_python_types(records):
    back = arrow_to_records(records_to_arrow(records))
    assert _typed(back) == _typed(records)


def test_numpy_integers_among_ints_come_back_as_ints():
    """As a column of numpy integers alone always did (int64 is exact for their values)."""
    records = [{"v": 1}, {"v": np.int64(2)}, {"v": np.int32(3)}]
    back = arrow_to_records(records_to_arrow(records))
    assert back == [{"v": 1}, {"v": 2}, {"v": 3}]
    assert {type(r["v"]) for r in back} == {int}


class Level(enum.IntEnum):
    LOW = 1


class Colour(str, enum.Enum):
    RED = "red"


class Tag(str):
    pass


UTC = dt.timezone.utc
PLUS2 = dt.timezone(dt.timedelta(hours=2))


def _exactly(records: list) -> list:
    """Each value with its type and repr: equal records that print differently differ."""
    return [[(k, type(v), repr(v)) for k, v in r.items()] if isinstance(r, dict)
            else [(type(v), repr(v)) for v in r] if isinstance(r, tuple) else (type(r), repr(r)) for r in records]


@pytest.mark.parametrize("values", [
    [Level.LOW, Level.LOW],  # int64 would give back 1
    [Colour.RED, None],  # string would give back "red"
    [Tag("x"), "y"],
    [dt.datetime(2024, 1, 1, tzinfo=UTC), dt.datetime(2024, 1, 2, tzinfo=UTC)],  # back as ZoneInfo('UTC')
    [dt.datetime(2024, 1, 1, tzinfo=PLUS2), dt.datetime(2024, 1, 1, tzinfo=UTC)],  # both in +02:00
    [dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 1, tzinfo=UTC)],  # the zone dropped
    [dt.time(1, tzinfo=UTC), None],  # the zone dropped
    [decimal.Decimal("1.1"), decimal.Decimal("1.25")],  # 1.1 back as 1.10
    [decimal.Decimal("1E+30"), None],  # back as 1000...0
    ["a", "\ud800"],  # a surrogate (os.fsdecode of a name that is not UTF-8): Arrow raised
    [dt.datetime(2024, 1, 1), float("nan")],  # pyarrow raised ValueError
], ids=["IntEnum", "str-Enum", "str-subclass", "utc", "two-zones", "naive-and-aware", "aware-time", "decimal-scales",
        "decimal-exponent", "surrogate", "datetime-and-nan"])
@pytest.mark.parametrize("shape", ["dict", "tuple", "scalar"])
def test_values_that_arrow_would_change_come_back_exactly(values, shape):
    records = {"dict": [{"k": v, "n": i} for i, v in enumerate(values)],
               "tuple": [(v, i) for i, v in enumerate(values)],
               "scalar": values}[shape]
    back = arrow_to_records(records_to_arrow(records))
    assert _exactly(back) == _exactly(records)


@pytest.mark.parametrize("values, arrow_type", [
    ([dt.datetime(2024, 1, 1), None], pa.timestamp("us")),
    ([dt.date(2024, 1, 1), dt.date(2024, 1, 2)], pa.date32()),
    ([dt.time(1, 2), dt.time(3)], pa.time64("us")),
    ([dt.timedelta(seconds=1.5), None], pa.duration("us")),
    ([decimal.Decimal("1.10"), decimal.Decimal("2.25")], pa.decimal128(3, 2)),
    ([1.5, None, 2.0], pa.float64()),
    ([b"x", b""], pa.binary()),
])
def test_values_that_come_back_as_they_were_stay_typed_columns(values, arrow_type):
    records = [{"k": v} for v in values]
    rb = records_to_arrow(records)
    assert rb.schema.metadata[KIND_KEY] == b"row" and rb.schema.field("k").type == arrow_type
    assert _exactly(arrow_to_records(rb)) == _exactly(records)


@pytest.mark.parametrize("values, arrow_type", [
    ([dt.datetime(2024, 1, 1, tzinfo=UTC), dt.datetime(2024, 1, 1, 2, tzinfo=PLUS2)], pa.timestamp("us", tz="UTC")),
    ([Level.LOW, 1], pa.int64()),
    ([decimal.Decimal("1.1"), decimal.Decimal("1.25")], pa.decimal128(3, 2)),
])
def test_columns_to_compute_on_are_typed_where_values_come_back_equal(values, arrow_type):
    """What ``arrow()`` pickles to stay exact, ``columns()`` (map_batches, vectorized
    aggregates and windows) types, and ``arrow()`` is left exact."""
    batch = Batch.of_records([{"k": v, "n": i} for i, v in enumerate(values)])
    assert batch.columns().schema.field("k").type == arrow_type
    assert batch.columns().column(0).to_pylist() == values
    assert batch.arrow().schema.metadata[KIND_KEY] == b"pickle"


def test_naive_and_aware_datetimes_are_not_typed_even_to_compute_on():
    batch = Batch.of_records([{"k": dt.datetime(2024, 1, 1)}, {"k": dt.datetime(2024, 1, 1, tzinfo=UTC)}])
    assert batch.columns().schema.metadata[KIND_KEY] == b"pickle"


def test_typed_batches_give_the_same_columns_to_compute_on():
    batch = Batch.of_records([{"k": 1, "s": "x"}])
    assert batch.columns() is batch.arrow()


def test_a_pickled_batch_from_a_channel_gives_typed_columns_to_compute_on():
    """What a receiver holds: the pickled Arrow batch, not the sender's records."""
    sent = Batch.of_records([{"k": Level.LOW, "at": dt.datetime(2024, 1, 1, tzinfo=UTC)}]).arrow()
    received = Batch.of_arrow(sent)
    assert received.columns().schema.field("at").type == pa.timestamp("us", tz="UTC")
    assert received.records()[0]["k"] is Level.LOW


BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")


@pytest.mark.parametrize("tz", [UTC, PLUS2, BERLIN], ids=["timezone.utc", "+02:00", "Europe/Berlin"])
def test_aware_datetimes_of_one_zone_travel_typed_and_come_back_in_their_zone(tz):
    """As a typed timestamp column (pickled, they cost ~13x more to send: 282 ms against 27
    for 65,536 records), the zone object kept in the column's metadata."""
    values = [dt.datetime(2024, 10, 27, 2, 30, tzinfo=tz), None, dt.datetime(2024, 3, 31, 12, tzinfo=tz)]
    if tz is BERLIN:  # the hour that repeats when the clocks go back, both times
        values.append(dt.datetime(2024, 10, 27, 2, 30, fold=1, tzinfo=tz))
    records = [{"at": v, "n": i} for i, v in enumerate(values)]
    rb = records_to_arrow(records)
    assert rb.schema.metadata[KIND_KEY] == b"row" and rb.schema.field("at").type.tz is not None
    back = arrow_to_records(rb)
    assert _exactly(back) == _exactly(records)
    assert [getattr(r["at"], "fold", None) for r in back] == [getattr(v, "fold", None) for v in values]
    assert all(r["at"] is None or r["at"].tzinfo == tz for r in back)  # (the same object for utc and ZoneInfo)


def test_aware_datetimes_of_two_zone_objects_travel_pickled():
    records = [{"at": dt.datetime(2024, 1, 1, tzinfo=UTC)}, {"at": dt.datetime(2024, 1, 1, tzinfo=BERLIN)}]
    rb = records_to_arrow(records)
    assert rb.schema.metadata[KIND_KEY] == b"pickle"
    assert _exactly(arrow_to_records(rb)) == _exactly(records)


class Perm(enum.IntFlag):
    R = 4
    W = 2


class Shade(str, enum.Enum):
    DARK = "dark"
    LIGHT = "light"


class Coded(int, enum.Enum):
    """Members whose value is not their int."""

    def __new__(cls, code):
        member = int.__new__(cls, code)
        member._value_ = code * 10
        return member

    A = 1


@pytest.mark.parametrize("values, arrow_type", [
    ([Level.LOW, None, Level.LOW], pa.int64()),
    ([Perm.R, Perm.R | Perm.W, Perm.W], pa.int64()),  # a combination is no member of its own
    ([Shade.DARK, Shade.LIGHT, None], pa.string()),
])
def test_enum_columns_travel_typed_and_come_back_as_the_same_members(values, arrow_type):
    """Pickled, records with an enum field cost ~9x to send (201 ms against 23 for 65,536
    records of four fields, and as much again to receive)."""
    records = [{"e": v, "n": i} for i, v in enumerate(values)]
    rb = records_to_arrow(records)
    assert rb.schema.metadata[KIND_KEY] == b"row" and rb.schema.field("e").type == arrow_type
    back = arrow_to_records(rb)
    assert _exactly(back) == _exactly(records)
    assert all(b["e"] is v or (v is not None and b["e"] == v and type(b["e"]) is type(v)) for b, v in zip(back, values))


def test_enums_whose_values_are_not_their_data_or_mixed_with_plain_values_travel_pickled():
    for values in ([Coded.A, Coded.A], [Level.LOW, 2], [Shade.DARK, "dark"]):
        rb = records_to_arrow([{"e": v} for v in values])
        assert rb.schema.metadata[KIND_KEY] == b"pickle", values
        assert _exactly(arrow_to_records(rb)) == _exactly([{"e": v} for v in values])


def test_a_local_enum_class_travels_by_value():
    class Local(enum.IntEnum):
        X = 7

    rb = records_to_arrow([{"e": Local.X}])
    assert rb.schema.metadata[KIND_KEY] == b"row"
    assert arrow_to_records(rb)[0]["e"] is Local.X


class Ratio(float, enum.Enum):
    HALF = 0.5


def test_a_float_enum_travels_pickled():
    """Only int and str Enums have their class kept with a typed column."""
    records = [{"e": Ratio.HALF}, {"e": Ratio.HALF}]
    rb = records_to_arrow(records)
    assert rb.schema.metadata[KIND_KEY] == b"pickle"
    assert arrow_to_records(rb)[0]["e"] is Ratio.HALF


@pytest.mark.parametrize("records", [
    [np.int64(1), np.int64(-2)], [np.uint64(2**64 - 1)], [np.int32(7)], [np.float32(1.5), np.float32(-0.25)],
    [np.float64(2.5)], [np.bool_(True), np.bool_(False)], [np.str_("a")],
])
def test_numpy_scalar_records_come_back_as_python_scalars_as_inside_dicts(records):
    """A numpy scalar inside a dict came back as a Python scalar; the same scalar as the
    record itself came back as numpy (pickled), unlike what the README says."""
    batch = records_to_arrow(records)
    assert batch.schema.names == ["value"]
    out = arrow_to_records(batch)
    assert out == [r.item() for r in records]
    assert [type(v) for v in out] == [type(r.item()) for r in records]
    assert arrow_to_records(records_to_arrow([{"v": r} for r in records])) == [{"v": v} for v in out]
