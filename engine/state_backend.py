"""The contract between the engine runtime and the state layer (``checkpoint``): a
:class:`StateBackend` creates keyed state backends, (de)serializes their snapshots, and
creates the checkpoint coordinator and checkpoint storage of a job.

The engine never imports ``checkpoint``: an implementation is *injected* through
``JobConfig.state_backend``, and when a job does not name one, :func:`default_state_backend`
returns the one that registered itself as the default (``checkpoint`` registers its heap
backend when it is imported, which every API user does). This keeps the dependency arrows
one way: ``checkpoint`` -> engine contracts, engine runtime -> engine contracts.

Example:
    >>> import checkpoint  # registers the heap backend
    >>> type(default_state_backend()).__name__
    'HeapStateBackend'
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable, Protocol

from .errors import ConfigError
from .keygroups import KeyGroupRange
from .operator import OperatorContext

__all__ = [
    "CheckpointCoordinatorLike",
    "CheckpointStorageLike",
    "KeyedBackend",
    "StateBackend",
    "default_state_backend",
    "register_default_state_backend",
]


class KeyedBackend(Protocol):
    """What the task runtime needs of a keyed state backend (operators use its full API)."""

    def snapshot(self, checkpoint_id: int) -> Any:
        """A snapshot of every key group (copied: processing may go on)."""

    def restore(self, snapshots: list[Any]) -> None:
        """Load the key groups of this backend's range from deserialized snapshots."""

    def trust_restored_key_types(self) -> None:
        """The restore was the job's own (restart, takeover): skip the check of its first
        keys' types (see ``checkpoint.snapshot.KeyTypeCheck``)."""

    def clear_current_key(self) -> None:
        """No key is current any more (before the operators close: keyed state used in a
        ``close()`` raises instead of acting on the last record's key)."""


class CheckpointStorageLike(Protocol):
    """What the runtime needs of checkpoint storage (``checkpoint.CheckpointStorage``)."""

    def write_state(self, job_id: str, checkpoint_id: int, name: str, data: bytes) -> Any: ...

    def read_state(self, handle: Any) -> bytes: ...

    def list_checkpoints(self, job_id: str) -> list[int]: ...

    def write_commit_log(self, job_id: str, checkpoint_id: int, label: str, entry: Any) -> None: ...

    def read_commit_log(self, job_id: str, upto: int) -> list[tuple[str, Any]]: ...

    def read_savepoint(self, path: str) -> tuple[dict, Any]: ...

    def write_savepoint(self, path: str, metadata: dict, states: dict[str, bytes]) -> str: ...


class CheckpointCoordinatorLike(Protocol):
    """The checkpoint coordinator the job master drives (``checkpoint.CheckpointCoordinator``:
    its docstring states the protocol)."""

    storage: Any
    config: Any
    checkpoints: dict[int, Any]
    completed: deque[int]  # the newest completed checkpoint ids (bounded), ascending
    history: deque[dict]  # the newest checkpoints' outcomes (bounded)
    completed_count: int
    aborted_count: int
    finished: dict

    def can_trigger(self, savepoint: bool = False) -> bool: ...

    def trigger(self, savepoint: str | None = None, stop: bool = False) -> Any: ...

    def get(self, checkpoint_id: int) -> Any: ...

    def acknowledge(self, checkpoint_id: int, task: tuple[int, int], state: dict) -> Any: ...

    def retain(self, checkpoint_id: int, committables: dict[str, list]) -> None: ...

    def task_finished(self, task: tuple[int, int], final_state: dict, committables: dict[str, list]) -> Any: ...

    def begin_finalize(self, p: Any) -> None: ...

    def complete(self, p: Any, graph_info: dict) -> dict: ...

    def end_finalize(self, p: Any, error: BaseException | None = None) -> bool: ...

    def complete_late(self, p: Any) -> bool: ...

    def writes_blocking(self) -> list[int]: ...

    def skip_blocked(self) -> Any: ...

    def to_commit(self, p: Any) -> dict[str, list]: ...

    def committed(self, checkpoint_id: int) -> None: ...

    def abort(self, p: Any, reason: str) -> Any: ...

    def timed_out(self) -> list[Any]: ...

    def reset_for_restart(self) -> None: ...

    def take_retained(self, restored_id: int | None) -> dict[str, list]: ...

    def start_after(self, checkpoint_id: int) -> None: ...

    def latest_restorable(self) -> tuple[int, dict] | None: ...

    def stats(self) -> dict: ...


class StateBackend(Protocol):
    """Where keyed state lives and how checkpoints are coordinated and stored (Flink's
    ``StateBackend`` + ``CheckpointStorage`` factories). Picklable: it travels to every task."""

    def create_keyed_backend(self, ctx: OperatorContext) -> Any:
        """A keyed state backend for one keyed operator of one subtask (``ctx`` names its
        key-group range, max parallelism and clock)."""

    def serialize_snapshot(self, snapshot: Any) -> bytes:
        """Bytes of a keyed snapshot (what a checkpoint stores per task)."""

    def deserialize_snapshot(self, data: bytes, key_group_range: KeyGroupRange) -> Any:
        """A keyed snapshot read back, limited to ``key_group_range`` where possible."""

    def write_snapshot(self, storage: Any, job_id: str, checkpoint_id: int, name: str, snapshot: Any) -> Any:
        """Write a keyed snapshot of checkpoint ``checkpoint_id`` to ``storage`` (called by the
        task's snapshot writer, off the mailbox thread) and return the handle that goes into
        the checkpoint's metadata. A backend with incremental checkpoints uploads only the
        files the previous ones did not; the heap backend writes ``serialize_snapshot``."""

    def create_coordinator(self, config: Any, job_id: str, tasks: list[tuple[int, int]]) -> CheckpointCoordinatorLike:
        """The checkpoint coordinator of a job (``config``: its checkpoint config)."""

    def restore_plan(self, metadata: dict, read: Callable[[Any], bytes], vertices: list[dict], max_parallelism: int,
                     allow_non_restored_state: bool = True, claim: bool = True) -> tuple[dict, dict[str, list]]:
        """What every task of a (possibly rescaled) job restores, and what to re-commit.

        ``claim``: the checkpoint is the job's own (a restart): its next checkpoints may
        reference the restored files instead of writing them again. False for
        ``from_savepoint`` (a savepoint, or a retained checkpoint directory of another job,
        which its owner may delete): the job's checkpoints never depend on those files."""

    def open_storage(self, location: Any) -> CheckpointStorageLike:
        """Checkpoint/savepoint storage at ``location`` (path, URI or storage object)."""


_default: list[Callable[[], StateBackend]] = []


def register_default_state_backend(factory: Callable[[], StateBackend]) -> None:
    """Make ``factory()`` the state backend of jobs that do not name one."""
    _default[:] = [factory]


def default_state_backend() -> StateBackend:
    """The registered default state backend (see the module docstring)."""
    if not _default:
        raise ConfigError(
            "no state backend is configured: set JobConfig.state_backend, or import the 'checkpoint' "
            "package (it registers its heap state backend as the default)"
        )
    return _default[0]()
