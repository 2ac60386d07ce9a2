"""The routed ingress's Arrow message batches share their constant columns between batches of
one size (statefun_api.ingress._repeated): batches of changing sizes, several targets and
value types still hold exactly the records the tuple path makes, and the shared columns are
bounded in number."""

from __future__ import annotations

from itertools import repeat

from raystream.engine.records import Batch, arrow_to_records
from raystream.statefun_api.ingress import RoutedIngress, _repeated
from raystream.statefun_api.types import IntType, StringType


def test_batches_of_changing_sizes_hold_the_records_of_the_tuple_path():
    ops = [RoutedIngress(["demo/a"], IntType), RoutedIngress(["demo/a", "demo/b"], IntType),
           RoutedIngress(["demo/c"], StringType)]
    for size in (300, 5, 300, 1, 17, 300, 2, 5):
        for op in ops:
            value = 7 if op.value_type is IntType else "v"
            batch = Batch.of_records(list(zip((f"id{i}" for i in range(size)), repeat(value))))
            columnar = op.route_batch(batch, columnar=True)
            assert columnar.is_arrow
            assert arrow_to_records(columnar.arrow()) == op.route_batch(batch).records()


def test_the_shared_constant_columns_are_bounded():
    for size in range(1, 40):
        _repeated("demo/x", size)
    assert _repeated.cache_info().currsize <= 8
    assert _repeated("demo/x", 3).to_pylist() == ["demo/x"] * 3
    assert _repeated(True, 3).to_pylist() == [True] * 3
