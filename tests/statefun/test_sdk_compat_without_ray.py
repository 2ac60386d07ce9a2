"""The SDK surface of ``raystream.statefun_api`` imports and runs without Ray.

The SDK surface is what a function module and its tests use: the package's exports
(addresses, types, ``ValueSpec``, messages, egress builders, ``Context``, storage, the
registry, the invocation core, the request-reply codec and ``RequestReplyHandler``,
endpoint declarations), ``statefun_api.server`` and ``statefun_api.testing``. None of
it may import Ray: each check runs in a fresh interpreter where importing ``ray`` raises.
The root package ``raystream`` imports without Ray too (``JobClient``, ``JobResult``,
``submit`` and ``shutdown_workers`` load on first use), and so does the graph-building API.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SDK_SURFACE = [
    "raystream.statefun_api",
    "raystream.statefun_api.address",
    "raystream.statefun_api.types",
    "raystream.statefun_api.spec",
    "raystream.statefun_api.messages",
    "raystream.statefun_api.egress_io",
    "raystream.statefun_api.storage",
    "raystream.statefun_api.context",
    "raystream.statefun_api.functions",
    "raystream.statefun_api.effects",
    "raystream.statefun_api.errors",
    "raystream.statefun_api.invocation",
    "raystream.statefun_api.reqreply",
    "raystream.statefun_api.handler",
    "raystream.statefun_api.endpoints",
    "raystream.statefun_api.server",
    "raystream.statefun_api.testing",
]

NO_RAY = """\
import sys

class NoRay:
    '''Importing Ray fails, naming what asked for it.'''

    def find_spec(self, name, path=None, target=None):
        if name == "ray" or name.startswith("ray."):
            raise ImportError(f"the SDK surface imported {name!r}")
        return None

sys.meta_path.insert(0, NoRay())
"""

# a function module and its checks, as a user's unit test would write them
USE_THE_SDK = """\
import asyncio
from datetime import timedelta

from raystream.statefun_api import *
from raystream.statefun_api.testing import RequestBuilder, round_trip, run_function

functions = StatefulFunctions()

@functions.bind("example/counter", specs=[ValueSpec("seen", IntType, expire_after_write=timedelta(days=1))])
async def counter(context: Context, message: Message):
    seen = (context.storage.seen or 0) + 1
    context.storage.seen = seen
    context.send(message_builder("example/audit", context.address.id, int_value=seen))
    context.send_after(timedelta(seconds=1), message_builder("example/counter", context.address.id, str_value="tick"))
    context.send_egress(kafka_egress_message("example/out", "counts", f"{seen}", key=context.address.id))

run = run_function(functions, "example/counter", "a", [message_builder("example/counter", "a", str_value="hi")], state={"seen": 2})
assert run.state == {"seen": 3}, run.state
assert [m.target.typename for m in run.sent] == ["example/audit"]
assert [d.delay_ms for d in run.delayed] == [1000]

reply = round_trip(functions, RequestBuilder("example/counter", "a").with_state("seen", 5, IntType).with_invocation("hi", StringType))
assert reply.invocation_result.state_mutations[0].state_value.value == IntType.serializer().serialize(6)
missing = round_trip(functions, RequestBuilder("example/counter", "a").with_invocation("hi", StringType))
assert [m.state_name for m in missing.incomplete_invocation_context.missing_values] == ["seen"]

handler = RequestReplyHandler(functions)
data = RequestBuilder("example/counter", "b").with_state("seen").with_invocation("hi", StringType).to_bytes()
assert asyncio.run(handler.handle_async(data)) == handler.handle_sync(data)
assert load_module_yaml is not None and remote_endpoint("example/*", "http://localhost:8000/statefun").functions == "example/*"
"""


def run_python(*parts: str) -> subprocess.CompletedProcess:
    code = "\n".join(textwrap.dedent(p) for p in parts)
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_the_sdk_surface_imports_without_ray():
    imports = "\n".join(f"import {m}" for m in SDK_SURFACE)
    done = run_python(NO_RAY, imports, "assert 'ray' not in sys.modules, sorted(m for m in sys.modules if m.startswith('ray'))")
    assert done.returncode == 0, done.stderr


def test_functions_are_tested_without_ray():
    done = run_python(NO_RAY, USE_THE_SDK, "assert 'ray' not in sys.modules\nprint('ok')")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_the_ray_block_works():
    """The guard itself: the same subprocess setup does stop an import of Ray."""
    done = run_python(NO_RAY, "import raystream.engine.client")
    assert done.returncode != 0
    assert "imported 'ray'" in done.stderr


def test_importing_raystream_and_building_a_job_loads_no_ray():
    done = run_python(NO_RAY, """\
import raystream as rs
import raystream.statefun_api
env = rs.StreamEnvironment(parallelism=2)
env.from_collection([1, 2, 3]).map(lambda x: x * 2).key_by(lambda x: x % 2).reduce(lambda a, b: a + b).collect()
assert len(env.get_job_graph().vertices) >= 2
assert 'ray' not in sys.modules
""")
    assert done.returncode == 0, done.stderr


def test_ray_loads_when_a_job_needs_it():
    done = run_python("import sys\nimport raystream as rs\nassert 'ray' not in sys.modules\n"
                      "assert rs.JobClient.__module__ == 'raystream.engine.client' and 'ray' in sys.modules")
    assert done.returncode == 0, done.stderr
