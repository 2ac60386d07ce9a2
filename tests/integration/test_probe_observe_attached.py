"""An attached JobClient (``JobClient.attach`` / ``list_running``, what ``raystream status``
and a second process use) of a job that ended, whose job master runs the next job of the
same driver now: it said ``CREATED`` for ever (and empty metrics; a savepoint waited for the
ended job for ever); now it raises a RaystreamError saying the job ended."""

from __future__ import annotations

import pytest

import raystream as rs
from raystream.engine.client import JobClient
from raystream.engine.errors import JobCancelled, RaystreamError
from tests.waiting import wait_for


def _unbounded(name: str) -> JobClient:
    env = rs.StreamEnvironment(parallelism=1)
    env.generate(lambda i: i, rate=200).filter(lambda x: x < 0).collect()  # unbounded, emits nothing
    client = env.execute_async(name)
    wait_for(lambda: client.status() == "RUNNING", f"{name} runs")
    return client


def _cancel(client: JobClient) -> None:
    client.cancel()
    with pytest.raises(JobCancelled):
        client.wait()


def test_an_attached_client_of_an_ended_job_says_so_when_its_master_moved_on():
    first = _unbounded("watched")
    attached = JobClient.attach(first.job_id)
    assert attached.status() == "RUNNING"
    assert attached.metrics()["operators"]
    _cancel(first)
    assert attached.status() == "CANCELLED"  # the master still holds it
    second = _unbounded("next")
    try:
        # (the worker pool hands the driver's last master out first)
        assert attached.job_master()._actor_id == second.job_master()._actor_id
        for call in (attached.status, attached.info, attached.metrics, attached.cancel,
                     lambda: attached.savepoint("/tmp/never-written")):
            with pytest.raises(RaystreamError, match=r"has ended: its job master runs another job"):
                call()
        assert second.status() == "RUNNING"  # the attached client's cancel reached no other job
    finally:
        _cancel(second)
