"""A generated source that holds back its second part until the test opens a gate: a
stop-with-savepoint taken while it waits is mid-run whatever the machine's speed (a rate
alone is not: under load the job can end before the savepoint is taken)."""

from __future__ import annotations

import os
from typing import Any, Callable

import raystream as rs
from raystream.engine.connectors import NOTHING_AVAILABLE, PollResult
from raystream.operators.sources import GeneratorSource, _GeneratorReader
from tests.waiting import wait_for


class GatedGeneratorSource(GeneratorSource):
    """``GeneratorSource(fn, count, rate, batch_size)`` whose subtasks emit no index at or
    beyond ``pause_at`` until the file ``gate`` exists (None: no gate). While paused a
    subtask serves checkpoints and savepoints as usual; pausing, it creates the file
    ``<gate>.<tag>.<split>.paused`` (see :func:`wait_until_paused`)."""

    def __init__(self, fn: Callable[[int], Any], count: int, rate: float | None, batch_size: int,
                 gate: str | None, pause_at: int, tag: str) -> None:
        super().__init__(fn, count=count, rate=rate, batch_size=batch_size)
        self.gate, self.pause_at, self.tag = gate, pause_at, tag

    def create_reader(self, ctx: Any) -> _GatedReader:
        return _GatedReader(self)


class _GatedReader(_GeneratorReader):
    def poll_next(self) -> PollResult:
        src = self.source
        assert isinstance(src, GatedGeneratorSource)
        if (src.gate is not None and self.splits and self.splits[0].position >= src.pause_at
                and not os.path.exists(src.gate)):
            marker = f"{src.gate}.{src.tag}.{self.splits[0].split_id}.paused"
            if not os.path.exists(marker):
                open(marker, "w").close()
            return NOTHING_AVAILABLE
        return super().poll_next()


def generate(env: rs.StreamEnvironment, fn: Callable[[int], Any], count: int, rate: float | None, batch_size: int,
             gate: str | None = None, tag: str = "source", pause_at: int | None = None) -> rs.DataStream:
    """``env.generate(fn, count=..., rate=..., batch_size=...)``, paused at ``pause_at``
    (default: half of ``count``) until ``gate`` exists."""
    source = GatedGeneratorSource(fn, count, rate, batch_size, gate, count // 2 if pause_at is None else pause_at, tag)
    return env.from_source(source, name="generate")


def wait_until_paused(gate: str, splits: int, timeout_s: float = 120.0) -> None:
    """Wait until ``splits`` source subtasks paused at ``gate`` (a condition, polled)."""
    folder, name = os.path.split(gate)

    def paused() -> bool:
        return sum(f.startswith(name + ".") and f.endswith(".paused") for f in os.listdir(folder)) >= splits

    wait_for(paused, f"{splits} source subtasks paused at {gate}", timeout_s)
