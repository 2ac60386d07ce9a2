"""``env.generate(..., linger_ms=)`` reaches its :class:`GeneratorSource` (before, only the
source class took it, so a job built with ``env.generate`` always cut batches after the
default 50 ms: on a loaded machine a CPU-bound ``fn`` then gave batch boundaries, and so
watermarks and late records, that changed from run to run)."""

from __future__ import annotations

import pytest

import raystream as rs
from raystream.engine.errors import ConfigError
from raystream.operators.sources import DEFAULT_LINGER_MS, GeneratorSource


def _source(stream: rs.DataStream) -> GeneratorSource:
    source = stream.node.source
    assert isinstance(source, GeneratorSource)
    return source


def test_generate_passes_linger_ms_to_its_source():
    env = rs.StreamEnvironment(parallelism=1)
    assert _source(env.generate(lambda i: i, count=10)).linger_ms == DEFAULT_LINGER_MS
    assert _source(env.generate(lambda i: i, count=10, linger_ms=3_600_000)).linger_ms == 3_600_000


@pytest.mark.parametrize("bad", [-1, float("inf"), "50", True])
def test_generate_refuses_a_linger_that_is_no_time(bad):
    env = rs.StreamEnvironment(parallelism=1)
    with pytest.raises(ConfigError, match="linger_ms"):
        env.generate(lambda i: i, count=10, linger_ms=bad)
