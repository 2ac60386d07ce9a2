"""Delayed messages keep state only while they are pending.

Each sender of a delayed message kept its ``statefun.delay-seq`` counter in keyed state
forever, after all its delayed messages had fired or been cancelled: a job whose functions
are addressed by session or order ids and remind themselves once grew its memory and every
checkpoint by one entry per id ever seen (20,000 sessions: +330 KB of snapshot a round).
"""

from __future__ import annotations

import pickle
from datetime import timedelta

import pytest

from raystream.engine.operator import ManualClock
from raystream.statefun_api import (
    StatefulFunctions,
    StringType,
    egress_message_builder,
    message_builder,
)
from raystream.statefun_api.local import LocalDispatchers
from raystream.statefun_api.state_layout import DELAY_SEQ_STATE, DELAYED_STATE

SESSION = "t/session"
OUT = "t/out"


def sessions() -> StatefulFunctions:
    """A session reminds itself twice (once with a token it may cancel), then is done."""
    fns = StatefulFunctions()

    @fns.bind(SESSION)
    def session(context, message):
        command = message.as_string()
        if command == "start":
            context.send_after(timedelta(seconds=1), message_builder(SESSION, context.address.id, str_value="remind"))
            context.send_after(
                timedelta(seconds=2), message_builder(SESSION, context.address.id, str_value="last"), cancellation_token="last"
            )
        elif command == "stop":
            context.cancel_delayed_message("last")
        else:
            context.send_egress(egress_message_builder(OUT, f"{context.address.id}:{command}", StringType))

    return fns


def kept_keys(run: LocalDispatchers, state: str) -> int:
    return sum(len(list(op.backend.keys(state))) for op in run.dispatchers)


@pytest.mark.parametrize("parallelism", [1, 2])
def test_senders_whose_delayed_messages_fired_or_were_cancelled_keep_no_state(parallelism: int) -> None:
    with LocalDispatchers(sessions(), parallelism=parallelism, egresses=[OUT]) as run:
        sizes = []
        for round_ in range(3):
            ids = [f"s{round_}-{i}" for i in range(2_000)]
            run.send(*[message_builder(SESSION, i, str_value="start") for i in ids])
            run.send(*[message_builder(SESSION, i, str_value="stop") for i in ids[::2]])  # half cancel
            run.advance(3_000)
            assert run.is_idle() and sum(op.pending_delayed() for op in run.dispatchers) == 0
            assert kept_keys(run, DELAYED_STATE) == 0
            assert kept_keys(run, DELAY_SEQ_STATE) == 0
            sizes.append(len(pickle.dumps(run.snapshot())))
        assert sizes[2] <= sizes[0] + 1_000, sizes  # checkpoints do not grow with the senders seen
        expected = sorted(
            f"s{r}-{i}:{what}" for r in range(3) for i in range(2_000) for what in (("remind",) if i % 2 == 0 else ("remind", "last"))
        )
        assert sorted(run.egress(OUT)) == expected


def test_a_sender_starts_its_sequence_again_and_keeps_order_across_a_restore() -> None:
    """Messages sent after the sequence was forgotten still fire once each, in order of
    their times and, at equal times, of their sending, also after a rescaled restore."""
    fns = StatefulFunctions()

    @fns.bind("t/f")
    def f(context, message):
        command = message.as_string()
        if command.startswith("send:"):
            for n in command[5:].split(","):
                context.send_after(timedelta(seconds=1), message_builder("t/f", context.address.id, str_value=f"fire-{n}"))
        else:
            context.send_egress(egress_message_builder(OUT, command, StringType))

    run = LocalDispatchers(fns, parallelism=2, egresses=[OUT])
    run.send(message_builder("t/f", "a", str_value="send:1,2"))
    run.advance(1_500)  # both fired: the sequence of "a" is forgotten
    assert kept_keys(run, DELAY_SEQ_STATE) == 0
    run.send(message_builder("t/f", "a", str_value="send:3,4,5"))
    restored = LocalDispatchers.restore(fns, run.snapshot(), parallelism=3, egresses=[OUT], clock=ManualClock(1_500))
    restored.advance(2_000)
    assert run.egress(OUT) == ["fire-1", "fire-2"]
    assert restored.egress(OUT) == ["fire-3", "fire-4", "fire-5"]
    assert kept_keys(restored, DELAY_SEQ_STATE) == 0
    run.close()
    restored.close()
