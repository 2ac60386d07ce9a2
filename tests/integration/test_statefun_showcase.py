"""StateFun's own material on Ray: the showcase-style functions of
tests/statefun/test_showcase.py as StatefulFunctionsJobs, remote (the module executed with
the official SDK and its aiohttp app served from this driver process, reached through the
showcase's module.yaml) and embedded (the same text with only the import changed), in one
job. Both must give, egress by egress, what the in-process run gives (which that test
checks against the tutorial's expectations): messaging, delayed and cancelled messages,
Kafka/Kinesis/custom egress, state with TTL and deletes, async functions with a protobuf
state value replying to their caller.
"""

from __future__ import annotations

import pytest

import raystream as rs
from raystream.operators.sinks import CollectSink, collected_records
from raystream.statefun_api import StatefulFunctions
from raystream.statefun_api.job import StatefulFunctionsJob
from raystream.statefun_api.testing import FunctionServer
from tests.statefun.test_showcase import (
    EGRESSES,
    INGRESS,
    MODULE_YAML,
    route,
    run_embedded,
    showcase_module,
)

statefun = pytest.importorskip("statefun")
pytest.importorskip("aiohttp")


def sink_records(result: rs.JobResult, env: rs.StreamEnvironment, name: str) -> list:
    node = next(n for n in env.graph.nodes if n.kind == "sink" and n.name == name)
    return collected_records(result.sink_results.get(node.stable_uid(env.graph), []))


def test_the_showcase_on_ray_remote_and_embedded(tmp_path):
    sdk_ns = showcase_module("statefun")
    ours = showcase_module("raystream.statefun_api")
    expected = run_embedded()
    with FunctionServer(sdk_ns["app"]) as server:
        path = tmp_path / "module.yaml"
        path.write_text(MODULE_YAML.format(url=server.url))
        env = rs.StreamEnvironment(parallelism=2)
        jobs = {
            "remote": StatefulFunctionsJob(env, StatefulFunctions(), name="showcase-remote").with_module_yaml(str(path)),
            "embedded": StatefulFunctionsJob(env, ours["functions"], name="showcase-embedded"),
        }
        for mode, sf in jobs.items():
            # one ingress subtask keeps each address's messages in order, as one Kafka partition
            sf.with_ingress(env.from_collection(INGRESS).set_parallelism(1), route)
            for egress in EGRESSES:
                sf.egress_stream(egress).sink_to(CollectSink(), name=f"{mode} {egress}").set_parallelism(1)
        result = env.execute("showcase")
    for mode in jobs:
        got = {egress: sorted(sink_records(result, env, f"{mode} {egress}"), key=repr) for egress in EGRESSES}
        assert got == {egress: expected[egress] for egress in EGRESSES}, mode
