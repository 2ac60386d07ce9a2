"""Sends and runs that reach a task executor before the setup of their task (no Ray).

The job master sends each executor its tasks' runs right after its setup call, so a task on
one executor may start and send to a task on another executor whose setup call has not come
or not ended. Such a send waits for that setup (bounded in time and in number) instead of
being answered "not hosted"; a setup that fails, or a release of the deployment (a restart),
refuses the sends that wait; a send of a released deployment is never delivered. The setups
are gated (the transport's ``fetch`` of the vertex payload waits for the test), so every
interleaving below is forced, not hoped for.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import cloudpickle
import pytest

from raystream.engine.channels import InputInfo
from raystream.engine.config import TaskConfig
from raystream.engine.errors import RaystreamError
from raystream.engine.executor import TaskExecutor
from raystream.engine.operator import StreamOperator
from raystream.engine.socket_channels import ChannelServer, SocketSender
from raystream.engine.task import Task, TaskSpec

KEY = (0, 0, "job#1")


class _Sink(StreamOperator):
    """Keeps what it gets (the tests watch the task's mailbox instead)."""

    def __init__(self) -> None:
        self.got: list = []

    def process_batch(self, batch: Any, input_index: int = 0) -> None:
        self.got.extend(batch.records())


def _sink_chain() -> list[dict]:
    return [{"name": "sink", "uid": "sink", "factory": _Sink, "kind": "operator", "keyed": False}]


class _Messenger:
    def send(self, method: str, *args: Any) -> None:
        return None

    def pending(self, calls: list) -> list:
        return []

    def wait_all(self, calls: list, timeout_s: float) -> list:
        return []


class _GatedTransport:
    """A transport whose ``fetch`` (the first await of a task's setup) waits for ``gate``."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.in_fetch = asyncio.Event()

    def local_deliver(self, executor: Any, target: Any) -> None:
        return None

    async def prepare_targets(self, targets: list, channel_transport: str) -> None:
        return None

    def remote_sender(self, *args: Any) -> Any:
        raise AssertionError("the test tasks have no outputs")

    def messenger(self, master: Any) -> _Messenger:
        return _Messenger()

    async def fetch(self, shared: Any) -> bytes:
        self.in_fetch.set()
        await self.gate.wait()
        return shared

    def node_id(self) -> str:
        return "here"


def _task(key: tuple = KEY, broken: bool = False) -> tuple:
    """A ``setup_tasks`` entry of a one-operator sink task (``broken``: operators that
    cannot be unpickled on the executor)."""
    spec = TaskSpec(job_id="j", vertex_id=key[0], name="sink", subtask_index=key[1], parallelism=1,
                    max_parallelism=128, chain=[], inputs=[InputInfo(0, "up")], outputs=[], config=TaskConfig(flush_ms=5))
    head = b"not a pickle" if broken else cloudpickle.dumps((_sink_chain(), None))
    return key, cloudpickle.dumps(spec), [], (head, None)


@pytest.fixture
def delivered(monkeypatch) -> list:
    """What reaches a task's mailbox: ``(vertex, channel, seq, items)``; acked at once."""
    got: list = []

    def deliver(self: Task, channel: int, seq: int, items: list, ack: Any) -> None:
        got.append((self.spec.vertex_id, channel, seq, items))
        ack()

    monkeypatch.setattr(Task, "deliver", deliver)
    return got


async def _until(condition: Any, what: str, timeout_s: float = 30.0) -> None:
    """Let the event loop run until ``condition()`` holds (a hang fails naming ``what``)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.005)


def _in_thread(fn: Any, *args: Any) -> tuple[threading.Thread, dict]:
    """Run ``fn(*args)`` on a thread of its own (a channel connection's); its outcome lands in the dict."""
    out: dict = {}

    def run() -> None:
        try:
            out["result"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - the test reads how it ended
            out["error"] = exc

    thread = threading.Thread(target=run, name="test-connection", daemon=True)
    thread.start()
    return thread, out


def test_a_send_that_comes_before_its_setup_waits_for_it_and_is_delivered(delivered) -> None:
    async def scenario() -> None:
        transport = _GatedTransport()
        ex = TaskExecutor(transport)  # type: ignore[arg-type]
        # two Ray-call sends (out of order, as an async actor may start them) and one from a
        # channel connection's thread, all before the setup call came
        pushes = [asyncio.ensure_future(ex.push(KEY, 0, seq, [f"r{seq}"])) for seq in (1, 0)]
        thread, out = _in_thread(ex.consumer, KEY)
        await _until(lambda: ex._waiting == 3, "three sends waiting for the setup")
        setup = asyncio.ensure_future(ex.setup_tasks(KEY, [_task()], None))
        await transport.in_fetch.wait()  # announced, being set up
        assert not any(p.done() for p in pushes) and "result" not in out and delivered == []
        run = asyncio.ensure_future(ex.run(KEY, 30.0))
        transport.gate.set()
        await setup
        assert await asyncio.gather(*pushes) == [True, True]
        await _until(lambda: not thread.is_alive(), "the connection thread's wait ended")
        assert isinstance(out["result"], Task) and out["result"] is ex._hosted[KEY].task
        assert sorted(delivered) == [(0, 0, 0, ["r0"]), (0, 0, 1, ["r1"])]
        assert ex._waiting == 0 and ex._set_up == {}
        ex._hosted[KEY].built_task().cancel()  # (the run that waited for the setup started it)
        assert await run is None

    asyncio.run(scenario())


def test_a_setup_that_fails_refuses_the_sends_and_runs_waiting_for_it(delivered) -> None:
    async def scenario() -> None:
        transport = _GatedTransport()
        ex = TaskExecutor(transport)  # type: ignore[arg-type]
        push = asyncio.ensure_future(ex.push(KEY, 0, 0, ["r0"]))
        run = asyncio.ensure_future(ex.run(KEY, 30.0))
        thread, out = _in_thread(ex.consumer, KEY)
        await _until(lambda: ex._waiting == 2, "two sends waiting for the setup")
        setup = asyncio.ensure_future(ex.setup_tasks(KEY, [_task(broken=True)], None))
        await transport.in_fetch.wait()
        transport.gate.set()
        with pytest.raises(RaystreamError, match="the operators of 'sink'"):
            await setup  # the deployment fails with the setup's own error, naming the operator
        with pytest.raises(RaystreamError, match=r"setup of task \(0, 0\) on this executor failed"):
            await push
        with pytest.raises(RuntimeError, match=r"task \(0, 0\) was not set up"):
            await run
        await _until(lambda: not thread.is_alive(), "the connection thread's wait ended")
        assert "setup of task (0, 0) on this executor failed" in str(out["error"])
        assert delivered == [] and ex._waiting == 0

    asyncio.run(scenario())


def test_a_release_while_sends_wait_refuses_them_and_fails_the_setup_under_way(delivered) -> None:
    """A restart: the failed attempt's executors are released (cancel) while a setup of that
    attempt is under way and sends to it wait. Nothing of that attempt is delivered, then or
    later; the next attempt's tasks (another tag) take their sends."""

    async def scenario() -> None:
        transport = _GatedTransport()
        ex = TaskExecutor(transport)  # type: ignore[arg-type]
        push = asyncio.ensure_future(ex.push(KEY, 0, 0, ["old"]))
        thread, out = _in_thread(ex.consumer, KEY)
        await _until(lambda: ex._waiting == 2, "two sends waiting for the setup")
        setup = asyncio.ensure_future(ex.setup_tasks(KEY, [_task()], None))
        await transport.in_fetch.wait()
        await ex.release(2.0, cancel=True)
        assert await push is False  # (the sender is told its consumer's attempt ended)
        await _until(lambda: not thread.is_alive(), "the connection thread's wait ended")
        assert out == {"result": None}
        transport.gate.set()
        with pytest.raises(RaystreamError, match="was not set up: its deployment .job#1. was released"):
            await setup
        assert ex._hosted == {}
        new = (0, 0, "job#2")
        await ex.setup_tasks(new, [_task(new)], None)
        assert await ex.push(KEY, 0, 1, ["late"]) is False  # at once: job#1 is retired here
        assert ex.consumer(KEY) is None
        assert await ex.push(new, 0, 0, ["new"]) is True
        assert delivered == [(0, 0, 0, ["new"])]

    asyncio.run(scenario())


def test_the_bound_on_sends_waiting_for_setups_is_enforced(delivered) -> None:
    async def scenario() -> None:
        transport = _GatedTransport()
        ex = TaskExecutor(transport)  # type: ignore[arg-type]
        ex.max_waiting = 2
        pushes = [asyncio.ensure_future(ex.push(KEY, 0, seq, [seq])) for seq in (0, 1)]
        await _until(lambda: ex._waiting == 2, "two sends waiting for the setup")
        with pytest.raises(RaystreamError, match=r"2 sends already wait .* the limit is 2\): refused"):
            await ex.push(KEY, 0, 2, [2])
        with pytest.raises(RaystreamError, match="the limit is 2"):
            ex.consumer(KEY)
        transport.gate.set()
        await ex.setup_tasks(KEY, [_task()], None)
        assert await asyncio.gather(*pushes) == [True, True]
        assert sorted(delivered) == [(0, 0, 0, [0]), (0, 0, 1, [1])]

    asyncio.run(scenario())


def test_a_send_whose_setup_does_not_come_is_refused_naming_the_task(delivered) -> None:
    async def scenario() -> None:
        transport = _GatedTransport()
        ex = TaskExecutor(transport)  # type: ignore[arg-type]
        ex.setup_wait_s = 0.05
        with pytest.raises(RaystreamError, match=r"task \(0, 0\) was not set up on this executor within"):
            await ex.push(KEY, 0, 0, ["r0"])
        transport.gate.set()
        await ex.setup_tasks(KEY, [_task()], None)
        ex.setup_wait_s = 60.0
        # the deployment's setup call came without this key: refused at once, not after 60 s
        with pytest.raises(RaystreamError, match=r"task \(1, 0\) is not deployed on this executor"):
            await ex.push((1, 0, "job#1"), 0, 0, ["r0"])
        assert delivered == [] and ex._waiting == 0

    asyncio.run(scenario())


@pytest.mark.parametrize("broken", [False, True])
def test_a_socket_send_before_the_setup_waits_in_its_connection(delivered, broken) -> None:
    """The channel server's lookup waits on the connection's thread; the channel's frames stay
    in order behind it; a setup that fails reaches the sender as an error naming why."""

    async def scenario() -> None:
        transport = _GatedTransport()
        ex = TaskExecutor(transport)  # type: ignore[arg-type]
        server = ChannelServer(ex.consumer)
        sender = SocketSender(0, 4, server.path, KEY, [])
        try:
            for seq in range(3):
                sender.send([f"r{seq}"])
            await _until(lambda: ex._waiting == 1, "the connection waiting for the setup")
            thread, out = _in_thread(sender.drain)
            setup = asyncio.ensure_future(ex.setup_tasks(KEY, [_task(broken=broken)], None))
            await transport.in_fetch.wait()
            assert delivered == [] and thread.is_alive()
            transport.gate.set()
            if broken:
                with pytest.raises(RaystreamError, match="the operators of 'sink'"):
                    await setup
            else:
                await setup
            await _until(lambda: not thread.is_alive(), "the sender's drain ended")
        finally:
            sender.close()
            server.close()
        if broken:
            assert delivered == []
            assert "could not take a send" in str(out["error"]) and "setup of task (0, 0)" in str(out["error"])
        else:
            assert out == {"result": None}
            assert delivered == [(0, 0, seq, [f"r{seq}"]) for seq in range(3)]

    asyncio.run(scenario())
