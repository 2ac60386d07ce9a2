"""StateFun's playground ingress and egress (``io.statefun.playground.v1/ingress|egress``)
driven as their tasks drive them, without Ray: the HTTP protocol of flink-statefun-playground
3.2+ (PUT /namespace/type/id with ``Content-Type: application/vnd.<type>``, GET /topic), and
what raystream adds: a PUT is answered once its message is durable, egress records are
readable once their checkpoint completed, and both are bounded."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Callable

import pytest

from raystream.engine.connectors import END_OF_INPUT, NOTHING_AVAILABLE
from raystream.engine.errors import ConfigError
from raystream.engine.keygroups import KeyGroupRange
from raystream.engine.operator import OperatorContext
from raystream.engine.records import Batch
from raystream.statefun_api.playground import (
    PlaygroundEgress,
    PlaygroundIngress,
    PlaygroundSpec,
    parse_module_playground,
)
from tests.ports import free_port

# the playground greeter's module.yaml (flink-statefun-playground release-3.3, python/greeter)
GREETER_MODULE_YAML = """\
kind: io.statefun.endpoints.v2/http
spec:
  functions: example/*
  urlPathTemplate: http://functions:8000/statefun
  transport:
    type: io.statefun.transports.v1/async
---
kind: io.statefun.playground.v1/ingress
spec:
  port: 8090
---
kind: io.statefun.playground.v1/egress
spec:
  port: 8091
  topics:
    - greetings
"""


def context(checkpointing: bool, post: Callable | None = None, parallelism: int = 1) -> OperatorContext:
    return OperatorContext(
        operator_name="playground", operator_uid="playground", task_name=f"playground (1/{parallelism})", subtask_index=0,
        parallelism=parallelism, max_parallelism=128, key_group_range=KeyGroupRange.for_subtask(0, 1, 128),
        post=post, checkpointing=checkpointing,
    )


def request(port: int, method: str, path: str, body: bytes = b"", headers: dict | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        reply = conn.getresponse()
        return reply.status, reply.read()
    finally:
        conn.close()


class Put:
    """A PUT in a background thread (the ingress answers once the message is durable)."""

    def __init__(self, port: int, path: str, body: bytes, content_type: str | None = None) -> None:
        headers = {"Content-Type": content_type} if content_type else {}
        self.result: tuple[int, bytes] | None = None
        self.thread = threading.Thread(target=self._run, args=(port, path, body, headers), daemon=True)
        self.thread.start()

    def _run(self, port, path, body, headers) -> None:
        self.result = request(port, "PUT", path, body, headers)

    def answer(self) -> tuple[int, bytes]:
        self.thread.join(30)
        assert self.result is not None, "no answer"
        return self.result


def poll_until(reader, count: int) -> list:
    """Poll until ``count`` records came (the PUT threads deliver them concurrently)."""
    out: list = []
    while len(out) < count:
        batch = reader.poll_next()
        assert batch is not END_OF_INPUT
        if batch is not NOTHING_AVAILABLE:
            out.extend(batch.records())
        else:
            threading.Event().wait(0.005)  # (the PUTs run on other threads)
    return out


# ---------------------------------------------------------------- module.yaml
def test_the_playground_documents_of_the_greeter_module_yaml():
    assert parse_module_playground(GREETER_MODULE_YAML, "module.yaml") == PlaygroundSpec(8090, 8091, ("greetings",))
    assert parse_module_playground("kind: io.statefun.endpoints.v2/http\nspec: {functions: a/*, urlPathTemplate: http://x}\n") is None


@pytest.mark.parametrize("text, message", [
    ("kind: io.statefun.playground.v1/ingress\nspec:\n  port: eighty\n", "'spec.port' must be a port number"),
    ("kind: io.statefun.playground.v1/ingress\nspec:\n  port: 8090\n  host: x\n", "unknown field(s) ['host']"),
    ("kind: io.statefun.playground.v1/egress\nspec:\n  port: 8091\n  topics: greetings\n", "'spec.topics' must be a list"),
])
def test_bad_playground_documents_name_the_file_document_and_field(text, message):
    with pytest.raises(ConfigError) as err:
        parse_module_playground(text, "module.yaml")
    assert "module.yaml (document 1, io.statefun.playground.v1/" in str(err.value)
    assert message in str(err.value)


# ---------------------------------------------------------------- ingress
def open_ingress(checkpointing: bool, **kwargs):
    port = free_port()
    source = PlaygroundIngress(port=port, host="127.0.0.1", **kwargs)
    reader = source.create_reader(context(checkpointing))
    reader.add_splits(source.create_splits(1))
    return port, reader


def test_a_put_becomes_a_message_to_the_function_of_its_path():
    port, reader = open_ingress(checkpointing=False)
    try:
        put = Put(port, "/example/person/Bob", b'{"name": "Bob"}', "application/vnd.example/GreetRequest")
        plain = Put(port, "/example/person/Ann", b"hi")  # no type: a string message
        records = poll_until(reader, 2)
        assert put.answer() == (200, b"") and plain.answer() == (200, b"")
        assert sorted(records) == [
            ("example/person", "Ann", "", "", "io.statefun.types/string", b"hi", True),
            ("example/person", "Bob", "", "", "example/GreetRequest", b'{"name": "Bob"}', True),
        ]
    finally:
        reader.close()


def test_a_bad_path_or_type_is_answered_400_and_sends_nothing():
    port, reader = open_ingress(checkpointing=False)
    try:
        assert request(port, "PUT", "/example/person", b"x")[0] == 400
        status, body = request(port, "PUT", "/a/b/c", b"x", {"Content-Type": "application/vnd.nonamespace"})
        assert status == 400 and b"nonamespace" in body
        assert reader.poll_next() is NOTHING_AVAILABLE
        # one connection: the unread body of a refused PUT does not become the next request
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("PUT", "/bad", body=b"GET /x HTTP/1.1\r\n\r\n")
        assert conn.getresponse().read() and conn.sock is None  # closed, as the answer said
        good = threading.Thread(target=conn.request, args=("PUT", "/a/b/c", b"ok"))
        good.start()
        assert poll_until(reader, 1) == [("a/b", "c", "", "", "io.statefun.types/string", b"ok", True)]
        good.join()
        assert conn.getresponse().status == 200
        conn.close()
    finally:
        reader.close()


def test_with_checkpointing_a_put_is_answered_once_its_checkpoint_completed():
    port, reader = open_ingress(checkpointing=True)
    try:
        put = Put(port, "/example/person/Bob", b"x")
        poll_until(reader, 1)
        assert reader.snapshot_state(7) and put.result is None
        reader.notify_checkpoint_complete(6)  # an earlier checkpoint does not cover it
        put.thread.join(0.2)
        assert put.result is None
        reader.notify_checkpoint_complete(7)
        assert put.answer() == (200, b"")
    finally:
        reader.close()


def test_messages_not_yet_durable_are_answered_503_when_the_job_stops():
    port, reader = open_ingress(checkpointing=True)
    emitted = Put(port, "/example/person/a", b"x")
    poll_until(reader, 1)
    queued = Put(port, "/example/person/b", b"y")
    while reader._outstanding < 2:  # noqa: SLF001 - wait until the second PUT is queued
        threading.Event().wait(0.005)
    reader.close()
    for put in (emitted, queued):
        status, body = put.answer()
        assert status == 503 and b"send it again" in body


def test_the_ingress_answers_503_beyond_max_pending_messages():
    port, reader = open_ingress(checkpointing=True, max_pending=1)
    try:
        first = Put(port, "/example/person/a", b"x")
        poll_until(reader, 1)
        status, body = request(port, "PUT", "/example/person/b", b"y")
        assert status == 503 and b"max_pending" in body
        metrics = reader._metrics  # noqa: SLF001 - the reader's OperatorContext.metrics
        assert (metrics["playground_pending"], metrics["playground_messages"], metrics["playground_refused"]) == (1, 1, 1)
        reader.snapshot_state(1)
        reader.notify_checkpoint_complete(1)
        assert first.answer()[0] == 200
        assert metrics["playground_pending"] == 0
        assert Put(port, "/example/person/c", b"z") and poll_until(reader, 1)  # room again
    finally:
        reader.close()


def test_a_subtask_without_the_split_ends():
    reader = PlaygroundIngress(port=free_port()).create_reader(context(False))
    reader.add_splits([])
    assert reader.poll_next() is END_OF_INPUT


# ---------------------------------------------------------------- egress
def open_egress(checkpointing: bool, post: Callable | None = None, **kwargs):
    port = free_port()
    writer = PlaygroundEgress(port=port, topics=["greetings", "other"], host="127.0.0.1", **kwargs).create_writer(
        context(checkpointing, post))
    return port, writer


def greeting(text: str, topic: str = "greetings") -> dict:
    return {"topic": topic, "payload": text}


def test_without_checkpointing_records_are_readable_at_once_oldest_first():
    port, writer = open_egress(checkpointing=False)
    try:
        assert request(port, "GET", "/greetings") == (404, b"")
        writer.write(Batch.of_records([greeting("Welcome Bob"), greeting("Hi Ann"), greeting("x", "other")]))
        assert writer._metrics["playground_held"] == 3  # noqa: SLF001 - its OperatorContext.metrics
        assert request(port, "GET", "/greetings") == (200, b"Welcome Bob")
        assert request(port, "GET", "/greetings") == (200, b"Hi Ann")
        assert (writer._metrics["playground_held"], writer._metrics["playground_read"]) == (1, 2)  # noqa: SLF001
        assert request(port, "GET", "/greetings") == (404, b"")
        assert request(port, "GET", "/other") == (200, b"x")
        status, body = request(port, "GET", "/nope")
        assert status == 405 and b"greetings" in body
    finally:
        writer.close()


def test_with_checkpointing_records_are_readable_once_their_checkpoint_completed():
    port, writer = open_egress(checkpointing=True)
    try:
        writer.write(Batch.of_records([greeting("one")]))
        writer.snapshot_state(1)
        writer.write(Batch.of_records([greeting("two")]))
        assert request(port, "GET", "/greetings") == (404, b"")
        writer.notify_checkpoint_complete(1)
        assert request(port, "GET", "/greetings") == (200, b"one")
        assert request(port, "GET", "/greetings") == (404, b"")  # "two" waits for checkpoint 2
        writer.snapshot_state(2)
        writer.notify_checkpoint_complete(2)
        assert request(port, "GET", "/greetings") == (200, b"two")
    finally:
        writer.close()


def test_unread_and_committed_records_come_back_after_a_restore():
    port, writer = open_egress(checkpointing=True)
    writer.write(Batch.of_records([greeting("read"), greeting("unread")]))
    writer.snapshot_state(1)
    writer.notify_checkpoint_complete(1)
    assert request(port, "GET", "/greetings") == (200, b"read")
    writer.write(Batch.of_records([greeting("in checkpoint 2")]))
    state = writer.snapshot_state(2)
    writer.write(Batch.of_records([greeting("after checkpoint 2")]))  # lost with the failure, produced again
    writer.close()
    # restored from checkpoint 2 (complete, its notification never came)
    port2, restored = open_egress(checkpointing=True)
    try:
        restored.restore_state([state])
        assert [request(port2, "GET", "/greetings") for _ in range(3)] == [
            (200, b"unread"), (200, b"in checkpoint 2"), (404, b"")]
    finally:
        restored.close()


def test_a_record_for_an_undeclared_topic_or_of_another_shape_fails_naming_it():
    port, writer = open_egress(checkpointing=False)
    try:
        with pytest.raises(ValueError, match=r"topic 'greets', which the egress does not declare \(topics: \['greetings', 'other'\]"):
            writer.write(Batch.of_records([greeting("x", "greets")]))
        with pytest.raises(ValueError, match="io.statefun.playground/EgressRecord"):
            writer.write(Batch.of_records([json.dumps(greeting("x"))]))
    finally:
        writer.close()


def test_the_egress_stops_taking_input_at_max_buffered_until_a_reader_takes_one():
    woken: list = []
    port, writer = open_egress(checkpointing=False, post=woken.append, max_buffered=2)
    try:
        writer.write(Batch.of_records([greeting("a")]))
        assert writer.accepts_input()
        writer.write(Batch.of_records([greeting("b")]))
        assert not writer.accepts_input() and not woken
        assert request(port, "GET", "/greetings") == (200, b"a")
        assert writer.accepts_input() and len(woken) == 1  # the task is woken to look again
    finally:
        writer.close()


def test_the_egress_refuses_to_run_at_a_parallelism_above_1():
    with pytest.raises(ConfigError, match=r"playground \(1/2\): a PlaygroundEgress runs at parallelism 1"):
        PlaygroundEgress(port=free_port(), topics=["t"]).create_writer(context(False, parallelism=2))


def test_a_put_answered_504_keeps_its_place_until_its_checkpoint_settles_it():
    """``ack_timeout_s`` ends the wait, not the message: it was emitted and may still become
    durable, so it counts against ``max_pending`` (memory stays bounded while checkpoints
    do not complete) until a checkpoint or the end of the job settles it."""
    port, reader = open_ingress(checkpointing=True, max_pending=1, ack_timeout_s=0.2)
    try:
        late = Put(port, "/example/person/a", b"x" * 1000)
        poll_until(reader, 1)
        status, body = late.answer()
        assert status == 504 and b"may still be processed" in body
        assert all(r.record is None for r in reader._since)  # noqa: SLF001 - no body kept while waiting
        assert request(port, "PUT", "/example/person/b", b"y")[0] == 503  # its place is still taken
        reader.snapshot_state(1)
        reader.notify_checkpoint_complete(1)
        after = Put(port, "/example/person/c", b"z")
        assert poll_until(reader, 1)[0][1] == "c"
        reader.snapshot_state(2)
        reader.notify_checkpoint_complete(2)
        assert after.answer() == (200, b"")
    finally:
        reader.close()


def test_a_put_wakes_the_idle_task_to_poll_at_once():
    """An idle source task waits up to TaskConfig.idle_poll_max_ms (100 ms) between polls: a PUT
    posts to the task's mailbox so that it polls at once (without it, a message that came after
    a quiet spell waited up to 100 ms before the task looked)."""
    woken = threading.Semaphore(0)
    port = free_port()
    source = PlaygroundIngress(port=port, host="127.0.0.1")
    reader = source.create_reader(context(False, post=lambda fn: (fn(), woken.release())))
    reader.add_splits(source.create_splits(1))
    try:
        assert reader.poll_next() is NOTHING_AVAILABLE
        put = Put(port, "/example/person/Bob", b"hi")
        assert woken.acquire(timeout=30), "the PUT did not wake the task"
        batch = reader.poll_next()  # (the message is queued before the task is woken)
        assert batch is not NOTHING_AVAILABLE and [r[1] for r in batch.records()] == ["Bob"]
        assert put.answer() == (200, b"")
    finally:
        reader.close()
