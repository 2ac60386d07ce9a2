"""The task actor's garbage-collector threshold (engine.ray_runtime.tune_task_gc)."""

from __future__ import annotations

import gc

import pytest

from raystream.engine.ray_runtime import TASK_GC_THRESHOLD, tune_task_gc


@pytest.fixture
def restore_gc():
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)


def test_raises_the_young_threshold_and_keeps_the_older_ones(restore_gc):
    gc.set_threshold(700, 7, 9)
    tune_task_gc()
    assert gc.get_threshold() == (TASK_GC_THRESHOLD, 7, 9)
    tune_task_gc()  # idempotent
    assert gc.get_threshold() == (TASK_GC_THRESHOLD, 7, 9)


def test_never_lowers_a_higher_threshold(restore_gc):
    gc.set_threshold(TASK_GC_THRESHOLD * 2, 10, 10)
    tune_task_gc()
    assert gc.get_threshold() == (TASK_GC_THRESHOLD * 2, 10, 10)


def test_cyclic_garbage_is_still_collected(restore_gc):
    tune_task_gc()

    class Node:
        pass

    a, b = Node(), Node()
    a.other, b.other = b, a
    del a, b
    assert gc.collect() >= 2
