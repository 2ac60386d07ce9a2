"""The embedded local Ray that raystream starts sends channel batches inline with the actor
call (``max_direct_call_object_size``), a user's ``_system_config`` wins, and attaching to a
running cluster passes no system config (Ray refuses one there). ``ray.init`` is replaced by a
recorder: nothing starts."""

import pytest

from raystream.engine import ray_runtime


@pytest.fixture
def init_calls(monkeypatch):
    calls = []
    monkeypatch.setattr(ray_runtime.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray_runtime.ray, "init", lambda **kw: calls.append(kw))
    monkeypatch.setattr(ray_runtime, "prepare_cluster_auth", lambda: None)
    monkeypatch.setattr(ray_runtime, "check_cluster", lambda address, source=None: None)
    monkeypatch.setattr(ray_runtime, "_started_here", False)
    for var in ("RAYSTREAM_ADDRESS", "RAY_ADDRESS"):
        monkeypatch.delenv(var, raising=False)
    return calls


def test_embedded_ray_sends_channel_batches_inline(init_calls):
    ray_runtime.ensure_ray(num_cpus=2)
    [kw] = init_calls
    assert kw["address"] == "local"
    assert kw["_system_config"] == {"max_direct_call_object_size": 4 * 1024 * 1024}


def test_a_users_system_config_replaces_raystreams(init_calls):
    ray_runtime.ensure_ray("local", _system_config={"max_direct_call_object_size": 1})
    assert init_calls[0]["_system_config"] == {"max_direct_call_object_size": 1}


def test_attaching_to_a_cluster_passes_no_system_config(init_calls):
    ray_runtime.ensure_ray("127.0.0.1:6379")
    [kw] = init_calls
    assert kw["address"] == "127.0.0.1:6379" and "_system_config" not in kw
