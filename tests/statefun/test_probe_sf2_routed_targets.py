"""``with_routed_ingress(..., targets=["t/nobody"])``: a target no function of the job takes
was found only when a message reached the dispatcher (FunctionNotFound, after the job had
started, possibly long after). The targets are now checked against the function types as
the job runs them (embedded typenames, remote endpoints; a ``namespace/*`` endpoint takes
any name of its namespace): by ``StatefulFunctionsJob.execute()`` before the job is
submitted, and by each ingress task as it opens (a job started with ``env.execute()``),
before any record is routed. Functions and endpoints added after the ingress count."""

from __future__ import annotations

import pytest

import raystream as rs
from raystream.engine.config import JobConfig
from raystream.engine.errors import GraphError, JobFailed
from raystream.engine.local_runtime import run_in_process
from raystream.engine.records import arrow_to_records
from raystream.statefun_api import (
    IntType,
    StatefulFunctions,
    StringType,
    egress_message_builder,
    remote_endpoint,
)
from raystream.statefun_api.job import StatefulFunctionsJob

PAIRS = [(f"k{i % 7}", i) for i in range(40)]


def _job(parallelism: int, targets: list[str]) -> tuple[rs.StreamEnvironment, StatefulFunctionsJob, StatefulFunctions]:
    env = rs.StreamEnvironment(parallelism=parallelism)
    functions = StatefulFunctions()

    @functions.bind("t/f")
    def f(context, message):
        context.send_egress(egress_message_builder("t/out", f"{context.address.id}:{message.as_int()}", StringType))

    sf = StatefulFunctionsJob(env, functions)
    sf.with_routed_ingress(env.from_collection(PAIRS), targets, IntType)
    return env, sf, functions


def _not_submitted(monkeypatch, env: rs.StreamEnvironment) -> list[str]:
    submitted: list[str] = []
    monkeypatch.setattr(env, "execute", lambda name="job", *a, **k: submitted.append(name))
    return submitted


def test_execute_refuses_an_unknown_target_before_submitting(monkeypatch) -> None:
    env, sf, _ = _job(1, ["t/f", "t/nobody"])
    submitted = _not_submitted(monkeypatch, env)
    with pytest.raises(GraphError) as err:
        sf.execute()
    text = str(err.value)
    assert "routed ingress 'statefun-ingress' (reading 'from_collection')" in text
    assert "function type 't/nobody'" in text and "the job has: t/f)" in text
    assert "remote_endpoint('t/nobody' or 't/*', url)" in text
    assert submitted == []


@pytest.mark.parametrize("parallelism", [1, 2])
def test_a_job_started_with_env_execute_fails_as_the_ingress_opens(parallelism: int) -> None:
    env, sf, _ = _job(parallelism, ["t/nobody"])
    sf.egress_stream("t/out").collect()
    with pytest.raises(JobFailed) as err:
        run_in_process(env.get_job_graph(), JobConfig(name="routed-targets"), timeout_s=120)
    text = str(err.value)
    assert "routed ingress 'statefun-ingress' sends every record to function type 't/nobody'" in text
    assert "the job has: t/f)" in text


def test_remote_namespaces_and_typenames_take_their_targets(monkeypatch) -> None:
    env, sf, _ = _job(1, ["t/f", "remote/any-name", "other/exact"])
    sf.with_endpoint(remote_endpoint("remote/*", "http://localhost:1/{function.name}"))
    sf.with_endpoint(remote_endpoint("other/exact", "http://localhost:1/exact"))
    submitted = _not_submitted(monkeypatch, env)
    sf.execute("checked")
    assert submitted == ["checked"]
    env2, sf2, _ = _job(1, ["other/not-exact"])
    sf2.with_endpoint(remote_endpoint("other/exact", "http://localhost:1/exact"))
    _not_submitted(monkeypatch, env2)
    with pytest.raises(GraphError, match=r"'other/not-exact', which no function of the job takes \(the job has: other/exact, t/f\)"):
        sf2.execute()


@pytest.mark.parametrize("parallelism", [1, 2])
def test_a_function_registered_after_the_ingress_runs(parallelism: int) -> None:
    env, sf, functions = _job(parallelism, ["t/f", "t/late"])

    @functions.bind("t/late")
    def late(context, message):
        context.send_egress(egress_message_builder("t/out", f"late {context.address.id}", StringType))

    sf.egress_stream("t/out").collect()
    result = run_in_process(env.get_job_graph(), JobConfig(name="routed-late"), timeout_s=120)
    got = sorted(r for batches in result["results"].values() for b in batches for r in arrow_to_records(b))
    assert got == sorted([f"{k}:{v}" for k, v in PAIRS] + [f"late {k}" for k, _ in PAIRS])
