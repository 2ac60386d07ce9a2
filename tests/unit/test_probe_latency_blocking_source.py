"""A source whose records come slowly (a generator ``fn`` that waits for a sensor, a reader
that blocks until its next entry) must not hold a record until the ones after it are made.

Before, ``generate(fn)`` called ``fn`` ``batch_size`` (8192) times before the first record
left the source (a sensor read every 50 ms: nothing reached the sink for 7 minutes), and a
source task kept what a poll returned in its output buffer while the next poll blocked, so
each record waited for the next one (a Redis stream read with ``block_ms``, one entry every
300 ms: every record 300 ms late). Now a generator batch ends once making it took
``linger_ms``, and a source task sends what would be ``flush_ms`` old by the time the next
poll returns if it takes as long as the last one.

The job below checks it without measuring time: ``fn(i)`` waits until the sink has record
``i - 1``, so each record must reach the sink while the source is still making the next.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

import raystream as rs
from raystream.engine.config import JobConfig
from raystream.engine.connectors import END_OF_INPUT, Sink, SinkWriter
from raystream.engine.errors import ConfigError, JobFailed
from raystream.engine.keygroups import KeyGroupRange
from raystream.engine.local_runtime import run_in_process
from raystream.engine.operator import OperatorContext
from raystream.engine.records import Batch
from raystream.operators.sources import GeneratorSource

#: longer than the default linger_ms and flush_ms (50 ms): time.sleep sleeps at least this
#: long, so every call ends a generator batch and the task sends it before the next poll
SLOW_CALL_S = 0.08
COUNT = 6
_seen: set[int] = set()
_arrived = threading.Condition()


def _sensor(i: int) -> dict[str, int]:
    """Record ``i``, made only once record ``i - 1`` reached the sink (a sensor read that
    takes a while)."""
    if i > 0:
        with _arrived:
            if not _arrived.wait_for(lambda: i - 1 in _seen, timeout=20):
                raise AssertionError(f"record {i - 1} had not reached the sink 20 s after the source made it")
    time.sleep(SLOW_CALL_S)
    return {"key": i % 3, "i": i}


class _Recording(SinkWriter[Any]):
    def write(self, batch: Batch) -> None:
        with _arrived:
            _seen.update(r["i"] for r in batch.records())
            _arrived.notify_all()


class _RecordingSink(Sink[Any]):
    def create_writer(self, ctx: OperatorContext) -> SinkWriter[Any]:
        return _Recording()


class _PassOn(rs.KeyedProcessFunction):
    def process_element(self, value: Any, ctx: Any) -> Any:
        yield value


@pytest.mark.parametrize("parallelism", [1, 2])
def test_each_record_of_a_slow_generator_reaches_the_sink_before_the_next_is_made(parallelism: int) -> None:
    _seen.clear()
    env = rs.StreamEnvironment(parallelism=parallelism)
    (env.generate(_sensor, count=COUNT)
     .map(lambda r: r)
     .key_by("key")
     .process(_PassOn())
     .sink_to(_RecordingSink()))
    try:
        run_in_process(env.get_job_graph(), JobConfig(name="slow-sensor"), timeout_s=120)
    except JobFailed as err:  # the assertion inside _sensor
        pytest.fail(str(err.cause if err.cause is not None else err))
    assert _seen == set(range(COUNT))


def _reader_of(source: GeneratorSource) -> Any:
    ctx = OperatorContext("gen", "gen", "gen (1/1)", 0, 1, 128, KeyGroupRange(0, 127))
    reader = source.create_reader(ctx)
    reader.add_splits(source.create_splits(1))
    return reader


def test_a_generator_batch_ends_once_making_it_took_linger_ms() -> None:
    def slow(i: int) -> int:
        time.sleep(SLOW_CALL_S)  # > linger_ms: every call ends its batch
        return i

    reader = _reader_of(GeneratorSource(slow, count=3))
    batches = []
    while (b := reader.poll_next()) is not END_OF_INPUT:
        batches.append(b.records())
    assert batches == [[0], [1], [2]]
    # a fast fn still fills whole batches; positions resume exactly after a cut batch
    reader = _reader_of(GeneratorSource(lambda i: i, count=10, batch_size=4, linger_ms=60_000))
    assert reader.poll_next().records() == [0, 1, 2, 3]
    reader = _reader_of(GeneratorSource(lambda i: i, count=5, linger_ms=0))  # one call per batch
    out = []
    while (b := reader.poll_next()) is not END_OF_INPUT:
        assert len(b) == 1
        out.extend(b.records())
        (split,) = reader.snapshot_state(1)
        assert split.position == out[-1] + 1
    assert out == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf"), "50", True])
def test_a_bad_linger_ms_is_a_config_error_naming_it(bad: Any) -> None:
    with pytest.raises(ConfigError, match="linger_ms"):
        GeneratorSource(lambda i: i, linger_ms=bad)
