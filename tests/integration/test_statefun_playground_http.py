"""The flink-statefun-playground greeter of release 3.2+ on Ray, through its own module.yaml:
messages PUT to the playground ingress, greetings read from the playground egress over HTTP.

``GREETER_FUNCTIONS`` is the playground's ``python/greeter/functions.py`` of release-3.3 (its
greeter sends ``{"topic": "greetings", "payload": ...}`` records to the egress
``io.statefun.playground/egress``), license header dropped (made from the release-3.1 file and
the two hunks that differ), the simulated 1 s of work shortened to 10 ms. It runs served by the official SDK through the playground's own aiohttp app
(remote) and with only ``from statefun import *`` changed (embedded). The module.yaml is the
playground's, with the function host and the two ports replaced by the test's.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from typing import Any

import pytest
import ray

import raystream as rs
from raystream.checkpoint.faults import FaultRule, faulty_filesystem, read_fault_log
from raystream.statefun_api import StatefulFunctions
from raystream.statefun_api.job import StatefulFunctionsJob
from raystream.statefun_api.playground import PlaygroundEgress, PlaygroundIngress
from raystream.statefun_api.testing import FunctionServer
from tests.integration.test_fault_tolerance import make_env
from tests.ports import free_ports
from tests.statefun.test_playground_io import GREETER_MODULE_YAML
from tests.statefun.test_playground_io import request as call
from tests.statefun.test_statefun_playground import PLAYGROUND_FUNCTIONS, playground_module
from tests.statefun.test_statefun_playground import expected_greetings as kafka_greetings

pytest.importorskip("statefun")
pytest.importorskip("aiohttp")

# the release-3.3 functions.py is the release-3.1 one (tests/statefun/test_statefun_playground.py)
# with the greeter writing to the playground egress instead of Kafka: these are its two changes
KAFKA_EGRESS = """\
    context.send_egress(kafka_egress_message(typename="example/greets",
                                             topic="greetings",
                                             key=person_name,
                                             value=greeting))
"""
PLAYGROUND_EGRESS = """\
    egress_record = {
        "topic": "greetings",
        "payload": greeting
    }

    context.send_egress(egress_message_builder(target_typename="io.statefun.playground/egress",
                                             value=egress_record,
                                             value_type=EGRESS_RECORD_TYPE))
"""
GREET_TYPE = 'GREET_REQUEST_TYPE = make_json_type(typename="example/GreetRequest")\n'
GREETER_FUNCTIONS = PLAYGROUND_FUNCTIONS.replace(KAFKA_EGRESS, PLAYGROUND_EGRESS).replace(
    GREET_TYPE, GREET_TYPE + 'EGRESS_RECORD_TYPE = make_json_type(typename="io.statefun.playground/EgressRecord")\n')
assert GREETER_FUNCTIONS.count("io.statefun.playground/") == 2  # (both changes applied)

NAMES = ["Bob", "Ann", "Bob", "Bob", "Cid", "Bob", "Ann", "Bob"]


def greeter_module(sdk: str) -> dict:
    return playground_module(sdk, GREETER_FUNCTIONS)


def expected_greetings(names: list[str]) -> list[str]:
    """The greetings StateFun gives, as the payloads the playground egress hands out (sorted)."""
    return sorted(record.value.decode() for record in kafka_greetings(names))


def put_greet_request(port: int, name: str, client: rs.JobClient, answers: dict) -> None:
    """``curl -X PUT -H "Content-Type: application/vnd.example/GreetRequest" -d '{"name": ...}'
    localhost:PORT/example/person/NAME``, again until the job's ingress is up and answers."""
    body = json.dumps({"name": name}).encode()
    while True:
        try:
            status, text = call(port, "PUT", f"/example/person/{name}", body,
                                {"Content-Type": "application/vnd.example/GreetRequest"})
        except (ConnectionError, http.client.RemoteDisconnected):  # the source task is not listening (yet, again)
            if client.status() not in ("CREATED", "RUNNING", "RESTARTING"):
                answers[name] = ("job ended", client.status())
                return
            time.sleep(0.02)
            continue
        if status == 503:  # the job restarted before the message was durable, or the ingress is full: again
            time.sleep(0.01)
            continue
        answers.setdefault(name, []).append((status, text))
        return


def read_greetings(port: int, count: int, client: rs.JobClient, timeout_s: float = 120.0) -> list[str]:
    """``curl -X GET localhost:PORT/greetings`` until ``count`` greetings came."""
    out: list[str] = []
    deadline = time.monotonic() + timeout_s
    while len(out) < count and time.monotonic() < deadline:
        try:
            status, body = call(port, "GET", "/greetings")
        except (ConnectionError, http.client.RemoteDisconnected):
            status, body = 0, b""  # (the sink task is starting or restarting)
        if status == 200:
            out.append(body.decode())
        else:
            assert status in (0, 404), (status, body)
            assert client.status() in ("CREATED", "RUNNING", "RESTARTING"), client.status()
            time.sleep(0.02)
    return sorted(out)


def run_greeter(tmp_path, env: rs.StreamEnvironment, functions: StatefulFunctions, url: str,
                during=None, ingress_options: dict | None = None) -> tuple[list[str], dict, dict]:
    """Run the greeter through the playground's module.yaml (``ingress_options``: bind the
    playground ingress by hand with these options, and the egress as the file declares it).
    Returns the greetings read, the answers to the PUTs by name, and the job's ``info()`` with
    the ingress's metrics under ``"playground_ingress"``."""
    ingress_port, egress_port = free_ports(2)
    path = tmp_path / "module.yaml"
    path.write_text(GREETER_MODULE_YAML.replace("http://functions:8000", url)
                    .replace("port: 8090", f"port: {ingress_port}").replace("port: 8091", f"port: {egress_port}"))
    sf = StatefulFunctionsJob(env, functions, name="greeter")
    if ingress_options is None:
        sf.with_module_yaml(str(path))
    else:
        sf.with_module_yaml(str(path), playground=False)
        sf.with_playground_ingress(PlaygroundIngress(ingress_port, **ingress_options))
        sf.with_playground_egress(PlaygroundEgress(egress_port, ["greetings"]))
    assert sf.egresses == ["io.statefun.playground/egress"]
    client = env.execute_async("playground-greeter")
    answers: dict = {}
    try:
        for name in NAMES:  # the requests of one name one after the other (their order is the visits')
            t = threading.Thread(target=put_greet_request, args=(ingress_port, name, client, answers), daemon=True)
            t.start()
            t.join()  # (sequential: a greeting depends on how many came before)
            if during is not None and name == NAMES[len(NAMES) // 2]:
                during(client)
        greetings = read_greetings(egress_port, len(NAMES), client)
        extra = call(egress_port, "GET", "/greetings")  # (all were durable before the reads began)
        ops = client.metrics()["operators"]
        info = dict(client.info())
    finally:
        client.cancel()
    assert extra == (404, b""), f"a greeting more than was sent: {extra}"
    ingress = ops[f"playground-ingress:{ingress_port}"]
    egress = next(m for name, m in ops.items() if name.startswith("egress io.statefun.playground/egress"))
    # (counted per attempt: a restarted task counts again from 0)
    assert ingress["playground_pending"] == 0 and 1 <= ingress["playground_messages"] <= len(NAMES), ingress
    assert egress["playground_held"] == 0 and 1 <= egress["playground_read"] <= len(NAMES), egress
    info["playground_ingress"] = ingress
    return greetings, answers, info


@pytest.mark.parametrize("mode", ["embedded", "remote"])
def test_the_playground_greeter_runs_unchanged_through_its_module_yaml(tmp_path, mode):
    ns = greeter_module("statefun" if mode == "remote" else "raystream.statefun_api")
    env = make_env(2, tmp_path, interval_ms=100)
    if mode == "embedded":
        greetings, answers, _info = run_greeter(tmp_path, env, ns["functions"], "http://unused:1")
    else:
        with FunctionServer(ns["app"]) as server:  # the playground's own aiohttp app
            greetings, answers, _info = run_greeter(tmp_path, env, StatefulFunctions(), server.url)
    assert {name: len(a) for name, a in answers.items()} == {name: NAMES.count(name) for name in NAMES}
    assert all(a == (200, b"") for got in answers.values() for a in got)
    assert greetings == expected_greetings(NAMES)


def test_a_killed_task_loses_no_greeting_and_shows_none_twice(tmp_path):
    """The job restarts from a checkpoint in the middle: every PUT answered 200 is greeted
    exactly once (a PUT the restart caught gets 503 and is sent again)."""
    ns = greeter_module("raystream.statefun_api")
    env = make_env(2, tmp_path, interval_ms=100)
    graph = env  # (the vertices are known once the job graph is built: after with_module_yaml)

    def kill_the_dispatcher(client: rs.JobClient) -> None:
        vertex = next(i for i, v in enumerate(graph.get_job_graph().vertices) if v.name == "greeter")
        attempt = client.info()["attempt"]
        ray.kill(client.task_actor(vertex, 0), no_restart=True)
        while client.info()["attempt"] == attempt:  # the restart began
            time.sleep(0.02)

    greetings, answers, info = run_greeter(tmp_path, env, ns["functions"], "http://unused:1", during=kill_the_dispatcher)
    assert info["restarts"] >= 1
    assert greetings == expected_greetings(NAMES)


# ---------------------------------------------------------------- raystream.jobs.statefun_app
def test_the_statefun_app_job_runs_a_module_yaml_with_embedded_functions_from_a_file(tmp_path):
    """``raystream run raystream.jobs.statefun_app -- module.yaml --functions functions.py``
    (the job module's build, on the session's Ray): the greeter file with the import changed."""
    from raystream.jobs import statefun_app

    functions_py = tmp_path / "functions.py"
    functions_py.write_text(GREETER_FUNCTIONS.replace("await asyncio.sleep(1)", "await asyncio.sleep(0.01)")
                            .replace("from statefun import *", "from raystream.statefun_api import *"))
    ingress_port, egress_port = free_ports(2)
    module_yaml = tmp_path / "module.yaml"
    module_yaml.write_text(GREETER_MODULE_YAML.replace("port: 8090", f"port: {ingress_port}")
                           .replace("port: 8091", f"port: {egress_port}"))
    env = rs.StreamEnvironment(parallelism=2)
    statefun_app.build(env, statefun_app.parse_args([str(module_yaml), "--functions", str(functions_py)]))
    client = env.execute_async(statefun_app.JOB_NAME)
    answers: dict = {}
    try:
        for name in NAMES:
            put_greet_request(ingress_port, name, client, answers)
        greetings = read_greetings(egress_port, len(NAMES), client)
    finally:
        client.cancel()
    assert greetings == expected_greetings(NAMES)


def test_the_statefun_app_job_explains_what_it_cannot_run(tmp_path):
    from raystream.engine.errors import ConfigError
    from raystream.jobs import statefun_app

    sdk_file = tmp_path / "functions.py"
    sdk_file.write_text(GREETER_FUNCTIONS)  # unchanged: the official SDK's functions
    kafka_only = tmp_path / "module.yaml"
    kafka_only.write_text("kind: io.statefun.endpoints.v2/http\nspec:\n  functions: example/*\n"
                          "  urlPathTemplate: http://localhost:8000/statefun\n")
    with pytest.raises(ConfigError, match="official StateFun SDK's .* change the import to `from raystream.statefun_api import"):
        statefun_app.build(rs.StreamEnvironment(), statefun_app.parse_args([str(kafka_only), "--functions", str(sdk_file)]))
    with pytest.raises(ConfigError, match="no io.statefun.playground.v1/ingress document, so nothing would feed the functions"):
        statefun_app.build(rs.StreamEnvironment(), statefun_app.parse_args([str(kafka_only)]))
    with pytest.raises(ConfigError, match="--functions: no file"):
        statefun_app.build(rs.StreamEnvironment(), statefun_app.parse_args([str(kafka_only), "--functions", "missing.py"]))


# ---------------------------------------------------------------- slow and failing checkpoint storage
STORAGE_FAULTS = {
    # the state writes of checkpoints 2 and 4 fail: they are declined, later ones cover their messages
    "declined": [FaultRule("write_state", path_glob="*/chk-2", fail=True),
                 FaultRule("write_state", path_glob="*/chk-4", fail=True)],
    # a fifth of the state writes fail at random, the others are slow
    "flaky": [FaultRule("write_state", fail_probability=0.2),
              FaultRule("write_state", delay_s=0.02, delay_jitter_s=0.08)],
}


@pytest.mark.parametrize("scenario", sorted(STORAGE_FAULTS))
def test_declined_and_failing_checkpoints_lose_no_greeting_and_show_none_twice(tmp_path, scenario):
    """A PUT is answered only once a checkpoint that covers it completed, and a greeting is
    readable only then: checkpoints declined or failing at random (plus a killed task) delay
    the answers and the greetings, and change nothing of them."""
    ns = greeter_module("raystream.statefun_api")
    log_path = str(tmp_path / "faults.jsonl")
    env = rs.StreamEnvironment(parallelism=2, flush_ms=20)
    location: Any = (faulty_filesystem(rules=STORAGE_FAULTS[scenario], seed=5, log_path=log_path), str(tmp_path / "chk"))
    env.enable_checkpointing(100, checkpoint_dir=location)
    env.set_restart_strategy(rs.RestartStrategy.fixed_delay(30, 50))

    def kill_the_dispatcher(client: rs.JobClient) -> None:
        vertex = next(i for i, v in enumerate(env.get_job_graph().vertices) if v.name == "greeter")
        attempt = client.info()["attempt"]
        ray.kill(client.task_actor(vertex, 1), no_restart=True)
        while client.info()["attempt"] == attempt:
            time.sleep(0.02)

    greetings, answers, _info = run_greeter(tmp_path, env, ns["functions"], "http://unused:1", during=kill_the_dispatcher)
    injected = read_fault_log(log_path)
    assert any(injected.values()), f"{scenario}: no fault was injected"
    assert {name: len(a) for name, a in answers.items()} == {name: NAMES.count(name) for name in NAMES}
    assert greetings == expected_greetings(NAMES), f"{scenario}: injected {injected}"


def test_checkpoints_that_time_out_answer_504_then_every_greeting_comes_once(tmp_path):
    """Checkpoint storage so slow that checkpoints 1 to 6 time out (their state writes take
    1 s, the checkpoint timeout is 0.3 s): no message can become durable meanwhile, so the
    first PUTs are answered 504 after ``ack_timeout_s`` (sent once, not again) and, two
    messages waiting (``max_pending``), further PUTs are refused with 503 and sent again.
    Once checkpoints complete, every message, the ones answered 504 too, is greeted exactly
    once, the greetings become readable, and no message keeps a place in the ingress."""
    ns = greeter_module("raystream.statefun_api")
    log_path = str(tmp_path / "faults.jsonl")
    env = rs.StreamEnvironment(parallelism=2, flush_ms=20)
    slow = [FaultRule("write_state", path_glob=f"*/chk-{i}", delay_s=1.0) for i in range(1, 7)]
    location: Any = (faulty_filesystem(rules=slow, seed=5, log_path=log_path), str(tmp_path / "chk"))
    env.enable_checkpointing(100, checkpoint_dir=location, timeout_ms=300)
    env.set_restart_strategy(rs.RestartStrategy.fixed_delay(3, 50))

    seen: dict = {}

    def take_checkpoint_stats(client: rs.JobClient) -> None:  # (halfway: soon after the slow ones)
        seen.update(client.info()["checkpoints"])

    greetings, answers, info = run_greeter(tmp_path, env, ns["functions"], "http://unused:1",
                                           during=take_checkpoint_stats,
                                           ingress_options={"ack_timeout_s": 0.2, "max_pending": 2})
    assert info["restarts"] == 0, info  # (checkpoints that time out do not fail the job)
    assert seen["aborted"] >= 6 and seen["completed"] >= 1, seen
    # while the slow snapshots were written, the tasks declined the next checkpoints at their
    # barriers instead of queueing more snapshots (none would have completed)
    assert len(seen["history"]) == seen["aborted"] + seen["completed"], seen  # (all of them: fewer than 100)
    reasons = [c.get("reason", "") for c in seen["history"]]
    assert any("still being written to checkpoint storage" in r for r in reasons), reasons
    assert any(r.startswith("timed out") for r in reasons), reasons
    delayed = read_fault_log(log_path)
    assert delayed, "no state write was delayed"
    statuses = [status for got in answers.values() for status, _text in got]
    assert {name: len(a) for name, a in answers.items()} == {name: NAMES.count(name) for name in NAMES}
    assert statuses[0] == 504 and set(statuses) <= {200, 504}, answers  # (the first waited through every timeout)
    assert info["playground_ingress"]["playground_refused"] >= 1  # (two answered 504 kept their places)
    assert greetings == expected_greetings(NAMES)  # the messages answered 504 were greeted too, once
