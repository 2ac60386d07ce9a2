"""The writer that puts task snapshots into checkpoint storage off the task's mailbox thread,
and the naming of state files. Storage and the snapshot format come from the job's injected
:class:`~engine.state_backend.StateBackend` (the engine does not import ``checkpoint``)."""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from .state_backend import StateBackend, default_state_backend

__all__ = ["AsyncSnapshotWriter", "state_dir_name"]

log = logging.getLogger(__name__)


def state_dir_name(uid: str) -> str:
    """The directory that holds operator ``uid``'s state files in a checkpoint.

    A readable prefix (``uid`` with characters other than ``[A-Za-z0-9_.=-]`` replaced by
    ``_``, cut to 48) and 16 hex digits of the SHA-256 of the exact ``uid``: two uids never
    share a file, not even when they differ only in replaced characters (``"a/b"``,
    ``"a b"``, ``"a_b"``) or in case on a case-insensitive filesystem.

    Example:
        >>> state_dir_name("a/b"), state_dir_name("a_b")
        ('a_b-c14cddc033f64b9d', 'a_b-648fa9b31bc7ff7e')
    """
    prefix = re.sub(r"[^A-Za-z0-9_.=-]", "_", uid)[:48].lstrip("._") or "op"  # '_' names are reserved
    digest = hashlib.sha256(uid.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{prefix}-{digest}"


class AsyncSnapshotWriter:
    """Writes a task's snapshot to checkpoint storage on a background thread, then acks.

    ``state`` maps operator uid -> entry with ``keyed`` (a KeyedStateSnapshot), ``op`` and
    ``log`` (bytes) and ``committables``; the ack carries StateHandles instead of data.
    """

    def __init__(self, storage: Any, job_id: str, on_error: Callable[[int, str], None] | None = None,
                 state_backend: StateBackend | None = None) -> None:
        self.storage = storage
        self.job_id = job_id
        self.state_backend = state_backend or default_state_backend()  # writes keyed snapshots
        self.on_error = on_error
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="raystream-snapshot")
        self._lock = threading.Lock()
        self._in_flight = 0  # snapshots submitted and not yet written (or failed)

    def __call__(self, checkpoint_id: int, vertex_id: int, subtask: int, state: dict,
                 send_ack: Callable[[int, int, int, Any], None], decline: Callable[[int, str], None] | None = None) -> None:
        with self._lock:
            self._in_flight += 1
        self._pool.submit(self._write, checkpoint_id, vertex_id, subtask, state, send_ack, decline)

    def in_flight(self) -> int:
        """Snapshots handed over and not yet written or failed (the task declines new
        checkpoints at their barriers while too many are: ``TaskSpec.max_snapshots_in_flight``)."""
        return self._in_flight

    def _write(self, cid: int, vertex_id: int, subtask: int, state: dict, send_ack: Callable, decline: Callable | None) -> None:
        try:
            self._write_one(cid, vertex_id, subtask, state, send_ack, decline)
        finally:
            with self._lock:
                self._in_flight -= 1

    def _write_one(self, cid: int, vertex_id: int, subtask: int, state: dict, send_ack: Callable,
                   decline: Callable | None) -> None:
        try:
            handles: dict[str, dict] = {}
            for uid, entry in state.items():
                out: dict[str, Any] = {"committables": entry.get("committables") or []}
                base = f"{state_dir_name(uid)}/{vertex_id}-{subtask}"
                keyed = entry.get("keyed")
                if keyed is not None:
                    out["keyed"] = self.state_backend.write_snapshot(self.storage, self.job_id, cid, f"{base}-keyed", keyed)
                for part in ("op", "log"):
                    if entry.get(part) is not None:
                        out[part] = self.storage.write_state(self.job_id, cid, f"{base}-{part}", entry[part])
                handles[uid] = out
        except Exception as exc:  # storage trouble declines the checkpoint, never the job
            log.warning("writing checkpoint %s of task %s/%s failed", cid, vertex_id, subtask, exc_info=True)
            # the sinks handed their data over at the barrier: it goes with the decline, so
            # the master retains it for the next checkpoint instead of losing it
            committables = {uid: list(e["committables"]) for uid, e in state.items() if e.get("committables")}
            if decline is not None:
                decline(cid, f"writing state failed: {exc!r}", committables)
            elif committables:
                raise RuntimeError(f"checkpoint {cid}: committables of {sorted(committables)} could not be handed "
                                   "on (no decline hook)") from exc
            return
        send_ack(cid, vertex_id, subtask, handles)

    def drain(self) -> None:
        """Block until every snapshot submitted so far is written and acked/declined.

        A closed writer (its task was cancelled: the attempt is over, and its acks would be
        dropped) has nothing to wait for: this returns at once.
        """
        try:
            done = self._pool.submit(lambda: None)
        except RuntimeError:  # close() shut the pool down
            return
        done.result()

    def close(self) -> None:
        self._pool.shutdown(wait=False)
