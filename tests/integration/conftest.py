import pytest


@pytest.fixture(autouse=True)
def _ray(ray_session):
    """Every integration test runs on the session's Ray (and, as every Ray test, must leave no
    actor behind: ``tests/conftest.py``)."""
    yield ray_session
