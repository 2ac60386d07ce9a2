import time

import pytest

from tests.conftest import leftover_actors


@pytest.fixture(autouse=True)
def _ray(ray_session):
    """Every integration test runs on the session's Ray and must leave no actor behind but
    the idle ones of the worker pool (checked to be idle)."""
    yield ray_session
    deadline = time.time() + 10
    while leftover_actors() and time.time() < deadline:
        time.sleep(0.1)
    left = leftover_actors()
    assert not left, f"actors left behind: {[a.get('ActorClassName') for a in left]}"
