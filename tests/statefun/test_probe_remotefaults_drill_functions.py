"""The drill's remote-functions workload (``benchmarks.drill_remote``) without Ray: its plans,
and its function server (a process of its own, injecting faults) answering the drill's
functions for two in-process dispatcher subtasks (LocalDispatchers), whose egress must equal
the failure-free reference under every fault the runtime is meant to survive; a refused
address must fail naming it."""

from __future__ import annotations

import pytest

pytest.importorskip("aiohttp")

from benchmarks.drill import (  # noqa: E402
    _EGRESS_TYPE,
    EGRESS,
    FUNCTION_PARALLELISM,
    LATE,
    _late,
    _route,
    plan_seed,
    record,
    remote_seed_plan,
    statefun_reference,
)
from benchmarks.drill_remote import SERVER_FAULTS, FunctionServerProcess, RemoteFault, endpoints  # noqa: E402
from raystream.engine.errors import JobFailed  # noqa: E402
from raystream.statefun_api import IntType, StatefulFunctions, ValueSpec  # noqa: E402
from raystream.statefun_api.local import LocalDispatchers  # noqa: E402

#: an attempt silent this long is retried (a slow machine's replies too: harmless); no call
#: fails before its 60 s call timeout, so a slow machine only makes more attempts
READ_TIMEOUT_S = 0.3


def _embedded() -> StatefulFunctions:
    functions = StatefulFunctions()
    functions.bind(LATE, specs=[ValueSpec("k", IntType)])(_late)
    return functions


def _run(server: FunctionServerProcess, n: int, tmp_path, between=None) -> list[tuple]:
    with LocalDispatchers(_embedded(), parallelism=FUNCTION_PARALLELISM, egresses={EGRESS: _EGRESS_TYPE},
                          endpoints=endpoints(server.url, call_timeout_s=60.0, read_timeout_s=READ_TIMEOUT_S),
                          inbox_memory_bytes=2048, spill_dir=str(tmp_path),
                          drain_step=8) as run:
        for start in range(0, n, 50):
            run.send(*(_route(record(i)) for i in range(start, start + 50)))
            if between is not None:
                between(start)
            run.run_until_idle()
        return [tuple(r) for r in run.egress(EGRESS)]


def test_remote_plans_are_deterministic_and_cover_every_server_fault():
    plans = [remote_seed_plan(seed) for seed in range(40)]
    assert plans == [remote_seed_plan(seed) for seed in range(40)]
    kinds = {f.kind for p in plans for f in p.remote} | {f.kind for p in plans for f in p.faults}
    assert set(SERVER_FAULTS) | {"kill-server"} <= kinds
    for seed, plan in enumerate(plans):
        base = plan_seed(seed)
        assert (plan.sink, plan.parallelism, plan.timeout_ms) == (base.sink, base.parallelism, base.timeout_ms)
        if plan.refused_address is not None:  # the job must fail: nothing is killed
            assert all(f.at_record is None for f in plan.faults)
        else:
            assert [f for f in plan.faults if f.kind != "kill-server"] == list(base.faults)


@pytest.mark.parametrize("kind", ["raystream", "sdk"])
def test_the_remote_functions_give_the_reference_egress_under_server_faults(tmp_path, kind):
    if kind == "sdk":
        pytest.importorskip("statefun")
    faults = (RemoteFault("http-5xx", 3, times=4), RemoteFault("reset", 8, times=2), RemoteFault("cut", 12, times=2),
              RemoteFault("slow-read", 16, delay=0.6))
    server = FunctionServerProcess(tmp_path, faults, spare=False, kind=kind)
    server.start()
    try:
        got = _run(server, 150, tmp_path)
    finally:
        server.stop()
    assert sorted(got) == sorted(statefun_reference(150))
    assert server.injected() == {"http-5xx": 4, "reset": 2, "cut": 2, "slow-read": 1}


def test_the_function_server_killed_and_started_again_loses_and_duplicates_nothing(tmp_path):
    server = FunctionServerProcess(tmp_path, (), spare=False)  # (started again from scratch: down a while)
    server.start()

    def kill_then_start(start: int) -> None:
        if start == 50:  # with the next 50 messages queued: their requests meet a dead server
            server.kill()
            server.start()

    try:
        got = _run(server, 150, tmp_path, kill_then_start)
    finally:
        server.stop()
    assert sorted(got) == sorted(statefun_reference(150))
    assert server.injected() == {"kill-server": 1}


def test_a_refused_address_fails_naming_the_address_and_the_reply(tmp_path):
    server = FunctionServerProcess(tmp_path, (RemoteFault("refuse-address", 1, address="k05"),), spare=False)
    server.start()
    try:
        with pytest.raises(JobFailed) as info:
            _run(server, 100, tmp_path)
    finally:
        server.stop()
    text = str(info.value)
    assert "drill/counter/k05" in text and "HTTP 400 (not retried)" in text and "address k05 refused" in text
