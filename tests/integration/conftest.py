import time

import pytest

from tests.conftest import alive_actors


@pytest.fixture(autouse=True)
def _ray(ray_session):
    """Every integration test runs on the session's Ray and must leave no actor behind."""
    yield ray_session
    deadline = time.time() + 10
    while alive_actors() and time.time() < deadline:
        time.sleep(0.1)
    left = alive_actors()
    assert not left, f"actors left behind: {[a.get('ActorClassName') for a in left]}"
