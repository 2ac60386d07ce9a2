"""The dispatcher's active set holds two mailbox steps' worth of messages (``2 * drain_step``):
messages to one address that arrive within two steps are invoked together (one load and
store of its values), in their order (a step still invokes at most ``drain_step``:
tests/statefun/test_statefun_dispatcher.py::test_drain_step_bounds_work_per_mailbox_step)."""

from __future__ import annotations

import pytest

from raystream.statefun_api import IntType, StatefulFunctions, ValueSpec, message_builder
from raystream.statefun_api.local import LocalDispatchers


def _recording_functions(seen: list[tuple[str, int]]) -> StatefulFunctions:
    functions = StatefulFunctions()

    @functions.bind("test/f", specs=[ValueSpec("n", IntType)])
    def f(context, message):
        context.storage.n = (context.storage.n or 0) + 1
        seen.append((context.address.id, message.as_int()))

    return functions


@pytest.mark.parametrize("parallelism", [1, 2])
def test_messages_to_one_address_within_two_steps_are_one_invocation(parallelism):
    seen: list[tuple[str, int]] = []
    run = LocalDispatchers(_recording_functions(seen), parallelism=parallelism, drain_step=4)
    ids = ["a", "b", "c", "d", "a", "e", "f", "a"]  # "a" in the first step's messages and the second's
    run.send(*[message_builder("test/f", fid, int_value=i) for i, fid in enumerate(ids)])
    assert [v for fid, v in seen if fid == "a"] == [0, 4, 7]
    assert sorted(seen) == sorted((fid, i) for i, fid in enumerate(ids))
    assert [run.state("test/f", fid, "n") for fid in "abcdef"] == [3, 1, 1, 1, 1, 1]
    if parallelism == 1:  # (at p=2 each subtask has its own active set)
        assert run.counters()["invocations"] == 6  # one for "a", one for each other address

