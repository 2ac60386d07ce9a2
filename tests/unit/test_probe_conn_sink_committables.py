"""A sink writer's ``prepare_commit`` must return a list; anything else fails at the sink.

The job master commits what ``prepare_commit`` returns. Before, a writer that returned None
(a forgotten ``return``) had its output dropped without a word when checkpointing was on (the
job finished, 0 of 100 records committed) and failed with a bare Ray traceback from the job
master when it was off; a bare committable (not in a list) failed in the master, and a bare
tuple was taken apart, its fields committed one by one as committables. Now the sink operator
refuses it at once, naming the writer, the sink and what it returned.
"""

from __future__ import annotations

from typing import Any

import pytest

from raystream.engine.connectors import Committer, Sink, SinkWriter
from raystream.engine.records import Batch
from raystream.engine.sink_operator import SinkOperator
from raystream.operators.testing import OperatorHarness


class _Writer(SinkWriter[Any]):
    def __init__(self, returns: Any) -> None:
        self.returns = returns
        self.rows: list = []

    def write(self, batch: Batch) -> None:
        self.rows.extend(batch.records())

    def prepare_commit(self, checkpoint_id: int | None) -> Any:
        rows, self.rows = self.rows, []
        return self.returns(rows)


class _Committer(Committer[Any]):
    def commit(self, committables: list) -> None:
        pass


class _Sink(Sink[Any]):
    def __init__(self, returns: Any) -> None:
        self.returns = returns

    def create_writer(self, ctx: Any) -> SinkWriter[Any]:
        return _Writer(self.returns)

    def create_committer(self) -> Committer[Any]:
        return _Committer()

    def describe(self) -> str:
        return "my-sink"


BAD = {
    "None": (lambda rows: None, "got NoneType: None"),
    "a bare committable": (lambda rows: {"rows": rows}, r"got dict: \{'rows': \[1, 2, 3\]\}"),
    "a bare tuple": (lambda rows: ("part-0.tmp", "part-0.json"), r"got tuple: \('part-0.tmp', 'part-0.json'\)"),
}


@pytest.mark.parametrize("case", list(BAD))
@pytest.mark.parametrize("at", ["end of input", "checkpoint"])
def test_prepare_commit_returning_no_list_fails_naming_the_sink(case, at):
    returns, got = BAD[case]
    h = OperatorHarness(SinkOperator(_Sink(returns)))
    h.process([1, 2, 3])
    with pytest.raises(TypeError, match=rf"_Writer.prepare_commit\(\) of sink 'my-sink' must return a list .*{got}"):
        h.end_input() if at == "end of input" else h.snapshot()


def test_a_list_of_committables_is_handed_over_as_it_is():
    h = OperatorHarness(SinkOperator(_Sink(lambda rows: [tuple(rows)] if rows else [])))
    h.process([1, 2])
    h.snapshot()  # (a checkpoint takes [(1, 2)])
    h.process([3])
    assert list(h.end_input().committables.values()) == [[(3,)]]
