"""A throwaway ``redis-server`` for tests: started on a free port, no persistence, stopped at
the end. Tests that use it skip (with the reason) only when the binary is not installed; CI
installs it (Debian package ``redis-server``, see ``.ci/run``)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.ports import free_port as _free_port

__all__ = ["redis_server_url", "redis_url", "redis_client"]


def _tail(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()[-2000:]
    except OSError:
        return "(no log)"


@contextmanager
def redis_server_url() -> Iterator[str]:
    """Start ``redis-server`` on a free local port; yield its ``redis://`` URL; stop it."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (Debian: apt-get install redis-server; .ci/run installs it)")
    import redis  # redis-py: in the test extra (a missing client is an error, not a skip)

    with tempfile.TemporaryDirectory(prefix="raystream-redis-") as workdir:
        for _attempt in range(5):  # the free port may be taken between the probe and the bind
            port = _free_port()
            log = f"{workdir}/redis-{port}.log"
            proc = subprocess.Popen(
                [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", workdir, "--daemonize", "no", "--loglevel", "warning", "--logfile", log],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            client = redis.Redis(port=port, socket_connect_timeout=1)
            deadline = time.monotonic() + 20
            try:
                while proc.poll() is None and time.monotonic() < deadline:
                    try:
                        if client.ping():
                            break
                    except redis.ConnectionError:
                        time.sleep(0.02)
                else:
                    proc.kill()
                    proc.wait()
                    if _attempt == 4:
                        raise RuntimeError(f"redis-server did not start on port {port}: {_tail(log)}")
                    continue
            finally:
                client.close()
            try:
                yield f"redis://127.0.0.1:{port}/0"
            finally:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            return


# Fixtures, for every test module (``pytest_plugins`` in tests/conftest.py).
@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """The URL of a throwaway server shared by the tests of one module."""
    with redis_server_url() as u:
        yield u


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[Any]:
    """A client of :func:`redis_url`'s server (``decode_responses=True``) on an emptied database."""
    import redis

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.flushdb()
    yield client
    client.close()
