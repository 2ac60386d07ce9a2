"""The generated ``store_at`` of :class:`StorageSlots` (``storage._table_access``) writes an
int held decoded only when it is in its spec's range: a one-digit int takes the short test,
any other int the full range of ``IntType`` (int32) or ``LongType`` (int64); a value out of
range, or a ``bool``, goes through the cell and fails as the assignment does, with nothing
of the address written. One value and two values (whose code differs: an unchanged value
is skipped) are both checked at each boundary."""

from __future__ import annotations

from typing import Any

import pytest

from raystream.statefun_api import IntType, LongType, StringType, ValueSpec
from raystream.statefun_api.storage import StorageSlots

INT_OK = [0, -1, 0x3FFFFFFF, -0x3FFFFFFF, 0x40000000, -0x40000000, 0x40000001, (1 << 31) - 1, -(1 << 31)]
INT_BAD = [1 << 31, -(1 << 31) - 1, 1 << 40, True]
LONG_OK = [0x40000000, -0x40000000, (1 << 31), (1 << 63) - 1, -(1 << 63)]
LONG_BAD = [1 << 63, -(1 << 63) - 1, False]


def _slots(specs: list[ValueSpec]) -> tuple[StorageSlots, list[dict[int, dict[Any, Any]]]]:
    tables: list[dict[int, dict[Any, Any]]] = [{} for _ in specs]
    slots = StorageSlots("t/f", tuple(specs), [None] * len(specs))
    slots.bind_tables(tables, set())
    return slots, tables


def _store(slots: StorageSlots, value: Any, other: str | None = None) -> None:
    storage: Any = slots.load_at(5, ("t/f", "a"))
    storage.n = value
    if other is not None:
        storage.s = other
    slots.store_at(5, ("t/f", "a"))


@pytest.mark.parametrize("two", [False, True], ids=["one value", "two values"])
@pytest.mark.parametrize(
    "tpe, value, ok",
    [(IntType, v, True) for v in INT_OK] + [(IntType, v, False) for v in INT_BAD]
    + [(LongType, v, True) for v in LONG_OK] + [(LongType, v, False) for v in LONG_BAD],
)
def test_an_int_is_written_decoded_only_in_its_specs_range(tpe: Any, value: int, ok: bool, two: bool) -> None:
    specs = [ValueSpec("n", tpe)] + ([ValueSpec("s", StringType)] if two else [])
    slots, tables = _slots(specs)
    if ok:
        _store(slots, value)
        stored = tables[0][5][("t/f", "a")]
        assert stored == (tpe.typename, value) and type(stored[1]) is int
        _store(slots, value)  # (the same value again)
        assert tables[0][5][("t/f", "a")] == (tpe.typename, value)
    else:
        with pytest.raises((TypeError, ValueError), match=r"state 'n' of function 't/f'"):
            _store(slots, value, "x" if two else None)
        assert all(not table.get(5) for table in tables), "nothing of the address is written"
