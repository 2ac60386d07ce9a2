"""A snapshot a feedback-loop task took at a barrier but never wrote (its checkpoint was
aborted while the feedback edges were logged): what was prepared at the barrier is not
dropped silently (``Task._discard_taken``)."""

from __future__ import annotations

from types import SimpleNamespace

from raystream.engine.task import Task


class _Hooks:
    def __init__(self) -> None:
        self.declined: list[tuple] = []

    def decline(self, cid, vertex_id, subtask, reason, committables=None) -> None:
        self.declined.append((cid, vertex_id, subtask, reason, committables))


class _Backend:
    def __init__(self) -> None:
        self.discarded: list = []

    def discard_snapshot(self, snap) -> None:
        self.discarded.append(snap)


def _task(backends: list) -> SimpleNamespace:
    ops = [SimpleNamespace(ctx=SimpleNamespace(keyed_backend=b)) for b in backends]
    return SimpleNamespace(hooks=_Hooks(), spec=SimpleNamespace(vertex_id=3, subtask_index=1), operators=ops,
                           op_specs=[{"uid": f"op{i}"} for i in range(len(ops))], _guard=lambda i, rec, fn: fn())


def test_committables_go_to_the_master_and_keyed_snapshots_back_to_their_backends():
    rocks, heap = _Backend(), SimpleNamespace()  # (the heap backend has no discard_snapshot)
    task = _task([rocks, heap])
    state = {"op0": {"keyed": "delta-7", "committables": ["part-0"], "op": b"x"},
             "op1": {"keyed": "heap-snap", "op": b"y"}}
    Task._discard_taken(task, 7, state)  # type: ignore[arg-type]
    assert task.hooks.declined == [(7, 3, 1, "aborted while its feedback edges were logged", {"op0": ["part-0"]})]
    assert rocks.discarded == ["delta-7"]


def test_nothing_to_hand_over_declines_nothing():
    task = _task([_Backend()])
    Task._discard_taken(task, 2, {"op0": {"op": b"x"}})  # type: ignore[arg-type]
    assert task.hooks.declined == [] and task.operators[0].ctx.keyed_backend.discarded == []
