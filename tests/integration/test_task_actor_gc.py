"""A task actor's process runs with the raised young-generation GC threshold."""

from __future__ import annotations

import gc

import ray

from raystream.engine.ray_runtime import NAMESPACE, TASK_GC_THRESHOLD, TaskActor, kill_quietly


def _threshold(_actor: object) -> tuple[int, int, int]:
    return gc.get_threshold()


def test_task_actor_process_has_the_task_gc_threshold():
    actor = TaskActor.options(namespace=NAMESPACE, max_concurrency=4).remote()  # type: ignore[attr-defined]
    try:
        young, middle, old = ray.get(actor.__ray_call__.remote(_threshold), timeout=120)
        assert young == TASK_GC_THRESHOLD
        assert (middle, old) == gc.get_threshold()[1:]  # the older generations keep CPython's defaults
    finally:
        kill_quietly([actor])
