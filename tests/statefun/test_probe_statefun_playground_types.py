"""The playground ingress of a job answers 404 to a PUT for a function type the job has
no function for (a typo in the path, ``/example/persn/Bob``), and sends nothing: such a
PUT used to be answered 200 and then failed the whole job (``FunctionNotFound`` in the
dispatcher), so any HTTP client could stop it with one request. Driven as the source task
drives the ingress, without Ray; the types are the job's embedded functions and endpoint
patterns as the job is executed (endpoints added after the ingress count)."""

from __future__ import annotations

import cloudpickle

import raystream as rs
from raystream.engine.connectors import NOTHING_AVAILABLE
from raystream.statefun_api import StatefulFunctions
from raystream.statefun_api.endpoints import remote_endpoint
from raystream.statefun_api.job import StatefulFunctionsJob
from raystream.statefun_api.playground import FunctionTypes, PlaygroundIngress
from tests.ports import free_port
from tests.statefun.test_playground_io import Put, context, poll_until, request


def embedded() -> StatefulFunctions:
    functions = StatefulFunctions()

    @functions.bind("example/person")
    def person(context, message):
        pass

    return functions


def job_ingress() -> PlaygroundIngress:
    """A job's playground ingress, the remote endpoint added after it; as its task gets it."""
    ingress = PlaygroundIngress(port=free_port(), host="127.0.0.1")
    sf = StatefulFunctionsJob(rs.StreamEnvironment(), embedded()).with_playground_ingress(ingress)
    sf.with_endpoint(remote_endpoint("remote/*", "http://functions:8000/{function.name}"))
    return cloudpickle.loads(cloudpickle.dumps(ingress))


def test_a_put_for_a_type_the_job_does_not_have_is_answered_404_and_sends_nothing():
    source = job_ingress()
    reader = source.create_reader(context(checkpointing=False))
    reader.add_splits(source.create_splits(1))
    try:
        status, body = request(source.port, "PUT", "/example/persn/Bob", b"hi")
        assert status == 404
        assert body == b"no function type 'example/persn' in this job (it has: example/person, remote/*)\n"
        assert reader.poll_next() is NOTHING_AVAILABLE
        embedded_put = Put(source.port, "/example/person/Bob", b"hi")
        remote_put = Put(source.port, "/remote/greeter/Ann", b"hi")
        records = poll_until(reader, 2)
        assert embedded_put.answer() == (200, b"") and remote_put.answer() == (200, b"")
        assert sorted(r[:2] for r in records) == [("example/person", "Bob"), ("remote/greeter", "Ann")]
    finally:
        reader.close()


def test_the_types_are_read_when_the_job_is_pickled_for_its_tasks():
    current = (["a/f"], ["b/*"])
    types = FunctionTypes(lambda: current)
    frozen = cloudpickle.loads(cloudpickle.dumps(types))
    current = (["a/g"], [])
    assert types.serves("a/g") and not types.serves("b/x")  # (in the driver: as the job is now)
    assert frozen.serves("a/f") and frozen.serves("b/x") and not frozen.serves("a/g")
    assert not frozen.serves("b") and not frozen.serves("c/x")


def test_a_playground_ingress_of_its_own_takes_any_type():
    source = PlaygroundIngress(port=free_port(), host="127.0.0.1")
    reader = source.create_reader(context(checkpointing=False))
    reader.add_splits(source.create_splits(1))
    try:
        put = Put(source.port, "/any/type/x", b"hi")
        assert [r[:2] for r in poll_until(reader, 1)] == [("any/type", "x")]
        assert put.answer() == (200, b"")
    finally:
        reader.close()
