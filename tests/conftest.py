"""Shared pytest setup: one local Ray per session, started only if a Ray test runs."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")


@pytest.fixture(scope="session")
def ray_session():
    """Start one local Ray for the whole session (dashboard off) and stop it at the end."""
    import ray

    if not ray.is_initialized():
        # address="local": always a fresh local Ray, never a cluster some other process started
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING", configure_logging=False)
    yield ray
    ray.shutdown()


def alive_actors() -> list[dict]:
    """Actors that are not DEAD in the current Ray cluster (GCS view, no dashboard needed)."""
    import ray._private.state as state

    return [a for a in state.actors().values() if a.get("State") != "DEAD"]
