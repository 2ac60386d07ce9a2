"""Shared pytest setup: one local Ray per session, started only if a Ray test runs."""

from __future__ import annotations

import os
import sys

import pytest
from hypothesis import settings

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

pytest_plugins = ["tests.redis_server"]  # redis_url, redis_client

# Property tests are deterministic and untimed: the same examples in every run (a failure
# reproduces), and no per-example deadline (a loaded 2-core CI machine is not a bug).
settings.register_profile("raystream", deadline=None, derandomize=True)
settings.load_profile("raystream")


@pytest.fixture(scope="session")
def ray_session():
    """Start one local Ray for the whole session (dashboard off) and stop it at the end."""
    import ray

    from raystream.engine.ray_runtime import _LOCAL_SYSTEM_CONFIG

    if not ray.is_initialized():
        # address="local": always a fresh local Ray, never a cluster some other process started;
        # configured as raystream's embedded Ray is (the path a user's script takes)
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING", configure_logging=False,
                 _system_config=dict(_LOCAL_SYSTEM_CONFIG))
    yield ray
    import raystream

    raystream.shutdown_workers()
    ray.shutdown()


@pytest.fixture(autouse=True)
def _no_actor_left():
    """Every test on the session's Ray leaves no actor behind but the idle ones of the worker
    pool (checked to be idle): a job a test leaves running would otherwise fail, or slow, a
    later test that has nothing to do with it."""
    yield
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():  # (a test that ran a job started raystream's Ray)
        return
    import time

    deadline = time.time() + 10
    while leftover_actors() and time.time() < deadline:
        time.sleep(0.1)
    left = leftover_actors()
    assert not left, f"actors left behind: {[(a.get('ActorClassName'), a.get('Name')) for a in left]}"


def alive_actors() -> list[dict]:
    """Actors that are not DEAD in the current Ray cluster (GCS view, no dashboard needed)."""
    import ray._private.state as state

    return [a for a in state.actors().values() if a.get("State") != "DEAD"]


def leftover_actors() -> list[dict]:
    """Alive actors other than the idle ones of this driver's worker pool (job masters and
    task executors kept for the next job), after checking that those really are idle: no
    executor hosts a task and no master runs a job."""
    import ray

    from raystream.engine.client import OutputRelay
    from raystream.engine.pool import WorkerPool

    pool = WorkerPool.existing()
    idle: set[str] = set()
    if pool is not None:
        masters, executors = pool.idle_actors()
        refs = [e.actor.hosted.remote(e.releasing) for e in executors]
        ray.wait(refs, num_returns=len(refs), timeout=30)
        busy = {}
        for e, ref in zip(executors, refs):
            try:
                hosted = ray.get(ref, timeout=0)
            except ray.exceptions.RayActorError:  # died since the pool's check: hosts nothing
                continue
            if hosted:
                busy[e.name] = hosted
        assert not busy, f"idle task executors of the worker pool still host tasks: {busy}"
        states = ray.get([m.job_info.remote() for m in masters], timeout=30)
        running = [i for i in states if i["status"] in ("CREATED", "RUNNING", "RESTARTING")]
        assert not running, f"idle job masters of the worker pool still run jobs: {running}"
        names = pool.idle_actor_names()
        idle = {*names["masters"], *names["executors"]}
    relay = OutputRelay.idle_name()  # (the driver's print relay, kept for the next printing job)
    return [a for a in alive_actors() if a.get("Name") not in idle and a.get("Name") != relay]
