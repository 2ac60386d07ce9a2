"""An interrupted blocking ``env.execute()`` (Ctrl-C, a notebook's stop button) ends with one
``KeyboardInterrupt`` that says what became of the job, raised by raystream: not Ray's, from
inside ``ray.get``, whose traceback (30 lines through ``ray/_private/worker.py`` and
``_raylet.pyx``) told a script or notebook user nothing about the job."""

from __future__ import annotations

import _thread
import threading
import traceback

import raystream as rs
from raystream.engine.client import JobClient
from tests.waiting import wait_for


def _running(name: str) -> list[JobClient]:
    return [c for job_id, c in JobClient.list_running().items() if job_id.startswith(f"{name}-")]


def test_an_interrupted_execute_raises_one_keyboard_interrupt_naming_the_cancelled_job():
    env = rs.StreamEnvironment(parallelism=2)
    env.generate(lambda i: i, rate=2000).filter(lambda x: x < 0).collect()  # unbounded, emits nothing

    def interrupt_once_running() -> None:
        wait_for(lambda: any(c.status() == "RUNNING" for c in _running("nb-interrupted")), "the job runs")
        _thread.interrupt_main()  # what Ctrl-C or a notebook's stop button does

    threading.Thread(target=interrupt_once_running, daemon=True).start()
    try:
        env.execute_and_collect("nb-interrupted")
    except KeyboardInterrupt as exc:
        caught = exc
    else:
        raise AssertionError("execute() returned although it was interrupted")
    assert str(caught) == "job 'nb-interrupted' interrupted: it ended (CANCELLED), nothing of it runs"
    assert caught.__cause__ is None and caught.__suppress_context__
    frames = [f.filename for f in traceback.extract_tb(caught.__traceback__)]
    assert not [f for f in frames if "/ray/" in f or "_raylet" in f], frames
    assert not _running("nb-interrupted")
