"""Exactly-once commits under seeded random interleavings of the checkpoint protocol (no Ray).

Two sink subtasks prepare a committable at every barrier they process (what they wrote since
their previous one). A seeded scheduler interleaves what the job master sees: triggers, the
tasks' acks and declines (each task reports in barrier order, as its snapshot writer and its
calls to the master do; a task told of an abort before it reached that barrier skips it),
timeouts of pending and of finalizing checkpoints, ``_metadata`` writes that land, fail or land
after their checkpoint timed out, and restarts (taken while a metadata write is in flight,
settled afterwards, then a restore from the newest complete checkpoint in storage). The
driver below does what :class:`~engine.master.JobMaster` does with
:class:`~checkpoint.coordinator.CheckpointCoordinator` (``_finalizing``, ``_abort``,
``_plan_from_latest_checkpoint``, ``_final_checkpoint``), and checks the two halves of
exactly once:

* at a restore from checkpoint ``r``, nothing prepared at a barrier after ``r`` has been
  committed (its data is replayed: a commit would duplicate it), and once the restore's
  re-commit is done everything prepared at or before ``r`` is committed (its data is not
  replayed: missing, it is lost);
* at the end (the tasks finish, the final checkpoint), everything prepared is committed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from raystream.checkpoint import CheckpointStorage
from raystream.checkpoint.coordinator import (
    CheckpointConfig,
    CheckpointCoordinator,
    build_restore_plan,
)

TASKS = [(0, 0), (0, 1)]
GRAPH = {"parallelism": {0: 2}, "max_parallelism": 128}
VERTICES = [{"id": 0, "parallelism": 2, "uids": ["sink"], "source_uid": None}]
FINAL = 1 << 40  # the barrier of what a task holds at its end of input


@dataclass
class Sink:
    task: tuple[int, int]
    queued: list[int] = field(default_factory=list)  # barriers on their way to the task, in order


@dataclass
class Run:
    coord: CheckpointCoordinator
    storage: CheckpointStorage
    rng: random.Random
    sinks: list[Sink]
    attempt: int = 0
    status: str = "RUNNING"
    told_aborted: set[int] = field(default_factory=set)
    prepared: dict[str, int] = field(default_factory=dict)  # committable -> its barrier
    committed: set[str] = field(default_factory=set)
    writing: dict[int, object] = field(default_factory=dict)  # checkpoint id -> p, metadata write in flight
    log: list[str] = field(default_factory=list)

    # -- the job master's side -------------------------------------------------------------
    def commit(self, comms: dict[str, list]) -> None:
        self.committed.update(comms.get("sink", []))

    def abort(self, p, reason: str) -> None:
        self.coord.abort(p, reason)
        self.told_aborted.add(p.checkpoint_id)

    def finalized(self, p, ok: bool, error: BaseException | None) -> None:
        """``_finalizing`` after the metadata write of ``p`` ended."""
        c = self.coord
        aborted_meanwhile = p.status != "FINALIZING"
        ok = c.end_finalize(p, error)
        if not ok and error is None and aborted_meanwhile and self.status != "CANCELLED":
            ok = c.complete_late(p)
        if not ok:
            if error is not None and not aborted_meanwhile:
                self.told_aborted.add(p.checkpoint_id)
            return
        todo = c.to_commit(p)
        if p.commits:
            self.commit(todo)
            for cid in p.commits:
                c.committed(cid)

    def settle_write(self, cid: int, lands: bool) -> None:
        p = self.writing.pop(cid)
        error = None
        if lands:
            self.coord.complete(p, GRAPH)
        else:
            error = OSError("metadata write failed")
        self.log.append(f"write {cid} {'lands' if lands else 'fails'}")
        self.finalized(p, lands, error)

    def acked(self, p) -> None:
        if p is not None:
            self.coord.begin_finalize(p)
            self.writing[p.checkpoint_id] = p

    # -- the tasks' side ---------------------------------------------------------------------
    def name(self, sink: Sink, barrier: int) -> str:
        return f"{sink.task[1]}@{barrier}/a{self.attempt}"

    def task_step(self, sink: Sink) -> None:
        cid = sink.queued.pop(0)
        if cid in self.told_aborted and self.rng.random() < 0.5:
            self.log.append(f"task {sink.task} skips aborted barrier {cid}")
            return  # (its data goes with its next barrier)
        comm = self.name(sink, cid)
        self.prepared[comm] = cid
        if self.rng.random() < 0.15:  # its snapshot could not be written: declined with what it prepared
            self.log.append(f"task {sink.task} declines {cid}")
            p = self.coord.get(cid)
            self.coord.retain(cid, {"sink": [comm]})
            if p is not None and p.status == "PENDING":
                self.abort(p, "declined")
            return
        self.log.append(f"task {sink.task} acks {cid}")
        self.acked(self.coord.acknowledge(cid, sink.task, {"sink": {"committables": [comm]}}))

    # -- restarts and the end ----------------------------------------------------------------
    def restart(self) -> None:
        c = self.coord
        self.log.append("restart")
        self.status = "RESTARTING"
        self.attempt += 1
        c.reset_for_restart()
        for cid in list(self.writing):  # (the master waits for the writes in flight)
            self.settle_write(cid, self.rng.random() < 0.6)
        found = c.latest_restorable()
        restored = found[0] if found else 0
        committed_after = sorted(x for x in self.committed if self.prepared[x] > restored)
        assert not committed_after, (f"restoring checkpoint {restored}: committed, yet replayed: "
                                     f"{committed_after}\n" + "\n".join(self.log))
        if found:
            _plan, comms = build_restore_plan(found[1], self.storage.read_state, VERTICES, 128)
            self.commit(comms)
            self.commit(c.take_retained(restored))
        else:
            c.take_retained(None)
        lost = sorted(x for x, b in self.prepared.items() if b <= restored and x not in self.committed)
        assert not lost, f"restored checkpoint {restored}: never committed: {lost}\n" + "\n".join(self.log)
        # what was prepared after the restored checkpoint is made again by the replay
        self.prepared = {x: b for x, b in self.prepared.items() if b <= restored}
        self.told_aborted = set()
        for sink in self.sinks:
            sink.queued = []
        self.status = "RUNNING"

    def finish(self) -> None:
        """Every task drains its barriers and ends; then the job's final checkpoint."""
        c = self.coord
        self.log.append("finish")
        for sink in self.sinks:
            while sink.queued:
                self.task_step(sink)
            comm = self.name(sink, FINAL)
            self.prepared[comm] = FINAL
            self.acked(c.task_finished(sink.task, {}, {"sink": [comm]}))
        for cid in list(self.writing):
            self.settle_write(cid, True)
        for p in list(c.checkpoints.values()):
            self.abort(p, "every task has finished")
        p = c.trigger()
        self.acked(p if not p.waiting else None)
        self.settle_write(p.checkpoint_id, True)
        missing = sorted(x for x in self.prepared if x not in self.committed)
        assert not missing, f"the job finished, never committed: {missing}\n" + "\n".join(self.log)


def step(run: Run) -> None:
    c, rng = run.coord, run.rng
    moves = []
    if c.can_trigger():
        moves.append("trigger")
    if any(s.queued for s in run.sinks):
        moves += ["task"] * 4
    if c.checkpoints:
        moves.append("timeout")
    if run.writing:
        moves += ["write"] * 2
    moves.append("restart" if rng.random() < 0.3 else "task")
    move = rng.choice(moves)
    if move == "trigger":
        p = c.trigger()
        run.log.append(f"trigger {p.checkpoint_id}")
        for sink in run.sinks:
            sink.queued.append(p.checkpoint_id)
    elif move == "task":
        ready = [s for s in run.sinks if s.queued]
        if ready:
            run.task_step(rng.choice(ready))
    elif move == "timeout":
        p = rng.choice(list(c.checkpoints.values()))
        run.log.append(f"timeout {p.checkpoint_id} ({p.status.lower()})")
        run.abort(p, "timed out")
    elif move == "write":
        run.settle_write(rng.choice(sorted(run.writing)), rng.random() < 0.7)
    elif move == "restart":
        run.restart()


@pytest.mark.parametrize("seed", range(40))
def test_every_committable_is_committed_once_its_data_is_not_replayed_and_never_before(tmp_path, seed):
    rng = random.Random(seed)
    storage = CheckpointStorage(str(tmp_path))
    # (tolerable_failures=None: aborts never raise; can_trigger() bounds the metadata writes in
    # flight as the master's loop does)
    coord = CheckpointCoordinator(CheckpointConfig(100, checkpoint_dir=str(tmp_path)), "job", TASKS, storage)
    run = Run(coord, storage, rng, [Sink(t) for t in TASKS])
    for _ in range(120):
        step(run)
    run.finish()
