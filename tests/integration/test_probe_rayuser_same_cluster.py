"""In a process connected to a Ray cluster, an explicit ``HOST:PORT`` of another cluster is
refused (Ray keeps one connection per process). Before, only the port was compared: a
cluster on another host at the same port (6379 for every ``ray start --head`` by default) was
taken for the connected one, and ``StreamEnvironment(address=...)`` / ``raystream list
--address ...`` silently ran on, or listed, the connected cluster instead."""

from __future__ import annotations

import pytest
import ray

from raystream.engine.errors import ConfigError
from raystream.engine.ray_runtime import check_same_cluster, ensure_ray


def _connected() -> tuple[str, str]:
    host, _, port = ray.get_runtime_context().gcs_address.rpartition(":")
    return host, port


def test_another_host_at_the_same_port_is_refused():
    _host, port = _connected()
    for other in (f"198.51.100.77:{port}", f"203.0.113.9:{port}"):  # (documentation addresses: no such cluster)
        with pytest.raises(ConfigError, match="already connected to") as err:
            ensure_ray(other)
        assert repr(other) in str(err.value)


def test_the_connected_cluster_under_its_other_names_is_accepted():
    host, port = _connected()
    for same in (f"{host}:{port}", f"127.0.0.1:{port}", f"localhost:{port}", "auto"):
        check_same_cluster(same)
    with pytest.raises(ConfigError, match="already connected to"):
        check_same_cluster(f"{host}:{int(port) + 1}")
