"""PyFlink's state TTL spelling runs as written: ``StateTtlConfig.new_builder(Time.seconds(1))
.set_update_type(...).set_state_visibility(...).build()`` and ``descriptor.enable_time_to_live(cfg)``
(before, a ported ``KeyedProcessFunction.open`` failed the job: ``type object 'StateTtlConfig' has
no attribute 'new_builder'``)."""

from __future__ import annotations

import datetime as dt

import pytest

import raystream as rs
from raystream.checkpoint import ListStateDescriptor, StateTtlConfig, ValueStateDescriptor
from raystream.engine.errors import ConfigError
from raystream.engine.operator import ManualClock
from raystream.operators import Time
from raystream.operators.testing import OperatorHarness


class LastSeen(rs.KeyedProcessFunction):
    """The PyFlink docs' pattern: the TTL is enabled on the descriptor in ``open``."""

    def __init__(self, on_read: bool = False) -> None:
        self.on_read = on_read

    def open(self, runtime_context):
        builder = StateTtlConfig.new_builder(Time.seconds(1))
        if self.on_read:
            builder = builder.set_update_type(StateTtlConfig.UpdateType.OnReadAndWrite)
        else:
            builder = builder.set_update_type(StateTtlConfig.UpdateType.OnCreateAndWrite)
        ttl_config = (builder.set_state_visibility(StateTtlConfig.StateVisibility.NeverReturnExpired)
                      .cleanup_full_snapshot().build())
        descriptor = ValueStateDescriptor("count")
        descriptor.enable_time_to_live(ttl_config)
        self.count = runtime_context.get_state(descriptor)

    def process_element(self, value, ctx):
        n = (self.count.value() or 0) + 1
        self.count.update(n)
        yield value, n


def harness(fn: rs.KeyedProcessFunction) -> OperatorHarness:
    env = rs.StreamEnvironment()
    stream = env.from_collection(["a"]).key_by(lambda v: v)
    return OperatorHarness(stream.process(fn).node.operator_factory(), clock=ManualClock(0))


def test_a_pyflink_ttl_config_expires_a_keys_state_after_its_ttl():
    h = harness(LastSeen())
    h.process(["a", "b"])
    h.clock.advance(999)
    h.process(["a"])  # a write: a's timestamp is refreshed, b's is not
    h.clock.advance(999)
    h.process(["a", "b"])  # b expired 1 s after its only write
    assert h.records() == [("a", 1), ("b", 1), ("a", 2), ("a", 3), ("b", 1)]


def test_on_read_and_write_refreshes_on_reads():
    cfg = StateTtlConfig.new_builder(Time.seconds(1)).update_ttl_on_read_and_write().build()
    assert (cfg.ttl_ms, cfg.update_type, cfg.return_expired) == (1000, "on_read_and_write", False)
    h = harness(LastSeen(on_read=True))
    h.process(["a"])
    h.clock.advance(1500)
    h.process(["a"])
    assert h.records() == [("a", 1), ("a", 1)]


def test_the_builders_settings_map_onto_the_config():
    cfg = (StateTtlConfig.new_builder(dt.timedelta(minutes=1))
           .return_expired_if_not_cleaned_up().cleanup_incrementally(10, True)
           .cleanup_in_rocksdb_compact_filter(1000).use_processing_time().build())
    assert cfg == StateTtlConfig(60_000, return_expired=True, cleanup_size=10)
    assert StateTtlConfig.Builder(5).set_ttl(7).never_return_expired().build() == StateTtlConfig(7)
    d = ListStateDescriptor("buffer")
    d.enable_time_to_live(cfg)
    assert d.ttl is cfg


@pytest.mark.parametrize("make, words", [
    (lambda: StateTtlConfig.new_builder(0).build(), "ttl_ms must be a positive int, got 0"),
    (lambda: StateTtlConfig.new_builder(1).set_update_type("OnReadAndWrite"), "takes a StateTtlConfig.UpdateType"),
    (lambda: StateTtlConfig.new_builder(1).set_update_type(StateTtlConfig.UpdateType.Disabled), "needs no TTL"),
    (lambda: StateTtlConfig.new_builder(1).set_state_visibility(True), "takes a StateTtlConfig.StateVisibility"),
    (lambda: StateTtlConfig.new_builder(1).cleanup_incrementally(-1).build(), "cleanup_size must be an int >= 0"),
    (lambda: ValueStateDescriptor("v").enable_time_to_live(1000), "ttl of state 'v' must be a StateTtlConfig"),
    (lambda: ValueStateDescriptor("v").enable_time_to_live(None), "needs a StateTtlConfig, got None"),
])
def test_wrong_settings_are_refused_naming_them(make, words):
    with pytest.raises(ConfigError, match=words.replace("(", r"\(")):
        make()
