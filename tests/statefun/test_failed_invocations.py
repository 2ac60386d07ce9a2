"""A failed invocation is all or nothing, also when the dispatcher goes on: none of its
effects (state, messages, delayed messages, egress) appear, ever; its messages stay queued
at the head of the address's queue, so every later run retries them from the same state and
fails again with the same error until they succeed (as a job restarting from a checkpoint
replays them). Checked on both storage paths (values in plain slots, values through cells)
and on the storage slots themselves: a rejected assignment is never taken as the slot's value."""

from __future__ import annotations

from datetime import timedelta

import pytest

from raystream.engine.errors import UserCodeError
from raystream.statefun_api import (
    IntType,
    StatefulFunctions,
    StringType,
    ValueSpec,
    egress_message_builder,
    make_json_type,
    message_builder,
)
from raystream.statefun_api.local import LocalDispatchers
from raystream.statefun_api.queued_state import restored_messages
from raystream.statefun_api.storage import StorageSlots

SPECS = {
    "fast": ValueSpec("n", IntType),  # a plain slot, checked when the address is stored
    "cell": ValueSpec("n", IntType, expire_after_write=timedelta(hours=1)),  # through its cell, checked at the assignment
    "json": ValueSpec("n", make_json_type("test/N")),  # another type: serialized at the assignment
}
BAD = {"fast": 2**40, "cell": 2**40, "json": object()}  # out of an int's range / not JSON


def _functions(spec: ValueSpec, bad: object, broken: list[bool]) -> StatefulFunctions:
    """``test/f`` emits an egress, sends a message to ``test/g``, sends a delayed message to
    ``test/g`` and assigns ``bad`` to its state while ``broken[0]`` (else 1); ``test/g``
    reports what it got on the egress."""
    functions = StatefulFunctions()

    @functions.bind("test/f", specs=[spec])
    def f(context, message):
        context.send_egress(egress_message_builder("test/out", "f", StringType))
        context.send(message_builder("test/g", "x", str_value="sent by f"))
        context.send_after(timedelta(seconds=1), message_builder("test/g", "x", str_value="delayed by f"), "t")
        context.storage.n = bad if broken[0] else 1

    @functions.bind("test/g")
    def g(context, message):
        context.send_egress(egress_message_builder("test/out", "g got: " + message.as_string(), StringType))

    return functions


@pytest.mark.parametrize("path", sorted(SPECS))
@pytest.mark.parametrize("parallelism", [1, 2])
def test_a_failed_invocation_fails_again_with_the_same_error_and_has_no_effects(path, parallelism):
    run = LocalDispatchers(_functions(SPECS[path], BAD[path], [True]), parallelism=parallelism, egresses=["test/out"])
    with pytest.raises(UserCodeError) as first:
        run.send(message_builder("test/f", "a", str_value="go"))
    assert "state 'n'" in str(first.value.original) and "'test/f'" in str(first.value.original)
    for retry in (
        lambda: run.send(message_builder("test/g", "y", str_value="later")),  # an unrelated message
        run.run,
        lambda: run.advance(5_000),
    ):
        with pytest.raises(UserCodeError) as again:
            retry()
        assert str(again.value.original) == str(first.value.original)
        assert run.egress("test/out") == []  # neither f's egress nor what its messages would cause
        assert run.state("test/f", "a", "n") is None
        assert not run.is_idle()  # the failed messages are still queued
    run.close()


@pytest.mark.parametrize("path", sorted(SPECS))
def test_a_failed_invocation_that_succeeds_on_retry_has_its_effects_once(path):
    broken = [True]
    run = LocalDispatchers(_functions(SPECS[path], BAD[path], broken), egresses=["test/out"])
    with pytest.raises(UserCodeError):
        run.send(message_builder("test/f", "a", str_value="go"))
    with pytest.raises(UserCodeError):
        run.send(message_builder("test/g", "y", str_value="later"))  # queued behind the failed invocation
    broken[0] = False  # the cause went away (a transient failure)
    run.run_until_idle()
    assert sorted(run.egress("test/out")) == ["f", "g got: delayed by f", "g got: later", "g got: sent by f"]
    assert run.state("test/f", "a", "n") == 1
    assert run.counters()["invocations"] == 4  # f once (the failed attempt is not counted), g three times
    run.close()


def test_a_snapshot_after_a_failed_invocation_holds_its_messages():
    broken = [True]
    functions = _functions(SPECS["fast"], BAD["fast"], broken)
    run = LocalDispatchers(functions, egresses=["test/out"])
    with pytest.raises(UserCodeError):
        run.send(message_builder("test/f", "a", str_value="go"))
    state = run.dispatchers[0].snapshot_state(1)
    assert [r[:2] for r in restored_messages([state])[0]] == [("test/f", "a")]
    run.close()


def test_a_duplicate_cancellation_token_applies_nothing_of_the_invocation():
    """The token is checked before anything of the invocation is applied: its state, its
    messages and its egress (not only the delayed message) are withheld."""
    functions = StatefulFunctions()

    @functions.bind("test/d", specs=[ValueSpec("n", IntType)])
    def d(context, message):
        context.storage.n = (context.storage.n or 0) + 1
        context.send(message_builder("test/e", "x", str_value="from d"))
        context.send_egress(egress_message_builder("test/out", f"d{context.storage.n}", StringType))
        context.send_after(timedelta(seconds=10), message_builder("test/e", "x", str_value="later"), "tok")

    @functions.bind("test/e")
    def e(context, message):
        context.send_egress(egress_message_builder("test/out", message.as_string(), StringType))

    run = LocalDispatchers(functions, egresses=["test/out"])
    run.send(message_builder("test/d", "a", str_value="1"))
    assert run.egress("test/out") == ["d1", "from d"]
    with pytest.raises(UserCodeError, match="'tok'.*still pending"):
        run.send(message_builder("test/d", "a", str_value="2"))
    assert run.egress("test/out") == ["d1", "from d"]
    assert run.state("test/d", "a", "n") == 1
    run.close()


# ------------------------------------------------------------------ the storage slots
class _Handle:
    def __init__(self, value: object) -> None:
        self.v = value

    def value(self) -> object:
        return self.v


@pytest.mark.parametrize("direct", [False, True])
def test_a_rejected_value_in_a_fast_slot_is_rejected_again_when_stored_again(direct):
    """A value the check refused is not recorded as the slot's value: storing the address
    again (without loading it) checks it again instead of taking it as unchanged."""
    table: dict[int, dict[str, object]] = {0: {"k": ("io.statefun.types/int", 7)}}
    slots = StorageSlots("test/f", (ValueSpec("n", IntType),), [_Handle(("io.statefun.types/int", 7))])
    if direct:
        slots.bind_tables([table], set())
    storage = slots.load_at(0, "k") if direct else slots.load()
    storage.n = 2**40
    for _ in range(2):
        with pytest.raises(ValueError, match="state 'n' of function 'test/f'"):
            slots.store_at(0, "k") if direct else slots.changes()
    assert table == {0: {"k": ("io.statefun.types/int", 7)}}
    storage.n = 8  # a valid value after all
    if direct:
        slots.store_at(0, "k")
        assert table == {0: {"k": ("io.statefun.types/int", 8)}}
    else:
        assert [value for _h, value in slots.changes()] == [("io.statefun.types/int", 8)]


def test_a_rejected_none_in_a_fast_slot_is_rejected_again():
    slots = StorageSlots("test/f", (ValueSpec("n", IntType),), [_Handle(("io.statefun.types/int", 7))])
    storage = slots.load()
    storage.n = None  # `None` where a value exists: refused (use del)
    for _ in range(2):
        with pytest.raises(ValueError, match="del context.storage.n"):
            slots.changes()
