"""A fault-injecting ``pyarrow.fs`` filesystem for failure drills of checkpoints and sinks.

:class:`FaultInjectingHandler` wraps another filesystem and, following a list of
:class:`FaultRule`, delays chosen operations or makes them fail with :class:`InjectedFault`
(an ``OSError``, what a real filesystem raises). Wrap it with ``pyarrow.fs.PyFileSystem`` (or
call :func:`faulty_filesystem`) and give the result to checkpoint storage as a
``(filesystem, path)`` location::

    fs = faulty_filesystem(rules=[FaultRule("write_metadata", delay_s=0.9)], seed=7)
    env.enable_checkpointing(100, checkpoint_dir=(fs, "/tmp/chk"), timeout_ms=600)

Operations, as a rule's ``op`` names them:

=================  =================================================================
``write_state``    ``open_output_stream`` of a file inside a ``chk-<n>/`` directory
                   that is not ``_metadata`` (a task's state file)
``write_metadata`` ``open_output_stream`` of ``_metadata`` or its temporary file
                   ``_metadata.inprogress-*`` (completes a checkpoint or savepoint)
``write``          any other ``open_output_stream`` / ``open_append_stream``
``move``           ``move`` (rename); the glob is matched against source and target
``create_dir``     ``create_dir`` (e.g. ``path_glob="*/chk-4"``: checkpoint 4's directory
                   and those below it cannot be created, so none of its files can be
                   written)
``list``           ``get_file_info`` with a ``FileSelector`` (directory listing)
``info``           ``get_file_info`` of paths (existence checks)
``read``           ``open_input_stream`` / ``open_input_file``
``delete``         ``delete_file`` / ``delete_dir`` / ``delete_dir_contents``
``copy``           ``copy_file``
``*``              every operation
=================  =================================================================

**Deterministic across processes.** Checkpoint storage is pickled and shipped to the job
master and to every task actor, so the handler can share no state between processes.
Whether a probabilistic rule fires (and how long a jittered delay is) is decided from a
SHA-256 hash of ``(seed, rule index, op, path key, occurrence)``: every process decides the
same for the same file. The *path key* is the path's last two segments with random tokens
(hex runs of 8 or more characters after ``-`` or ``.``, as in job ids and
``.inprogress-<uuid>`` names) masked, so a seed picks the same checkpoint files in every run;
*occurrence* counts how often this process saw that (rule, op, path key) before, so a retried
operation is decided anew. ``times`` limits how often a rule fires **per process**.

Injected faults are counted per process (:meth:`FaultInjectingHandler.counts`); give
``log_path`` to also append one JSON line per fault to a shared local file, which
:func:`read_fault_log` sums up over every process of a job.

Example:
    >>> import tempfile, pyarrow.fs as pafs
    >>> from raystream.checkpoint import CheckpointStorage
    >>> fs = faulty_filesystem(rules=[FaultRule("create_dir", path_glob="*/chk-2", fail=True)])
    >>> storage = CheckpointStorage((fs, tempfile.mkdtemp()))
    >>> storage.write_state("job", 1, "op-0", b"ok").path
    'job/chk-1/op-0'
    >>> storage.write_state("job", 2, "op-0", b"lost")
    Traceback (most recent call last):
    ...
    raystream.engine.errors.CheckpointError: cannot create checkpoint directory ...
    >>> fs.handler.counts()
    {'create_dir:fail': 1}
"""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import json
import os
import posixpath
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import pyarrow as pa
import pyarrow.fs as pafs

from raystream.engine.errors import ConfigError

__all__ = [
    "FAULT_OPS",
    "FaultRule",
    "FaultInjectingHandler",
    "InjectedFault",
    "faulty_filesystem",
    "read_fault_log",
]

R = TypeVar("R")  # what a wrapped filesystem call returns

#: the operation names a :class:`FaultRule` can target ("*": all of them)
FAULT_OPS = frozenset(
    {"write_state", "write_metadata", "write", "move", "create_dir", "list", "info", "read",
     "delete", "copy", "*"}
)  # fmt: skip

#: the ops that write a file (a rule with ``full_after_bytes`` targets one of them)
_WRITE_OPS = frozenset({"write_state", "write_metadata", "write", "*"})

_CHK_SEGMENT = re.compile(r"^chk-\d+$")
# random tokens: hex runs after '-' or '.' (job id suffixes, uuids of temporary files); not
# the number of a chk-<n> directory
_RANDOM_TOKEN = re.compile(r"(?<!chk-)(?<=[-.])[0-9a-f]{8,}(?=$|[-./])")


class InjectedFault(OSError):
    """The error a failing :class:`FaultRule` raises (an ``OSError``, as real I/O errors are)."""


@dataclass(frozen=True)
class FaultRule:
    """What to do to the operations that match ``op`` and ``path_glob``.

    A matching operation is first delayed by ``delay_s`` (plus up to ``delay_jitter_s``),
    then fails if ``fail`` is set or, with probability ``fail_probability``, by a
    deterministic draw (see the module docstring). Every rule that matches acts, in order.

    Args:
        op: an operation name of :data:`FAULT_OPS` (``"write_state"``, ``"move"``...).
        path_glob: ``fnmatch`` pattern on the full path (``*`` also matches ``/``); it
            matches a path if it matches the path itself or a directory above it, so
            ``"*/chk-4"`` is checkpoint 4's directory and everything in it.
        delay_s: seconds to sleep before the operation.
        delay_jitter_s: extra seconds, drawn uniformly in ``[0, delay_jitter_s)``.
        fail: always fail.
        fail_probability: fail with this probability (0 to 1).
        after: fail *after* performing the operation (the file is written, the rename
            done, but the caller gets an error: an ambiguous outcome, as after a timeout).
        times: act on at most this many operations per process (None: no limit).
        full_after_bytes: a full disk (with ``fail`` or ``fail_probability``, on a write):
            the file opens, takes this many bytes, then every write fails with
            ``ENOSPC`` and the partial file stays, as on a device that filled up.

    Example:
        >>> FaultRule("write_state", fail_probability=0.2).fail_probability
        0.2
        >>> FaultRule("write", fail=True, full_after_bytes=10).full_after_bytes
        10
        >>> FaultRule("rename")
        Traceback (most recent call last):
        ...
        raystream.engine.errors.ConfigError: FaultRule op must be one of [...], got 'rename'
    """

    op: str
    path_glob: str = "*"
    delay_s: float = 0.0
    delay_jitter_s: float = 0.0
    fail: bool = False
    fail_probability: float = 0.0
    after: bool = False
    times: int | None = None
    full_after_bytes: int | None = None

    def __post_init__(self) -> None:
        if self.op not in FAULT_OPS:
            raise ConfigError(f"FaultRule op must be one of {sorted(FAULT_OPS)}, got {self.op!r}")
        if not isinstance(self.path_glob, str) or not self.path_glob:
            raise ConfigError(
                f"FaultRule path_glob must be a non-empty str, got {self.path_glob!r}"
            )
        if self.delay_s < 0 or self.delay_jitter_s < 0:
            raise ConfigError(
                f"FaultRule delays must be >= 0, got delay_s={self.delay_s!r}, "
                f"delay_jitter_s={self.delay_jitter_s!r}"
            )
        if not 0.0 <= self.fail_probability <= 1.0:
            raise ConfigError(
                f"FaultRule fail_probability must be between 0 and 1, got {self.fail_probability!r}"
            )
        if self.times is not None and (isinstance(self.times, bool) or self.times < 1):
            raise ConfigError(f"FaultRule times must be None or >= 1, got {self.times!r}")
        if self.full_after_bytes is not None:
            if isinstance(self.full_after_bytes, bool) or not isinstance(self.full_after_bytes, int) \
                    or self.full_after_bytes < 0:
                raise ConfigError(f"FaultRule full_after_bytes must be None or an int >= 0, got {self.full_after_bytes!r}")
            if self.op not in _WRITE_OPS or self.after or not (self.fail or self.fail_probability):
                raise ConfigError(
                    f"FaultRule({self.op!r}, full_after_bytes={self.full_after_bytes!r}) fills the disk of a write: "
                    f"op must be one of {sorted(_WRITE_OPS)}, with fail=True or fail_probability and without after=True"
                )
        if not (self.delay_s or self.delay_jitter_s or self.fail or self.fail_probability):
            raise ConfigError(
                f"FaultRule({self.op!r}, path_glob={self.path_glob!r}) does nothing: give "
                "delay_s, delay_jitter_s, fail=True or fail_probability"
            )

    def matches(self, op: str, paths: Sequence[str]) -> bool:
        """True if the rule targets ``op`` on any of ``paths`` or a directory above one.

        Example:
            >>> rule = FaultRule("create_dir", path_glob="*/chk-4", fail=True)
            >>> rule.matches("create_dir", ["/b/job/chk-4/op-uid"]), rule.matches("create_dir", ["/b/job/chk-40"])
            (True, False)
        """
        if self.op != "*" and self.op != op:
            return False
        return any(
            fnmatch.fnmatchcase(a, self.path_glob) for p in paths for a in _self_and_parents(p)
        )


def _self_and_parents(path: str) -> list[str]:
    """``path`` and every directory above it: ``/a/b/c`` -> ``/a/b/c``, ``/a/b``, ``/a``."""
    out = [path]
    head = path.rstrip("/")
    while "/" in head.lstrip("/"):
        head = head.rsplit("/", 1)[0]
        out.append(head)
    return out


def path_key(path: str) -> str:
    """The part of ``path`` that decides a draw: its last two segments, random tokens masked.

    Example:
        >>> path_key("/tmp/base/wc-3fa4b2c1/chk-12/_metadata.inprogress-0123456789abcdef")
        'chk-12/_metadata.inprogress-*'
    """
    tail = "/".join(path.rstrip("/").split("/")[-2:])
    return _RANDOM_TOKEN.sub("*", tail)


def _unit(*parts: object) -> float:
    """A uniform number in [0, 1) determined by ``parts`` (the same in every process)."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def classify_write(path: str) -> str:
    """The op name of writing ``path``: ``write_metadata``, ``write_state`` or ``write``.

    Example:
        >>> classify_write("/b/job/chk-3/op-0-keyed"), classify_write("/b/job/chk-3/_metadata")
        ('write_state', 'write_metadata')
    """
    base = posixpath.basename(path)
    if base == "_metadata" or base.startswith("_metadata."):
        return "write_metadata"
    parents = path.split("/")[:-1]
    if any(_CHK_SEGMENT.match(p) for p in parents):
        return "write_state"
    return "write"


class _FailOnClose:
    """A writable file object that closes the real stream, then raises (``after=True``)."""

    def __init__(self, inner: pa.NativeFile, error: InjectedFault) -> None:
        self._inner = inner
        self._error = error
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> int:
        return self._inner.write(data)

    def flush(self) -> None:
        self._inner.flush()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._inner.close()
        raise self._error


class _FullDisk:
    """A writable file object on a device that fills up after ``room`` bytes: the bytes up to
    it are written (a partial file stays), every write after fails with ``ENOSPC``."""

    def __init__(self, inner: pa.NativeFile, room: int, error: InjectedFault) -> None:
        self._inner = inner
        self._room = room
        self._error = error
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> int:
        view = memoryview(data).cast("B")
        if len(view) > self._room:
            if self._room:
                self._inner.write(view[: self._room])
                self._inner.flush()
            self._room = 0
            raise self._error
        self._room -= len(view)
        return self._inner.write(view)

    def flush(self) -> None:
        self._inner.flush()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._inner.close()


class FaultInjectingHandler(pafs.FileSystemHandler):
    """A ``pyarrow.fs.FileSystemHandler`` that delays or fails operations of ``inner``.

    Use it as ``pyarrow.fs.PyFileSystem(FaultInjectingHandler(...))`` (see
    :func:`faulty_filesystem`). It is thread-safe and picklable (a copy starts with fresh
    counts); decisions are deterministic across processes (see the module docstring).

    Args:
        inner: the filesystem to wrap (default: the local one).
        rules: what to inject, applied in order.
        seed: seeds the deterministic draws of probabilistic rules and jittered delays.
        log_path: a local file to which every injected fault is appended as a JSON line
            (from every process that uses a copy); sum it up with :func:`read_fault_log`.
        sleep: how to wait out a delay (default ``time.sleep``; tests pass a recorder).
            Travels with pickled copies, so it must be picklable.

    Example:
        >>> import tempfile, pyarrow.fs as pafs
        >>> h = FaultInjectingHandler(rules=[FaultRule("move", fail=True, times=1)])
        >>> fs = pafs.PyFileSystem(h)
        >>> d = tempfile.mkdtemp()
        >>> with fs.open_output_stream(f"{d}/a") as out:
        ...     _ = out.write(b"x")
        >>> fs.move(f"{d}/a", f"{d}/b")
        Traceback (most recent call last):
        ...
        raystream.checkpoint.faults.InjectedFault: injected fault: move ... (rule 0)
        >>> fs.move(f"{d}/a", f"{d}/b")  # times=1: only the first move fails
        >>> h.counts()
        {'move:fail': 1}
    """

    def __init__(
        self,
        inner: pafs.FileSystem | None = None,
        rules: Iterable[FaultRule] = (),
        seed: int = 0,
        log_path: str | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self._inner = inner if inner is not None else pafs.LocalFileSystem()
        if not isinstance(self._inner, pafs.FileSystem):
            raise ConfigError(f"FaultInjectingHandler wraps a pyarrow.fs.FileSystem, got {inner!r}")
        self._rules = tuple(rules)
        for rule in self._rules:
            if not isinstance(rule, FaultRule):
                raise ConfigError(f"FaultInjectingHandler rules must be FaultRule, got {rule!r}")
        self._seed = seed
        self._log_path = os.fspath(log_path) if log_path is not None else None
        self._sleep = sleep
        self._lock = threading.Lock()
        self._seen: Counter[tuple[int, str, str]] = Counter()
        self._fired: Counter[int] = Counter()
        self._counts: Counter[str] = Counter()

    def __reduce__(self) -> tuple[type[FaultInjectingHandler], tuple[object, ...]]:
        return (type(self), (self._inner, self._rules, self._seed, self._log_path, self._sleep))

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, FaultInjectingHandler)
            and self._inner.equals(other._inner)
            and (self._rules, self._seed, self._log_path)
            == (other._rules, other._seed, other._log_path)
        )

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = None  # type: ignore[assignment]  # mutable counters; equal by configuration

    def __repr__(self) -> str:
        return (
            f"FaultInjectingHandler({self._inner.type_name}, rules={list(self._rules)!r}, "
            f"seed={self._seed!r})"
        )

    @property
    def inner(self) -> pafs.FileSystem:
        """The wrapped filesystem."""
        return self._inner

    @property
    def rules(self) -> tuple[FaultRule, ...]:
        """The rules, in the order they are applied."""
        return self._rules

    @property
    def seed(self) -> int:
        """The seed of the deterministic draws."""
        return self._seed

    def counts(self) -> dict[str, int]:
        """Faults injected by this process's copy, as ``{"<op>:delay" | "<op>:fail": n}``."""
        with self._lock:
            return dict(sorted(self._counts.items()))

    # -- the injection -----------------------------------------------------------------

    def _decide(self, op: str, paths: Sequence[str]) -> tuple[float, InjectedFault | None, bool, int | None]:
        """(seconds to sleep, error to raise or None, raise after the operation?, bytes a
        write takes before the disk is full or None)."""
        delay = 0.0
        error: InjectedFault | None = None
        after = False
        room: int | None = None
        shown = paths[0] if len(paths) == 1 else list(paths)
        for index, rule in enumerate(self._rules):
            if not rule.matches(op, paths):
                continue
            key = path_key(paths[-1])
            with self._lock:
                occurrence = self._seen[(index, op, key)]
                self._seen[(index, op, key)] += 1
                if rule.times is not None and self._fired[index] >= rule.times:
                    continue
            fails = rule.fail or (
                rule.fail_probability > 0
                and _unit(self._seed, index, op, key, occurrence, "fail") < rule.fail_probability
            )
            wait = rule.delay_s
            if rule.delay_jitter_s:
                wait += rule.delay_jitter_s * _unit(self._seed, index, op, key, occurrence, "delay")
            if not fails and not wait:
                continue  # a probabilistic rule that did not fire
            with self._lock:
                if rule.times is not None and self._fired[index] >= rule.times:
                    continue
                self._fired[index] += 1
                if wait:
                    self._counts[f"{op}:delay"] += 1
                if fails and error is None:
                    self._counts[f"{op}:fail"] += 1
            if wait:
                delay += wait
                self._log(op, shown, "delay", index, wait)
            if fails and error is None:
                if rule.full_after_bytes is not None:
                    room = rule.full_after_bytes
                    error = InjectedFault(errno.ENOSPC, f"No space left on device (injected fault: {op} {shown!r} "
                                                        f"after {room} bytes, rule {index})")
                else:
                    error = InjectedFault(f"injected fault: {op} {shown!r} (rule {index})")
                after = rule.after
                self._log(op, shown, "fail", index, 0.0)
        return delay, error, after, room

    def _log(self, op: str, path: str | list[str], action: str, rule: int, seconds: float) -> None:
        if self._log_path is None:
            return
        line = json.dumps(
            {
                "op": op,
                "path": path,
                "action": action,
                "rule": rule,
                "seconds": round(seconds, 4),
                "pid": os.getpid(),
                "time": time.time(),
            }  # fmt: skip
        )
        # one write() of a short line with O_APPEND: lines of concurrent processes never mix
        fd = os.open(self._log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)

    def _run(self, op: str, paths: Sequence[str], call: Callable[[], R]) -> R:
        delay, error, after, _room = self._decide(op, paths)
        if delay:
            (self._sleep or time.sleep)(delay)
        if error is not None and not after:
            raise error
        result = call()
        if error is not None:
            raise error
        return result

    # -- FileSystemHandler -------------------------------------------------------------

    def get_type_name(self) -> str:
        return f"faulty+{self._inner.type_name}"

    def normalize_path(self, path: str) -> str:
        return self._inner.normalize_path(path)

    def get_file_info(self, paths: list[str]) -> list[pafs.FileInfo]:
        return self._run("info", list(paths) or [""], lambda: self._inner.get_file_info(paths))

    def get_file_info_selector(self, selector: pafs.FileSelector) -> list[pafs.FileInfo]:
        return self._run("list", [selector.base_dir], lambda: self._inner.get_file_info(selector))

    def create_dir(self, path: str, recursive: bool) -> None:
        self._run("create_dir", [path], lambda: self._inner.create_dir(path, recursive=recursive))

    def delete_dir(self, path: str) -> None:
        self._run("delete", [path], lambda: self._inner.delete_dir(path))

    def delete_dir_contents(self, path: str, missing_dir_ok: bool = False) -> None:
        self._run(
            "delete",
            [path],
            lambda: self._inner.delete_dir_contents(path, missing_dir_ok=missing_dir_ok),
        )

    def delete_root_dir_contents(self) -> None:
        self._run(
            "delete", ["/"], lambda: self._inner.delete_dir_contents("/", accept_root_dir=True)
        )

    def delete_file(self, path: str) -> None:
        self._run("delete", [path], lambda: self._inner.delete_file(path))

    def move(self, src: str, dest: str) -> None:
        self._run("move", [src, dest], lambda: self._inner.move(src, dest))

    def copy_file(self, src: str, dest: str) -> None:
        self._run("copy", [src, dest], lambda: self._inner.copy_file(src, dest))

    def open_input_stream(self, path: str) -> pa.NativeFile:
        return self._run("read", [path], lambda: self._inner.open_input_stream(path))

    def open_input_file(self, path: str) -> pa.NativeFile:
        return self._run("read", [path], lambda: self._inner.open_input_file(path))

    def open_output_stream(self, path: str, metadata: dict[str, str] | None) -> pa.NativeFile:
        return self._open_writer(
            path, lambda: self._inner.open_output_stream(path, metadata=metadata)
        )

    def open_append_stream(self, path: str, metadata: dict[str, str] | None) -> pa.NativeFile:
        return self._open_writer(
            path, lambda: self._inner.open_append_stream(path, metadata=metadata)
        )

    def _open_writer(self, path: str, open_: Callable[[], pa.NativeFile]) -> pa.NativeFile:
        op = classify_write(path)
        delay, error, after, room = self._decide(op, [path])
        if delay:
            (self._sleep or time.sleep)(delay)
        if error is not None and room is not None:  # a full disk: opens, then writes fail
            return pa.PythonFile(_FullDisk(open_(), room, error), mode="w")
        if error is not None and not after:
            raise error
        stream = open_()
        if error is not None:  # written in full, then the close reports an error
            return pa.PythonFile(_FailOnClose(stream, error), mode="w")
        return stream


def faulty_filesystem(
    inner: pafs.FileSystem | None = None,
    rules: Iterable[FaultRule] = (),
    seed: int = 0,
    log_path: str | None = None,
    sleep: Callable[[float], None] | None = None,
) -> pafs.PyFileSystem:
    """A ``pyarrow.fs.PyFileSystem`` over a :class:`FaultInjectingHandler` (same arguments).

    Its ``handler`` attribute is the handler (for :meth:`~FaultInjectingHandler.counts`).
    Object stores wrapped this way lose their type name (``"py::faulty+s3"``), so checkpoint
    storage treats them as filesystems with directories and renames.

    Example:
        >>> fs = faulty_filesystem(rules=[FaultRule("write_metadata", delay_s=0.9)], seed=3)
        >>> fs.type_name, fs.handler.seed
        ('py::faulty+local', 3)
    """
    return pafs.PyFileSystem(FaultInjectingHandler(inner, rules, seed, log_path, sleep))


def read_fault_log(log_path: str | os.PathLike[str]) -> dict[str, int]:
    """Sum up the faults logged to ``log_path`` by every process: ``{"<op>:<action>": n}``.

    A missing file means nothing was injected.

    Example:
        >>> read_fault_log("/nonexistent/faults.jsonl")
        {}
    """
    counts: Counter[str] = Counter()
    try:
        with open(log_path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    entry = json.loads(line)
                    counts[f"{entry['op']}:{entry['action']}"] += 1
    except FileNotFoundError:
        return {}
    return dict(sorted(counts.items()))
