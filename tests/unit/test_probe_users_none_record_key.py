"""A ``None`` record reaching a ``key_by`` (a map function that forgot its ``return``) is named
in the job's error, with what made it. Before, the message left the record out (``key_by('k')
into operator 'sum' cannot take the key: TypeError: 'NoneType' object is not subscriptable``):
None doubled as "no record found"."""

from __future__ import annotations

import pytest

import raystream as rs
from raystream.engine.config import JobConfig
from raystream.engine.errors import JobFailed
from raystream.engine.local_runtime import run_in_process


def enrich(record):
    record["seen"] = True  # (no return: the map makes None a record)


@pytest.mark.parametrize("key", ["k", lambda r: r["k"]], ids=["column", "function"])
def test_a_none_record_at_a_key_by_is_named_with_the_likely_cause(key):
    env = rs.StreamEnvironment(parallelism=2)
    env.from_collection([{"k": 1}, {"k": 2}]).map(enrich).key_by(key).reduce(lambda a, b: a).collect()
    with pytest.raises(JobFailed) as err:
        run_in_process(env.get_job_graph(), JobConfig(name="none-record"), timeout_s=120)
    message = str(err.value)
    assert "cannot take the key of record None" in message
    assert "a map function without a return?" in message
    assert err.value.record == "None"
