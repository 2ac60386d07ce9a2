"""``JobClient.wait(timeout=...)`` of a job still running raised Ray's ``GetTimeoutError: Get
timed out: some object(s) not ready.``, which names neither the job nor what to do; it now
says which job did not end, within which timeout, and that the job runs on."""

from __future__ import annotations

import pytest
import ray

import raystream as rs
from tests.waiting import wait_for


def test_a_wait_that_times_out_names_the_job_and_the_job_runs_on():
    env = rs.StreamEnvironment(parallelism=2)
    env.generate(lambda i: i, rate=2000).filter(lambda x: x < 0).collect()  # unbounded, emits nothing
    client = env.execute_async("nb-waited")
    try:
        wait_for(lambda: client.status() == "RUNNING", "the job runs")
        for progress in (False, True):
            with pytest.raises(ray.exceptions.GetTimeoutError) as err:
                client.wait(timeout=0.2, progress=progress, interval_s=0.1)
            assert "job 'nb-waited' did not end within wait(timeout=0.2) s; it runs on" in str(err.value)
            assert client.status() == "RUNNING"
    finally:
        client.cancel()
        with pytest.raises(rs.JobCancelled):
            client.wait(timeout=60)
