"""StateFun's own material on Ray: the flink-statefun-playground Python greeter as a
StatefulFunctionsJob, remote (the playground's functions.py and aiohttp app served with the
official SDK in this driver process, reached through the playground's module.yaml) and
embedded (the same file with only the import changed), in one job; and a job whose
functions emit no egress at all.

The functions and the module.yaml are those of tests/statefun/test_statefun_playground.py.
"""

from __future__ import annotations

import pytest

import raystream as rs
from raystream.operators.sinks import CollectSink, collected_records
from raystream.statefun_api import StatefulFunctions, message_builder
from raystream.statefun_api.endpoints import parse_module_yaml
from raystream.statefun_api.job import StatefulFunctionsJob
from raystream.statefun_api.testing import FunctionServer
from tests.statefun.test_statefun_playground import (
    EGRESS,
    MODULE_YAML,
    NAMES,
    Replies,
    expected_greetings,
    per_key,
    playground_module,
    quiet_sdk_functions,
)

statefun = pytest.importorskip("statefun")
pytest.importorskip("aiohttp")


def sink_records(result: rs.JobResult, env: rs.StreamEnvironment, name: str) -> list:
    node = next(n for n in env.graph.nodes if n.kind == "sink" and n.name == name)
    return collected_records(result.sink_results.get(node.stable_uid(env.graph), []))


def test_the_playground_greeter_on_ray_remote_and_embedded(tmp_path):
    sdk_ns = playground_module("statefun")
    ours = playground_module("statefun_api")
    greet_type = ours["GREET_REQUEST_TYPE"]

    def router(name):  # the module.yaml's Kafka ingress: GreetRequest keyed by name
        return message_builder("example/person", name, value={"name": name}, value_type=greet_type)

    with FunctionServer(sdk_ns["app"]) as server:
        path = tmp_path / "module.yaml"
        path.write_text(MODULE_YAML.format(url=server.url))
        env = rs.StreamEnvironment(parallelism=2)
        remote = StatefulFunctionsJob(env, StatefulFunctions(), name="greeter-remote").with_module_yaml(str(path))
        remote.with_ingress(env.from_collection(NAMES).set_parallelism(1), router)
        remote.egress_stream(EGRESS).sink_to(CollectSink(), name="remote greets").set_parallelism(1)
        embedded = StatefulFunctionsJob(env, ours["functions"], name="greeter-embedded")
        embedded.with_ingress(env.from_collection(NAMES).set_parallelism(1), router)
        embedded.egress_stream(EGRESS).sink_to(CollectSink(), name="embedded greets").set_parallelism(1)
        result = env.execute("playground-greeter")
    expected = per_key(expected_greetings(NAMES))
    assert per_key(sink_records(result, env, "remote greets")) == expected
    assert per_key(sink_records(result, env, "embedded greets")) == expected


def test_a_job_whose_functions_emit_no_egress_runs_on_ray():
    """A logger and a read-only function served by the official SDK (which answers them
    with an empty body), fed by an embedded function: no egress is declared anywhere."""
    embedded = StatefulFunctions()

    @embedded.bind("example/fanout")
    def fanout(context, message):
        context.send(message_builder("example/logger", context.address.id, str_value=message.as_string()))
        context.send(message_builder("example/reader", context.address.id, str_value=message.as_string()))

    replies = Replies(statefun.RequestReplyHandler(quiet_sdk_functions()))
    with FunctionServer(replies) as server:
        text = f"kind: io.statefun.endpoints.v2/http\nspec:\n  functions: example/*\n  urlPathTemplate: {server.url}/statefun\n  transport:\n    type: io.statefun.transports.v1/async\n"
        env = rs.StreamEnvironment(parallelism=2)
        sf = StatefulFunctionsJob(env, embedded, name="quiet", endpoints=parse_module_yaml(text))
        sf.with_ingress(env.from_collection(NAMES), lambda n: message_builder("example/fanout", n, str_value=n))
        assert sf.egresses == []
        result = sf.execute()
    assert b"" in replies.bodies  # the SDK's empty reply: an empty invocation response
    assert replies.invoked == {"example/logger": len(NAMES), "example/reader": len(NAMES)}
    assert result.metrics["operators"]["quiet-discard"]["records_in"] == 0
