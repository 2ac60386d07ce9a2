"""The drill's ``fail-state`` fault fails the state writes of its checkpoint, not the fence a
new job master writes into that checkpoint's directory when it takes the job over
(``chk-<n>/_abandoned``): failing the fence too made every takeover of such a seed fail by
construction (seed 63 of ``--workload statefun-remote``: 'cannot fence the incomplete
checkpoint 2'). No Ray."""

from __future__ import annotations

from benchmarks.drill import plan_seed


def _fail_state_rules():
    rules = [(f.detail, r) for seed in range(80) for f in plan_seed(seed).faults if f.kind == "fail-state" for r in f.rules]
    assert rules
    return rules


def test_fail_state_hits_the_checkpoints_state_files_but_not_a_takeovers_fence():
    base = "/tmp/drill/seed/chk/drill-1-abc"
    for chk, rule in _fail_state_rules():
        assert rule.matches("write_state", [f"{base}/{chk}/drill-functions-dispatcher-5e81/1-0-keyed"])
        assert rule.matches("write_state", [f"{base}/{chk}/final/0-0-9e28"])
        assert not rule.matches("write_state", [f"{base}/{chk}/_abandoned"])
        assert not rule.matches("write_state", [f"{base}/chk-99/op-dir/1-0-keyed"])
