"""``flat_map`` sends its output in pieces of about ``buffer_bytes``, also from within one
record's results when the function returns a generator: a record that fans out into a million
records holds about one piece in memory, and back-pressure applies between the pieces (Flink's
``Collector``). Before, the whole output of a batch was one list: one record fanned into
1,000,000 records of ~500 bytes peaked at 827 MB in its task."""

from __future__ import annotations

import itertools

import pytest

from raystream.engine.errors import UserCodeError
from raystream.operators.basic import FlatMapOperator
from raystream.operators.testing import CollectingOutput, OperatorHarness


class CountingGenerator:
    """fn(n) yields n records of ``size`` bytes; notes how many it has yielded so far when
    each emitted piece arrives downstream (how far ahead of the output it ran)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.yielded = 0

    def __call__(self, n: int):  # noqa: ANN204
        for i in range(n):
            self.yielded += 1
            yield b"x" * self.size + i.to_bytes(4, "big")


def run(fn, records, buffer_bytes: int) -> tuple[OperatorHarness, list[int]]:
    h = OperatorHarness(FlatMapOperator(fn), open=False)
    h.task.spec.config.buffer_bytes = buffer_bytes
    h.open()
    h.process(records)
    return h, [len(b) for b in h.output.batches]


def test_one_record_fanning_out_goes_out_in_pieces_of_about_buffer_bytes() -> None:
    fn = CountingGenerator(1000)
    h, pieces = run(fn, [20_000], buffer_bytes=100_000)
    assert sum(pieces) == 20_000 and fn.yielded == 20_000
    assert pieces[0] == FlatMapOperator.FIRST_PIECE_ROWS  # before any size is known
    assert max(pieces[1:]) <= 100  # then ~100,000 bytes / ~1,000 bytes a record
    got = [r for b in h.output.batches for r in b.records()]
    assert got == list(fn.__class__(1000)(20_000))  # all of them, in order


def test_the_generator_runs_at_most_a_piece_ahead_of_the_output() -> None:
    fn = CountingGenerator(100)
    ahead: list[int] = []

    class Noting(CollectingOutput):
        def emit(self, batch):  # noqa: ANN001, ANN202
            ahead.append(fn.yielded - sum(len(b) for b in self.batches) - len(batch))
            super().emit(batch)

    h = OperatorHarness(FlatMapOperator(fn), open=False, output=Noting())
    h.task.spec.config.buffer_bytes = 10_000
    h.open()
    h.process([5_000])
    assert len(ahead) > 10 and max(ahead) == 0  # nothing yielded beyond the piece being emitted


def test_small_records_of_many_input_records_are_few_large_pieces() -> None:
    h, pieces = run(lambda s: s.split(), ["a b c d e f g h"] * 4000, buffer_bytes=8 << 20)
    assert sum(pieces) == 32_000 and len(pieces) <= 3
    assert [r for b in h.output.batches for r in b.records()] == list("abcdefgh") * 4000


def test_lists_none_and_iterables_are_all_taken() -> None:
    def fn(r):  # noqa: ANN001, ANN202
        return None if r == 0 else [r] * r if r % 2 else (x for x in itertools.repeat(r, r))

    h, _ = run(fn, list(range(8)), buffer_bytes=8 << 20)
    assert [r for b in h.output.batches for r in b.records()] == [r for r in range(8) for _ in range(r)]


@pytest.mark.parametrize("when", ["call", "iteration"])
def test_an_error_names_the_record_whether_the_call_or_the_generator_raised(when) -> None:
    def fn(r):  # noqa: ANN001, ANN202
        if when == "call" and r == 2:
            raise ValueError("bad")

        def gen():  # noqa: ANN202
            yield r
            if r == 2:
                raise ValueError("bad")
        return gen()

    h = OperatorHarness(FlatMapOperator(fn))
    with pytest.raises(UserCodeError) as err:
        h.process([1, 2, 3])
    assert err.value.record == 2 and isinstance(err.value.original, ValueError)
