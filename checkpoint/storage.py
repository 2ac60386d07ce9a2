"""Checkpoint and savepoint storage on any ``pyarrow.fs`` filesystem (local dir, S3, GCS...).

Layout under the storage's base path::

    <base>/<job_id>/chk-<n>/<state name>     state files (blobs of kind "state")
    <base>/<job_id>/chk-<n>/_metadata        written last; its presence = n is complete
    <base>/<job_id>/shared/<n>-<name>        shared files (incremental checkpoints), first
                                             uploaded for checkpoint n, referenced by later ones

Every file is wrapped in the envelope of :mod:`checkpoint.format` (magic, version,
CRC-32). ``_metadata`` is written atomically: on filesystems with rename (local, HDFS) it
is written under a temporary name and renamed; on object stores (S3, GCS, Azure) a single
PUT of the final object is already atomic. A checkpoint directory without ``_metadata``
is incomplete and is ignored by :meth:`CheckpointStorage.list_complete`, and so is one
fenced by a job master that took the job over (``_abandoned`` in it, written atomically
before it restores: :meth:`CheckpointStorage.fence_incomplete`), even when the old master's
late ``_metadata`` lands in it afterwards. A checkpoint's directory is made when it is
triggered (:meth:`CheckpointStorage.prepare_checkpoint`: a ``mkdir``, or an empty
``_triggered`` object on object stores), before anything of it is written, so that such a
listing sees every checkpoint an old master started. The commit log
(``<base>/<job_id>/commits/``) is written the same way: a temporary file
(``<name>.inprogress-<token>``) is never read as an entry (a master that died while writing
one leaves it half written) and is removed when its write or rename fails.

**Shared files** (Flink's shared state of incremental checkpoints): a state backend may
write a file once (:meth:`CheckpointStorage.write_shared`) and reference it from the state
files of several checkpoints through an :class:`IncrementalStateHandle`. Retention deletes a
shared file only when no retained complete checkpoint references it and it was first
uploaded for a checkpoint older than the newest complete one: a later checkpoint only
reuses files its task held at the newest complete checkpoint, which that checkpoint
references, so neither an aborted, declined or timed-out checkpoint nor one still being
written can lose a file it points at. A state blob whose header lists the shared files it
needs (field ``shared``: ``[[path, size, crc32], ...]``) is made self-contained in a
savepoint: those files are copied to ``<savepoint>/shared/<file name>``.

A :class:`StateHandle`'s path is relative to the storage's base, so a whole checkpoint
base can be moved or mounted elsewhere. Savepoints are self-contained directories
(``_metadata`` plus state files, referenced by relative name) and can be moved freely.

**Trust boundary.** ``_metadata`` and most state files are pickles, and unpickling runs
code: whoever can write to the storage can run code in the job. Restore only from storage
you trust, or give the storage a job secret (``secret=``, or the environment variable
``RAYSTREAM_CHECKPOINT_SECRET``): every file it writes then carries an HMAC-SHA256 of its
contents, and every file it reads is refused before it is unpickled when that HMAC is
missing or wrong (:func:`checkpoint.format.verify_blob_signature`).

Example:
    >>> import tempfile
    >>> storage = resolve_storage(tempfile.mkdtemp())
    >>> h = storage.write_state("job", 1, "op-0", b"state bytes")
    >>> storage.write_metadata("job", 1, {"handles": [h]})
    >>> storage.read_state(storage.read_metadata("job", 1)["handles"][0])
    b'state bytes'
    >>> storage.list_complete("job")
    [1]
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import posixpath
import re
import time
import uuid
import zlib
from dataclasses import dataclass
from typing import Any, Union

import cloudpickle
import pyarrow.fs as pafs

from raystream.engine.errors import CheckpointError, ConfigError
from raystream.engine.serde import loads

from .format import (
    MAGIC,
    decode_blob,
    encode_blob,
    read_blob_header,
    sign_blob,
    verify_blob_signature,
)

__all__ = [
    "StateHandle",
    "IncrementalStateHandle",
    "CheckpointStorage",
    "CheckpointStorageUnavailable",
    "DISCARD_ATTEMPTS",
    "SavepointReader",
    "check_savepoint",
    "resolve_storage",
    "METADATA_FILE",
    "SECRET_ENV",
    "signing_key",
    "job_dir_name",
    "STOP_MARKER",
    "FENCE_FILE",
    "TRIGGER_FILE",
]

log = logging.getLogger(__name__)

METADATA_FILE = "_metadata"
#: the marker a job master that takes a job over writes into each checkpoint directory without
#: ``_metadata`` (:meth:`CheckpointStorage.fence_incomplete`): never restored, even if completed later
FENCE_FILE = "_abandoned"
#: the empty object :meth:`CheckpointStorage.prepare_checkpoint` puts into a checkpoint's
#: "directory" on object stores when the checkpoint is triggered (a prefix exists only with objects)
TRIGGER_FILE = "_triggered"
_STATE_KIND = "state"
_METADATA_KIND = "metadata"
_SAVEPOINT_KIND = "savepoint"
_CHK_DIR = re.compile(r"^chk-(\d+)$")
_SHARED_DIR = "shared"
#: what the temporary name of an atomically written file has after the final name
_IN_PROGRESS = ".inprogress-"
_SHARED_FILE = re.compile(r"^(\d+)-")
#: the name of a marker a job restoring from a retained checkpoint leaves in its directory
_RESTORING = "_restoring-"
#: the file in a job's directory that records its completed stop-with-savepoint (see
#: :meth:`CheckpointStorage.write_stop_marker`)
STOP_MARKER = "_stopped"
#: how often :meth:`CheckpointStorage.discard` deletes a checkpoint directory that late
#: snapshot writes keep filling (each delete takes what was written before it; several tasks
#: of a job may write theirs one after another), with a pause of DISCARD_PAUSE_S doubled each
#: time between two (a worker thread's, never the master's loop)
DISCARD_ATTEMPTS = 5
DISCARD_PAUSE_S = 0.02
#: characters a job id cannot have in its directory's name
_NOT_IN_SEGMENT = re.compile("[/\\\\\x00]")
_OBJECT_STORES = frozenset({"s3", "gcs", "abfs"})
#: environment variable holding the job secret that signs checkpoint files
SECRET_ENV = "RAYSTREAM_CHECKPOINT_SECRET"

#: what a storage location may be given as
Location = Union[str, "os.PathLike[str]", "tuple[pafs.FileSystem, str]"]


class CheckpointStorageUnavailable(CheckpointError):
    """Checkpoint storage could not be read or listed right now: an I/O error other than a
    missing file (storage unreachable, throttled, a timeout). Says nothing about the checkpoint
    itself, so a restore never skips a checkpoint for it (restoring an older one would commit
    the output of the newer ones twice): the restore fails and the job master retries it under
    the restart strategy (``retryable``)."""

    #: the job master restarts (and plans the restore again) instead of failing the job for good
    retryable = True


@dataclass(frozen=True)
class StateHandle:
    """Where one state file of a checkpoint lives (picklable; goes into ``_metadata``).

    Attributes:
        path: the file's path relative to the storage base (``job/chk-3/name``).
        size: payload size in bytes (without the envelope).
        crc32: CRC-32 of the payload.
    """

    path: str
    size: int
    crc32: int


@dataclass(frozen=True)
class IncrementalStateHandle(StateHandle):
    """A state file that references shared files (an incremental checkpoint's manifest).

    Attributes:
        shared: the shared files it needs (written with :meth:`CheckpointStorage.write_shared`);
            retention keeps each as long as a retained complete checkpoint lists it here.
    """

    shared: tuple[StateHandle, ...] = ()


def _check_part(what: str, value: object) -> str:
    if not isinstance(value, str) or not value or "/" in value or "\\" in value:
        raise ConfigError(f"{what} must be a non-empty str without '/', got {value!r}")
    if value in (".", ".."):
        raise ConfigError(f"{what} must not be {value!r}")
    return value


def job_dir_name(job_id: object) -> str:
    """The directory (one path segment under the storage's base) that holds job ``job_id``'s
    checkpoints: the job id itself, unless it is no path segment (a job named ``"team/etl"``
    has the id ``"team/etl-1a2b3c4d"``; ``"."``, ``".."``): then ``/``, ``\\`` and NUL are
    replaced by ``_`` and 16 hex digits of the SHA-256 of the exact id are added, so two ids
    never share a directory.

    Example:
        >>> job_dir_name("wordcount-1a2b3c4d"), job_dir_name("team/etl-1a2b3c4d")
        ('wordcount-1a2b3c4d', 'team_etl-1a2b3c4d-d2e39e15b46044d1')
    """
    if not isinstance(job_id, str) or not job_id:
        raise ConfigError(f"job_id must be a non-empty str, got {job_id!r}")
    if _NOT_IN_SEGMENT.search(job_id) is None and job_id not in (".", ".."):
        return job_id
    digest = hashlib.sha256(job_id.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{_NOT_IN_SEGMENT.sub('_', job_id)}-{digest}"


def _check_name(name: object) -> str:
    """A state file name: may contain '/' but no '..' segment; a leading '_' is reserved."""
    if not isinstance(name, str) or not name or name.startswith(("/", "_")) or "\\" in name:
        raise ConfigError(
            f"state name must be a non-empty relative path not starting with '_' or '/', "
            f"got {name!r}"
        )
    if any(part in ("", ".", "..") for part in name.split("/")):
        raise ConfigError(f"state name {name!r} has an empty, '.' or '..' path segment")
    return name


def signing_key(secret: bytes | str | None) -> bytes | None:
    """The HMAC key for checkpoint files: ``secret`` (a str is UTF-8 encoded), or when it is
    None the environment variable ``RAYSTREAM_CHECKPOINT_SECRET``, or None (no signing).

    Example:
        >>> signing_key("s3cret")
        b's3cret'
    """
    if secret is None:
        secret = os.environ.get(SECRET_ENV) or None
        if secret is None:
            return None
    if isinstance(secret, str):
        secret = secret.encode("utf-8")
    if not isinstance(secret, bytes) or not secret:
        got = "an empty one" if isinstance(secret, bytes) else f"a {type(secret).__name__}"
        raise ConfigError(  # the value is never shown: it is a secret
            f"the checkpoint secret must be a non-empty str or bytes, got {got}"
        )
    return secret


def _filesystem_for(location: Location) -> tuple[pafs.FileSystem, str]:
    """The filesystem and path of a URI, local path or ``(filesystem, path)`` pair."""
    if isinstance(location, tuple):
        fs, path = location
        if not isinstance(fs, pafs.FileSystem) or not isinstance(path, str):
            raise ConfigError(
                f"a storage location tuple must be (pyarrow.fs.FileSystem, str), got {location!r}"
            )
        return fs, path.rstrip("/") or path
    location = os.fspath(location)
    if not isinstance(location, str) or not location:
        raise ConfigError(f"storage location must be a non-empty URI or path, got {location!r}")
    if "://" not in location:
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(location))
    try:
        fs, path = pafs.FileSystem.from_uri(location)
    except Exception as exc:
        raise ConfigError(
            f"cannot open checkpoint storage {location!r}: {exc}; use a local path, "
            "file:///dir, s3://bucket/prefix or another URI pyarrow.fs supports"
        ) from exc
    return fs, path.rstrip("/") or path


class SavepointReader:
    """Reads the state files of one savepoint (returned by ``read_savepoint``).

    Example:
        >>> import tempfile
        >>> storage = resolve_storage(tempfile.mkdtemp())
        >>> where = storage.write_savepoint("sp-1", {"job": "wc"}, {"op-0": b"x"})
        >>> metadata, reader = storage.read_savepoint(where)
        >>> metadata, reader.names(), reader.read("op-0")
        ({'job': 'wc'}, ['op-0'], b'x')
    """

    def __init__(self, storage: CheckpointStorage, directory: str, files: dict[str, StateHandle]):
        self._storage = storage
        self._dir = directory
        self._files = files

    @property
    def path(self) -> str:
        """The savepoint directory (a path on the storage's filesystem)."""
        return self._dir

    def names(self) -> list[str]:
        """Names of the state files in the savepoint."""
        return sorted(self._files)

    def __contains__(self, name: object) -> bool:
        return name in self._files

    def read(self, name: str) -> bytes:
        """The bytes stored under ``name`` (checksum verified).

        Raises:
            CheckpointError: no such state in the savepoint, or the file is missing or corrupt.
        """
        handle = self._files.get(name)
        if handle is None:
            raise CheckpointError(
                f"savepoint {self._dir!r} has no state {name!r}; it has {self.names()!r}"
            )
        return self._storage._read_handle(self._dir, handle)

    def read_all(self) -> dict[str, bytes]:
        """Every state of the savepoint, by name."""
        return {name: self.read(name) for name in self.names()}


class RetainedCheckpointReader(SavepointReader):
    """Reads the state files of a retained checkpoint opened like a savepoint (Flink's
    ``flink run -s <checkpoint dir>``): its metadata holds state handles relative to the base
    of the checkpoint storage it was written to, two levels above its ``chk-<n>`` directory."""

    def __init__(self, storage: CheckpointStorage, directory: str, base: str):
        super().__init__(storage, directory, {})
        self._base = base

    def read(self, name: Any) -> bytes:  # type: ignore[override]  # a StateHandle, not a name
        """The bytes behind a state handle of the checkpoint (checksum verified)."""
        return self._storage._read_handle(self._base, name)

    def mark_restoring(self, job_id: str) -> None:
        """Leave the marker ``_restoring-<job_id>`` in the checkpoint's directory: job
        ``job_id`` restores from it, so the retention of the job that wrote it keeps it (and the
        shared files it references) until :meth:`unmark_restoring`. Raises CheckpointError when
        it cannot be written (read-only storage)."""
        name = f"{_RESTORING}{job_dir_name(job_id)}"
        self._storage._write(posixpath.join(self._dir, name), encode_blob(_STATE_KIND, b""))

    def unmark_restoring(self, job_id: str) -> None:
        """Remove the marker of :meth:`mark_restoring` (a failure is logged)."""
        self._storage._remove_quietly(posixpath.join(self._dir, f"{_RESTORING}{job_dir_name(job_id)}"))


class CheckpointStorage:
    """Durable checkpoint and savepoint files on a ``pyarrow.fs`` filesystem.

    Args:
        location: a local path, a URI that ``pyarrow.fs.FileSystem.from_uri`` accepts
            (``file:///dir``, ``s3://bucket/prefix?endpoint_override=host:9000&scheme=http``,
            ``gs://...``), or an explicit ``(filesystem, base_path)`` pair.
        filesystem: alternative to a tuple ``location``: a configured filesystem...
        base_path: ...and the base path on it.
        secret: the job secret that signs every file written and is checked on every file
            read (HMAC-SHA256, see the module docstring); None: the environment variable
            ``RAYSTREAM_CHECKPOINT_SECRET`` if set, else no signing.

    The object is picklable (it is shipped to every task, with its secret) and thread-safe
    for distinct files; it keeps no open handles.

    Example:
        >>> import tempfile
        >>> s = CheckpointStorage(tempfile.mkdtemp())
        >>> s.latest_complete("job") is None
        True
    """

    def __init__(
        self,
        location: Location | None = None,
        *,
        filesystem: pafs.FileSystem | None = None,
        base_path: str | None = None,
        secret: bytes | str | None = None,
    ) -> None:
        self._signing_key = signing_key(secret)
        if filesystem is not None or base_path is not None:
            if location is not None or filesystem is None or base_path is None:
                raise ConfigError(
                    "give either a location, or both filesystem= and base_path=; got "
                    f"location={location!r}, filesystem={filesystem!r}, base_path={base_path!r}"
                )
            location = (filesystem, base_path)
        if location is None:
            raise ConfigError("CheckpointStorage needs a location (path, URI or (fs, path))")
        self._location = location if isinstance(location, tuple) else os.fspath(location)
        self._fs, self._base = _filesystem_for(location)
        self._object_store = self._fs.type_name in _OBJECT_STORES
        if not self._object_store:
            self._mkdir(self._base)

    def __reduce__(self) -> tuple[type[CheckpointStorage], tuple[Location], dict[str, bytes | None]]:
        # subclasses stay subclasses; the key travels as state, so an unpickling process
        # signs like this one whatever its own environment says
        return (type(self), ((self._fs, self._base),), {"_signing_key": self._signing_key})

    def __repr__(self) -> str:
        signed = ", signed" if self._signing_key is not None else ""
        return f"CheckpointStorage({self._fs.type_name}:{self._base!r}{signed})"

    @property
    def signed(self) -> bool:
        """Whether files are signed and checked with a job secret."""
        return self._signing_key is not None

    def with_secret(self, secret: bytes | str) -> CheckpointStorage:
        """A copy of this storage (same class and location) that signs with ``secret``."""
        key = signing_key(secret)
        if key is None:
            raise ConfigError("with_secret() needs a secret")
        signed = copy.copy(self)
        signed._signing_key = key
        return signed

    def _sibling(self, location: Location) -> CheckpointStorage:
        """Storage at another location with this one's secret (savepoints elsewhere)."""
        other = CheckpointStorage(location)
        other._signing_key = self._signing_key
        return other

    @property
    def filesystem(self) -> pafs.FileSystem:
        """The pyarrow filesystem."""
        return self._fs

    @property
    def base_path(self) -> str:
        """The base path on :attr:`filesystem`."""
        return self._base

    # -- paths -------------------------------------------------------------------------

    def _join(self, *parts: str) -> str:
        return posixpath.join(self._base, *parts) if self._base else posixpath.join(*parts)

    def checkpoint_path(self, job_id: str, checkpoint_id: int) -> str:
        """The directory of checkpoint ``checkpoint_id`` (a path on :attr:`filesystem`)."""
        return self._join(job_dir_name(job_id), f"chk-{int(checkpoint_id)}")

    def _mkdir(self, path: str) -> None:
        if self._object_store:
            return  # object stores have no directories
        try:
            self._fs.create_dir(path, recursive=True)
        except OSError as exc:
            raise CheckpointError(f"cannot create checkpoint directory {path!r}: {exc}") from exc

    def prepare_checkpoint(self, job_id: str, checkpoint_id: int) -> None:
        """Make checkpoint ``checkpoint_id``'s directory visible in storage before anything of
        it is written: the job master calls it when it triggers the checkpoint, before any task
        gets its barrier. A job master that takes the job over lists the directories to fence
        (:meth:`fence_incomplete`); without this, a checkpoint none of whose tasks wrote a
        state file had no directory until its ``_metadata`` landed, so an old master's
        ``_metadata`` write in flight during the listing was neither fenced nor numbered
        around, and could be restored later (or land in the new master's checkpoint of the
        same id). On a filesystem with directories: one ``mkdir`` (atomic; nothing if it is
        there). On object stores, where a directory is only the prefix of its objects: one PUT
        of an empty marker object ``chk-<n>/_triggered``, so that the prefix is listed.

        Raises:
            CheckpointError: the directory (or marker) could not be created (the checkpoint
                fails; no task gets its barrier).

        Example:
            >>> import tempfile
            >>> s = resolve_storage(tempfile.mkdtemp())
            >>> s.prepare_checkpoint("job", 4)
            >>> s.list_checkpoints("job"), s.list_complete("job")
            ([4], [])
        """
        path = self.checkpoint_path(job_id, checkpoint_id)
        if self._object_store:
            self._write(posixpath.join(path, TRIGGER_FILE), encode_blob(_STATE_KIND, b""))
        else:
            self._mkdir(path)

    # -- raw file I/O ------------------------------------------------------------------

    def _write(self, path: str, data: bytes) -> None:
        """Write one blob; with a secret, signed (every file this storage writes)."""
        if self._signing_key is not None:
            data = sign_blob(data, self._signing_key, path)
        for attempt in (1, 2):
            self._mkdir(posixpath.dirname(path))
            try:
                with self._fs.open_output_stream(path) as out:
                    out.write(data)
                return
            except FileNotFoundError as exc:
                # its directory went between the mkdir and the open: the job master deletes the
                # directory of an aborted checkpoint, and a task may still be writing its
                # snapshot for it; written anyway, it is deleted when its late ack arrives
                if attempt == 2 or self._object_store:
                    raise CheckpointError(f"cannot write checkpoint file {path!r}: {exc}") from exc
            except OSError as exc:
                raise CheckpointError(f"cannot write checkpoint file {path!r}: {exc}") from exc

    def _write_atomic(self, path: str, data: bytes) -> None:
        if self._object_store:
            self._write(path, data)  # one PUT is atomic; nothing is visible before it ends
            return
        tmp = f"{path}{_IN_PROGRESS}{uuid.uuid4().hex}"
        try:
            self._write(tmp, data)
            try:
                self._fs.move(tmp, path)
            except OSError as exc:
                raise CheckpointError(f"cannot rename {tmp!r} to {path!r}: {exc}") from exc
        except CheckpointError:
            self._remove_quietly(tmp)  # (a write may fail after it wrote some or all of the file)
            raise

    def _remove_quietly(self, path: str) -> None:
        """Delete file ``path`` if it exists; a failure is logged, never raised (cleanup of a
        write that already failed)."""
        try:
            if self._fs.get_file_info(path).type == pafs.FileType.File:
                self._fs.delete_file(path)
        except OSError:
            log.warning("could not remove the temporary checkpoint file %r", path, exc_info=True)

    def _read(self, path: str, what: str = "checkpoint file") -> bytes:
        """Read one blob; with a secret, its signature is checked before anyone decodes or
        unpickles it (every file this storage reads)."""
        try:
            with self._fs.open_input_stream(path) as f:
                data = f.read()
        except FileNotFoundError as exc:
            raise CheckpointError(f"cannot read {what} {path!r}: {exc}") from exc
        except OSError as exc:
            try:  # (some filesystems report a missing file as a plain OSError)
                missing = self._fs.get_file_info(path).type == pafs.FileType.NotFound
            except OSError:
                missing = False
            if missing:
                raise CheckpointError(f"cannot read {what} {path!r}: {exc}") from exc
            raise CheckpointStorageUnavailable(
                f"cannot read {what} {path!r}: {exc} (checkpoint storage {self!r} failed to read it; the file may "
                "well be intact)") from exc
        if self._signing_key is not None:
            verify_blob_signature(data, self._signing_key, path)
        return data

    def _exists(self, path: str) -> bool:
        try:
            return self._fs.get_file_info(path).type == pafs.FileType.File
        except OSError as exc:
            raise CheckpointStorageUnavailable(f"cannot look up {path!r} in checkpoint storage {self!r}: {exc}") from exc

    def _file_infos(self, paths: list[str]) -> list[pafs.FileInfo]:
        try:
            return self._fs.get_file_info(paths)
        except OSError as exc:
            shown = paths[0] if len(paths) == 1 else f"{len(paths)} files ({paths[0]!r}, ...)"
            raise CheckpointStorageUnavailable(f"cannot look up {shown} in checkpoint storage {self!r}: {exc}") from exc

    # -- state files -------------------------------------------------------------------

    def write_state(self, job_id: str, checkpoint_id: int, name: str, data: bytes) -> StateHandle:
        """Write one state file of checkpoint ``checkpoint_id`` and return its handle.

        Args:
            job_id: the job's id (one path segment).
            checkpoint_id: the checkpoint number.
            name: the file name inside the checkpoint directory (e.g. ``"<uid>-<subtask>"``;
                may contain '/'; names starting with '_' are reserved).
            data: the bytes to store.

        Example:
            >>> import tempfile
            >>> resolve_storage(tempfile.mkdtemp()).write_state("j", 2, "op-0", b"ab").path
            'j/chk-2/op-0'
        """
        _check_name(name)
        rel = posixpath.join(job_dir_name(job_id), f"chk-{int(checkpoint_id)}", name)
        self._write(self._join(rel), encode_blob(_STATE_KIND, data))
        return StateHandle(rel, len(data), zlib.crc32(data))

    def write_shared(self, job_id: str, checkpoint_id: int, name: str, data: bytes) -> StateHandle:
        """Write a shared file, first uploaded for checkpoint ``checkpoint_id``, that state
        files of this and later checkpoints reference (see the module docstring); read it
        back with :meth:`read_state`.

        Example:
            >>> import tempfile
            >>> resolve_storage(tempfile.mkdtemp()).write_shared("j", 3, "a1b2-000012.sst", b"x").path
            'j/shared/3-a1b2-000012.sst'
        """
        _check_part("shared file name", name)
        rel = posixpath.join(job_dir_name(job_id), _SHARED_DIR, f"{int(checkpoint_id)}-{name}")
        self._write(self._join(rel), encode_blob(_STATE_KIND, data))
        return StateHandle(rel, len(data), zlib.crc32(data))

    def missing_shared(self, metadata: dict[str, Any]) -> list[str]:
        """Shared files that checkpoint ``metadata`` references but storage does not hold
        (with the expected size): a checkpoint with any is not restorable."""
        wanted = {h.path: h for h in referenced_shared(metadata)}
        if not wanted:
            return []
        paths = sorted(wanted)
        infos = self._file_infos([self._join(p) for p in paths])
        return [p for p, info in zip(paths, infos, strict=True) if info.type != pafs.FileType.File]

    def collect_shared(self, job_id: str, keep: list[int], unreferenced: bool = False) -> list[str]:
        """Delete the shared files of ``job_id`` that no checkpoint in ``keep`` (the
        retained complete ones) references and that were first uploaded for a checkpoint
        older than the newest of ``keep`` (with ``unreferenced``: every one they do not
        reference, for a job that ended and takes no more checkpoints); returns their paths.
        Deletes nothing when a retained checkpoint's metadata cannot be read (a file it needs
        might go)."""
        if not keep:
            return []
        directory = self._join(job_dir_name(job_id), _SHARED_DIR)
        try:
            infos = self._fs.get_file_info(pafs.FileSelector(directory, allow_not_found=True))
        except OSError as exc:
            raise CheckpointError(f"cannot list shared files in {directory!r}: {exc}") from exc
        if not infos:
            return []
        referenced: set[str] = set()
        for cid in keep:
            referenced.update(h.path for h in referenced_shared(self.read_metadata(job_id, cid)))
        newest = max(keep)
        deleted = []
        for info in infos:
            m = _SHARED_FILE.match(info.base_name)
            rel = posixpath.join(job_dir_name(job_id), _SHARED_DIR, info.base_name)
            if info.type != pafs.FileType.File or m is None or rel in referenced or (
                    int(m.group(1)) >= newest and not unreferenced):
                continue
            try:
                self._fs.delete_file(info.path)
            except OSError as exc:
                raise CheckpointError(f"cannot delete shared file {info.path!r}: {exc}") from exc
            deleted.append(rel)
        return deleted

    def read_state(self, handle: StateHandle) -> bytes:
        """Read the bytes behind ``handle``, verifying size and checksums.

        Raises:
            CheckpointError: the file is missing, corrupt, or not the one the handle names.
        """
        return self._read_handle(self._base, handle)

    def _read_handle(self, base: str, handle: StateHandle) -> bytes:
        if not isinstance(handle, StateHandle):
            raise CheckpointError(f"read_state() needs a StateHandle, got {handle!r}")
        path = posixpath.join(base, handle.path) if base else handle.path
        data = decode_blob(self._read(path, "state file"), _STATE_KIND, path)
        if len(data) != handle.size or zlib.crc32(data) != handle.crc32:
            raise CheckpointError(
                f"state file {path!r} does not match its handle (size {len(data)} vs "
                f"{handle.size}, crc32 {zlib.crc32(data):#010x} vs {handle.crc32:#010x}); it "
                "was overwritten by another checkpoint or job"
            )
        return data

    # -- metadata ----------------------------------------------------------------------

    def write_metadata(self, job_id: str, checkpoint_id: int, metadata: dict[str, Any]) -> None:
        """Write ``_metadata`` of a checkpoint atomically, completing the checkpoint.

        Call it after every state file of the checkpoint is written.
        """
        path = posixpath.join(self.checkpoint_path(job_id, checkpoint_id), METADATA_FILE)
        payload = cloudpickle.dumps(metadata, protocol=5)
        self._write_atomic(
            path, encode_blob(_METADATA_KIND, payload, job_id=job_id, checkpoint_id=checkpoint_id)
        )

    def read_metadata(self, job_id: str, checkpoint_id: int) -> dict[str, Any]:
        """The metadata dict of a complete checkpoint.

        Raises:
            CheckpointError: the checkpoint is incomplete, discarded or corrupt.
        """
        path = posixpath.join(self.checkpoint_path(job_id, checkpoint_id), METADATA_FILE)
        if not self._exists(path):
            raise CheckpointError(
                f"checkpoint {checkpoint_id} of job {job_id!r} has no {METADATA_FILE} at "
                f"{path!r}: it is incomplete or was discarded; complete ones are "
                f"{self.list_complete(job_id)!r}"
            )
        return self._load_pickle(decode_blob(self._read(path), _METADATA_KIND, path), path)

    @staticmethod
    def _load_pickle(payload: bytes, path: str) -> Any:
        return loads(payload, repr(path))

    # -- listing and retention ---------------------------------------------------------

    def list_checkpoints(self, job_id: str) -> list[int]:
        """Ids of every checkpoint directory of ``job_id``, complete or not, ascending."""
        job_dir = self._join(job_dir_name(job_id))
        try:
            infos = self._fs.get_file_info(pafs.FileSelector(job_dir, allow_not_found=True))
        except OSError as exc:
            raise CheckpointStorageUnavailable(f"cannot list checkpoints in {job_dir!r}: {exc}") from exc
        ids = []
        for info in infos:
            m = _CHK_DIR.match(info.base_name)
            if m and info.type == pafs.FileType.Directory:
                ids.append(int(m.group(1)))
        return sorted(ids)

    def list_complete(self, job_id: str) -> list[int]:
        """Ids of the complete checkpoints (those with ``_metadata`` and not fenced, see
        :meth:`fence_incomplete`) of ``job_id``, ascending."""
        ids = self.list_checkpoints(job_id)
        if not ids:
            return []
        paths = [posixpath.join(self.checkpoint_path(job_id, i), name) for i in ids for name in (METADATA_FILE, FENCE_FILE)]
        infos = self._file_infos(paths)
        return [i for n, i in enumerate(ids)
                if infos[2 * n].type == pafs.FileType.File and infos[2 * n + 1].type == pafs.FileType.NotFound]

    def fence_incomplete(self, job_id: str) -> list[int]:
        """Fence off every checkpoint directory of ``job_id`` that has no ``_metadata`` yet: write
        ``_abandoned`` into it (atomically: temp file + rename; one PUT on object stores). A job
        master that takes the job over calls it before it lists the complete checkpoints and
        restores: an old master that still runs (cut off from the cluster, or a ``_metadata``
        write of its in flight) may complete such a checkpoint later, and restoring it would
        commit output nobody committed, or commit it twice. A fenced checkpoint is not complete
        for :meth:`list_complete` whether or not its ``_metadata`` lands, so it is never restored
        (nor opened by :meth:`read_savepoint`); retention discards it as any incomplete one.

        Returns:
            The ids of every checkpoint directory listed (complete, fenced before, or fenced now),
            ascending: the taking-over master numbers its checkpoints above them.

        Raises:
            CheckpointStorageUnavailable: storage could not be listed, looked up or written (a
                directory is never taken for fenced when unsure; the takeover fails and is done
                again under the restart strategy).

        Example:
            >>> import tempfile
            >>> s = resolve_storage(tempfile.mkdtemp())
            >>> _ = s.write_state("job", 1, "op-0", b"x")
            >>> _ = s.write_state("job", 2, "op-0", b"y")
            >>> s.write_metadata("job", 1, {})
            >>> s.fence_incomplete("job")
            [1, 2]
            >>> s.write_metadata("job", 2, {})  # (an old master's late write)
            >>> s.list_complete("job")
            [1]
        """
        ids = self.list_checkpoints(job_id)
        if not ids:
            return []
        paths = [posixpath.join(self.checkpoint_path(job_id, i), name) for i in ids for name in (METADATA_FILE, FENCE_FILE)]
        infos = self._file_infos(paths)
        for n, cid in enumerate(ids):
            if infos[2 * n].type == pafs.FileType.File or infos[2 * n + 1].type != pafs.FileType.NotFound:
                continue  # complete when listed (a restore may take it), or fenced already
            path = paths[2 * n + 1]
            payload = cloudpickle.dumps({"job_id": job_id, "checkpoint_id": cid, "fenced_at": time.time()}, protocol=5)
            try:
                self._write_atomic(path, encode_blob(_STATE_KIND, payload, job_id=job_id, checkpoint_id=cid))
            except CheckpointError as exc:
                raise CheckpointStorageUnavailable(
                    f"cannot fence the incomplete checkpoint {cid} of job {job_id!r} ({path!r}) before taking the job "
                    f"over: {exc}; an old master could still complete it") from exc
        return ids

    def is_fenced(self, directory: str) -> bool:
        """Whether the checkpoint directory ``directory`` (a path on :attr:`filesystem`) was
        fenced off by a takeover (:meth:`fence_incomplete`).

        Raises:
            CheckpointStorageUnavailable: storage could not be looked up.
        """
        return self._exists(posixpath.join(directory, FENCE_FILE))

    def latest_complete(self, job_id: str) -> int | None:
        """The newest complete checkpoint id of ``job_id``, or None."""
        complete = self.list_complete(job_id)
        return complete[-1] if complete else None

    def discard(self, job_id: str, checkpoint_id: int) -> None:
        """Delete a checkpoint directory (no error if it does not exist).

        A task may still be writing its snapshot into the directory of an aborted checkpoint
        while the job master deletes it: a local or NFS delete walks the directory, and a file
        created behind the walk fails the last ``rmdir`` ("Directory not empty"); an object
        store's listing misses it and leaves it. So the directory is deleted again while it
        is still there, up to :data:`DISCARD_ATTEMPTS` times (pausing between); a file written after that is
        deleted with the checkpoint when its task's late ack arrives (the master discards the
        checkpoint again then).

        Raises:
            CheckpointError: the directory is still there after the attempts (the last error).
        """
        path = self.checkpoint_path(job_id, checkpoint_id)
        error: OSError | None = None
        for attempt in range(DISCARD_ATTEMPTS + 1):
            if attempt > 1:  # (the writers racing the first delete get time to finish)
                time.sleep(DISCARD_PAUSE_S * 2 ** (attempt - 2))
            try:
                if self._fs.get_file_info(path).type == pafs.FileType.NotFound:
                    return
                if attempt == DISCARD_ATTEMPTS:
                    break
                self._fs.delete_dir(path)
            except OSError as exc:
                error = exc
        reason = error if error is not None else "files were written into it while it was deleted"
        raise CheckpointError(f"cannot discard checkpoint {path!r} ({DISCARD_ATTEMPTS} attempts): {reason}") from error

    def retain(self, job_id: str, n: int) -> list[int]:
        """Keep the newest ``n`` complete checkpoints; discard older ones.

        Incomplete checkpoints older than the newest complete one are discarded too
        (they were aborted); newer incomplete ones may still be in progress and are kept.

        Returns:
            The discarded checkpoint ids, ascending.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"retain() needs n >= 1 (checkpoints to keep), got {n!r}")
        complete = self.list_complete(job_id)
        if not complete:
            return []
        keep = set(complete[-n:])
        newest = complete[-1]
        doomed = [i for i in self.list_checkpoints(job_id) if i < newest and i not in keep]
        # (a complete one another job restores from right now stays, with its shared files)
        in_use = {i for i in doomed if i in complete and self.restoring_jobs(job_id, i)}
        doomed = [i for i in doomed if i not in in_use]
        for i in doomed:
            self.discard(job_id, i)
        self.collect_shared(job_id, sorted(keep | in_use))
        return doomed

    def restoring_jobs(self, job_id: str, checkpoint_id: int) -> list[str]:
        """The jobs restoring from checkpoint ``checkpoint_id`` of ``job_id`` right now (each
        left a marker ``_restoring-<job id>`` in its directory, see
        :meth:`RetainedCheckpointReader.mark_restoring`): retention keeps such a checkpoint and the
        shared files it references."""
        directory = self.checkpoint_path(job_id, checkpoint_id)
        try:
            infos = self._fs.get_file_info(pafs.FileSelector(directory, allow_not_found=True))
        except OSError as exc:
            raise CheckpointError(f"cannot list checkpoint {directory!r}: {exc}") from exc
        return sorted(i.base_name[len(_RESTORING):] for i in infos
                      if i.type == pafs.FileType.File and i.base_name.startswith(_RESTORING))

    def discard_job(self, job_id: str) -> tuple[list[int], dict[int, list[str]]]:
        """Delete what job ``job_id`` keeps in this storage: its checkpoint directories, its
        shared files, its commit log, then its directory if nothing else is in it (a savepoint
        written under it stays). Called when a job ends and its checkpoints are not retained
        (``CheckpointConfig.externalized_checkpoint_retention``).

        A checkpoint another job is restoring from (:meth:`restoring_jobs`) stays, with the
        shared files it references and the job's directory. No other job's files are touched:
        a job restored from this one's checkpoint references none of its files (it restores
        without claiming them: its own first checkpoint is complete by itself).

        The newest complete checkpoint goes last, so a job master that takes the job over while
        this runs finds it whole (or not at all). Raises CheckpointError on the first delete that
        fails (what was deleted stays deleted).

        Returns:
            ``(deleted checkpoint ids, {kept checkpoint id: jobs restoring from it}})``.
        """
        ids = self.list_checkpoints(job_id)
        kept = {cid: users for cid in ids if (users := self.restoring_jobs(job_id, cid))}
        complete = [cid for cid in self.list_complete(job_id) if cid not in kept]
        doomed = [cid for cid in ids if cid not in kept and cid not in complete[-1:]] + complete[-1:]
        for cid in doomed:
            if cid in complete[-1:]:  # (its _metadata first: from then on it is incomplete, never half read)
                self._delete_file(posixpath.join(self.checkpoint_path(job_id, cid), METADATA_FILE))
            self.discard(job_id, cid)
        job_dir = self._join(job_dir_name(job_id))
        shared = posixpath.join(job_dir, _SHARED_DIR)
        if kept:
            self.collect_shared(job_id, sorted(kept), unreferenced=True)
        else:
            self._delete_dir(shared, "shared files")
        self._delete_dir(posixpath.join(job_dir, "commits"), "commit log")
        # (last: a master taking the job over while this runs still finds the job stopped)
        self.delete_stop_marker(job_id)
        if not kept:
            try:
                left = self._fs.get_file_info(pafs.FileSelector(job_dir, allow_not_found=True, recursive=True))
            except OSError as exc:
                raise CheckpointError(f"cannot list {job_dir!r}: {exc}") from exc
            if not [i for i in left if i.type == pafs.FileType.File]:
                self._delete_dir(job_dir, "job directory")
        return doomed, kept

    def _delete_file(self, path: str) -> None:
        try:
            if self._fs.get_file_info(path).type == pafs.FileType.File:
                self._fs.delete_file(path)
        except OSError as exc:
            raise CheckpointError(f"cannot delete checkpoint file {path!r}: {exc}") from exc

    def _delete_dir(self, path: str, what: str) -> None:
        """Delete directory ``path`` and what is in it (nothing if it does not exist)."""
        try:
            if self._fs.get_file_info(path).type != pafs.FileType.NotFound:
                self._fs.delete_dir(path)
        except OSError as exc:
            raise CheckpointError(f"cannot delete the {what} {path!r}: {exc}") from exc

    # -- the stop of a job -------------------------------------------------------------

    def _stop_marker_path(self, job_id: str) -> str:
        return self._join(job_dir_name(job_id), STOP_MARKER)

    def write_stop_marker(self, job_id: str, marker: dict[str, Any]) -> None:
        """Record that job ``job_id`` stopped with a savepoint (``marker``: the job id, the
        savepoint's checkpoint id and path, and what its commit makes visible), atomically
        (temp file + rename; a single PUT on object stores), in the job's own directory
        (``<job>/_stopped``). The job master writes it after the savepoint's ``_metadata`` and
        before the stop's commit: a master that takes the job over then finishes that commit
        and ends the job, instead of restoring the checkpoint before the savepoint and running
        on. Scoped by the job id: a job started from the savepoint has an id (and a directory)
        of its own. Deleted with the job's checkpoints (:meth:`discard_job`).

        Raises:
            CheckpointError: it could not be written (the stop fails; the job goes on).
        """
        if marker.get("job_id") != job_id:
            raise ValueError(f"a stop marker of job {job_id!r} must name it, not {marker.get('job_id')!r}")
        payload = cloudpickle.dumps(marker, protocol=5)
        self._write_atomic(self._stop_marker_path(job_id), encode_blob(_STATE_KIND, payload))

    def read_stop_marker(self, job_id: str) -> dict[str, Any] | None:
        """The stop marker of job ``job_id`` (:meth:`write_stop_marker`), or None: the job did
        not stop with a savepoint (or its marker was deleted with its checkpoints).

        Raises:
            CheckpointStorageUnavailable: storage could not be read (never taken for "no
                marker": a takeover would run a stopped job on).
            CheckpointError: the marker is corrupt, or names another job.
        """
        path = self._stop_marker_path(job_id)
        try:
            found = self._fs.get_file_info(path).type == pafs.FileType.File
        except OSError as exc:
            raise CheckpointStorageUnavailable(f"cannot look for the stop marker {path!r}: {exc}") from exc
        if not found:
            return None
        data = decode_blob(self._read(path, "stop marker"), _STATE_KIND, path)
        marker = self._load_pickle(data, path)
        if not isinstance(marker, dict) or marker.get("job_id") != job_id:
            named = marker.get("job_id") if isinstance(marker, dict) else type(marker).__name__
            raise CheckpointError(f"the stop marker {path!r} of job {job_id!r} names {named!r}: it was not written "
                                  "by this job; delete it if the job did not stop")
        return marker

    def delete_stop_marker(self, job_id: str) -> None:
        """Delete the stop marker of job ``job_id`` (nothing if there is none).

        Raises:
            CheckpointError: the delete failed.
        """
        self._delete_file(self._stop_marker_path(job_id))

    # -- commit log --------------------------------------------------------------------

    def write_commit_log(self, job_id: str, checkpoint_id: int, label: str, entry: Any) -> None:
        """Record what the job master commits with checkpoint ``checkpoint_id`` to sinks that
        keep their committed output in the master's memory (``collect``), so that a master
        taking over the job can rebuild them. Lives beside the checkpoint directories
        (``<job>/commits/``), untouched by retention; written before the commit.
        """
        name = f"{int(checkpoint_id):012d}-{_check_part('label', label)}"
        path = self._join(job_dir_name(job_id), "commits", name)
        self._write_atomic(path, encode_blob(_STATE_KIND, cloudpickle.dumps(entry, protocol=5)))

    def read_commit_log(self, job_id: str, upto: int) -> list[tuple[str, Any]]:
        """The commit log entries of checkpoints up to ``upto``, oldest first, as
        ``(name, entry)``."""
        directory = self._join(job_dir_name(job_id), "commits")
        try:
            infos = self._fs.get_file_info(pafs.FileSelector(directory, allow_not_found=True))
        except OSError as exc:
            raise CheckpointError(f"cannot list the commit log in {directory!r}: {exc}") from exc
        out = []
        for info in sorted(infos, key=lambda i: i.base_name):
            head = info.base_name.split("-", 1)[0]
            if info.type != pafs.FileType.File or not head.isdigit() or int(head) > upto:
                continue
            if _IN_PROGRESS in info.base_name:  # not an entry: its write never completed
                continue
            data = decode_blob(self._read(info.path, "commit log entry"), _STATE_KIND, info.path)
            out.append((info.base_name, self._load_pickle(data, info.path)))
        return out

    # -- savepoints --------------------------------------------------------------------

    def _savepoint_dir(self, target: Location) -> tuple[CheckpointStorage, str, str]:
        """(storage for the savepoint's filesystem, its directory, the string to return)."""
        if isinstance(target, tuple):
            fs, path = _filesystem_for(target)
            return self._sibling((fs, path)), path, path
        target = os.fspath(target)
        if "://" in target or os.path.isabs(os.path.expanduser(target)):
            fs, path = _filesystem_for(target)
            shown = target if "://" in target else path
            return self._sibling((fs, path)), path, shown
        if not self._object_store and isinstance(self._fs, pafs.LocalFileSystem):
            path = self._join(target)
            return self, path, path
        return self, self._join(target), target

    def write_savepoint(
        self,
        target: Location,
        metadata: dict[str, Any],
        states: dict[str, bytes],
        *,
        overwrite: bool = False,
    ) -> str:
        """Write a self-contained savepoint directory: its state files, then ``_metadata``.

        Args:
            target: a URI, an absolute local path, an ``(filesystem, path)`` pair, or a
                relative path, which is resolved against this storage's base.
            metadata: picklable job metadata (operator uids, parallelism, offsets...).
            states: state bytes by name (names as in :meth:`write_state`).
            overwrite: replace an existing savepoint at ``target``.

        Returns:
            The savepoint's location, to pass to :meth:`read_savepoint` (the URI or path
            given; an absolute path for local relative targets).

        Raises:
            CheckpointError: a savepoint already exists there (and not ``overwrite``), or
                writing failed.
        """
        storage, directory, shown = self._savepoint_dir(target)
        meta_path = posixpath.join(directory, METADATA_FILE)
        if storage._exists(meta_path):
            if not overwrite:
                raise CheckpointError(
                    f"a savepoint already exists at {shown!r}; choose another path (or delete the savepoint "
                    "there first: it is never replaced)"
                )
            storage._fs.delete_dir_contents(directory)
        files: dict[str, StateHandle] = {}
        for name, data in states.items():
            _check_name(name)
            for shared in _shared_of_blob(data, name):  # self-contained: copy what it references
                copied = posixpath.join(_SHARED_DIR, posixpath.basename(shared.path))
                if copied not in files:
                    content = self.read_state(shared)
                    storage._write(posixpath.join(directory, copied), encode_blob(_STATE_KIND, content))
                    files[copied] = StateHandle(copied, len(content), zlib.crc32(content))
            storage._write(posixpath.join(directory, name), encode_blob(_STATE_KIND, data))
            files[name] = StateHandle(name, len(data), zlib.crc32(data))
        payload = cloudpickle.dumps({"metadata": metadata, "files": files}, protocol=5)
        storage._write_atomic(meta_path, encode_blob(_SAVEPOINT_KIND, payload))
        return shown

    def delete_savepoint(self, target: Location) -> None:
        """Delete the savepoint at ``target`` (as for :meth:`write_savepoint`), ``_metadata``
        first, so that it is never half there; nothing if there is none. For a savepoint that
        must not stay: a stop-with-savepoint whose stop could not be recorded.

        Raises:
            CheckpointError: the delete failed.
        """
        storage, directory, _shown = self._savepoint_dir(target)
        storage._delete_file(posixpath.join(directory, METADATA_FILE))
        storage._delete_dir(directory, "savepoint")

    def discard_unrecorded_stop(self, target: Location, job_id: str) -> int | None:
        """Delete the savepoint at ``target`` if it is one of job ``job_id``'s stops that never
        completed: a stop-with-savepoint's (its metadata says ``stop``) of this very job whose
        stop marker (:meth:`write_stop_marker`) does not record it, or records it but the job
        ran on afterwards (a complete checkpoint is newer). Its job master died between the
        savepoint's ``_metadata`` and the marker (or the marker could not be written): nothing
        of it was committed and no caller was given it, and the job ran on from an older
        checkpoint. The job's next stop to the same path (the client asking the stop again of
        the master that took the job over, or the user running ``stop`` again) then writes a
        fresh savepoint there instead of failing "a savepoint already exists". Any other
        savepoint at ``target`` (another job's, an intermediate one, a stop that completed) is
        left alone, and the write fails as before.

        Returns:
            The deleted savepoint's checkpoint id (its sinks' protection of the files it
            recorded may go: nothing restores them), or None when nothing was deleted.

        Raises:
            CheckpointError: ``target`` could not be read or deleted (the stop fails, the job
                goes on).
        """
        storage, directory, _shown = self._savepoint_dir(target)
        meta_path = posixpath.join(directory, METADATA_FILE)
        if not storage._exists(meta_path):
            return None
        data = storage._read(meta_path)
        if read_blob_header(data, meta_path).kind != _SAVEPOINT_KIND:
            return None  # (a retained checkpoint's directory)
        content = self._load_pickle(decode_blob(data, _SAVEPOINT_KIND, meta_path), meta_path)
        metadata = content.get("metadata") if isinstance(content, dict) else None
        if not isinstance(metadata, dict) or metadata.get("job_id") != job_id or metadata.get("stop") is not True:
            return None
        cid = metadata.get("checkpoint_id")
        if not isinstance(cid, int):
            return None
        marker = self.read_stop_marker(job_id)
        if marker is not None and int(marker["checkpoint_id"]) == cid:
            latest = self.latest_complete(job_id)
            if latest is None or latest <= cid:
                return None  # recorded: the job stopped there
        log.warning("job %s: replacing the savepoint %r of its stop at checkpoint %s, which never completed (its job "
                    "master died before it recorded the stop, or could not record it)", job_id, _shown, cid)
        self.delete_savepoint(target)
        return cid

    def read_savepoint(self, target: Location) -> tuple[dict[str, Any], SavepointReader]:
        """Open a savepoint: its metadata and a reader for its state files. A retained
        checkpoint's directory (``<checkpoint dir>/<job id>/chk-<n>``) opens the same way: the
        reader then reads its state handles (a :class:`RetainedCheckpointReader`).

        Args:
            target: as for :meth:`write_savepoint`.

        Returns:
            ``(metadata, reader)``; ``reader.read(name)`` returns a state's bytes.

        Raises:
            CheckpointError: no savepoint there, or its ``_metadata`` is corrupt or holds no
                savepoint (written by another release or program), naming the path.
        """
        if isinstance(target, tuple) or "://" in os.fspath(target) or os.path.isabs(os.path.expanduser(os.fspath(target))):
            check_savepoint(target)  # before _savepoint_dir, which would create a missing directory
        storage, directory, shown = self._savepoint_dir(target)
        meta_path = posixpath.join(directory, METADATA_FILE)
        if not storage._exists(meta_path):
            raise CheckpointError(
                f"no savepoint at {shown!r} (missing {meta_path!r}); it was not written, "
                "not finished, or the path is wrong"
            )
        data = storage._read(meta_path)
        if read_blob_header(data, meta_path).kind == _METADATA_KIND:  # a retained checkpoint
            if storage.is_fenced(directory):
                raise CheckpointError(
                    f"cannot restore {shown!r}: the checkpoint was fenced off ({FENCE_FILE}) by a job master that "
                    "took its job over before it completed; its _metadata was written late by the old master, and "
                    "its sinks' output may never have been committed. Restore an older complete checkpoint or a "
                    "savepoint")
            metadata = self._load_pickle(decode_blob(data, _METADATA_KIND, meta_path), meta_path)
            base = posixpath.dirname(posixpath.dirname(directory.rstrip("/")))
            return metadata, RetainedCheckpointReader(storage, directory, base)
        content = self._load_pickle(decode_blob(data, _SAVEPOINT_KIND, meta_path), meta_path)
        if not isinstance(content, dict) or not isinstance(content.get("files"), dict) or "metadata" not in content:
            raise CheckpointError(_not_metadata(shown, content))
        return content["metadata"], SavepointReader(storage, directory, content["files"])


def _not_metadata(shown: str, content: Any) -> str:
    """The refusal of a savepoint ``_metadata`` whose content is not a savepoint's (before, a
    bare ``TypeError`` from inside the job master)."""
    return (
        f"cannot restore {shown!r}: its {METADATA_FILE} is a raystream file but holds no savepoint or checkpoint "
        f"metadata (a {type(content).__name__}); it was written by another raystream release or another program. "
        "Give the directory of a savepoint (client.savepoint(path)) or of a retained checkpoint "
        "(<checkpoint_dir>/<job dir>/chk-<n>) written by this release, or start the job without from_savepoint"
    )


def referenced_shared(metadata: dict[str, Any]) -> list[StateHandle]:
    """Every shared file the state handles of checkpoint ``metadata`` reference."""
    out: list[StateHandle] = []
    for op in (metadata.get("operators") or {}).values():
        for entry in op.get("subtasks", {}).values():
            if isinstance(entry, dict):
                for ref in entry.values():
                    if isinstance(ref, IncrementalStateHandle):
                        out.extend(ref.shared)
    return out


def _shared_of_blob(data: bytes, name: str) -> list[StateHandle]:
    """The shared files a state blob lists in its header field ``shared`` (none for other
    data: plain bytes, or blobs without the field)."""
    if not data.startswith(MAGIC):
        return []
    listed: Any = read_blob_header(data, name).extra.get("shared") or []
    try:
        return [StateHandle(str(p), int(size), int(crc)) for p, size, crc in listed]
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"state {name!r} lists malformed shared files: {listed!r}") from exc


def check_savepoint(target: Location) -> None:
    """Fail fast, creating nothing, unless ``target`` is a savepoint directory (with
    ``_metadata``): before a job starts from it, before Ray starts.

    Raises:
        CheckpointError: the path does not exist, is a file, or holds no finished savepoint.
    """
    fs, path = _filesystem_for(target)
    shown = target if isinstance(target, str) else path
    try:
        info = fs.get_file_info(path)
        meta = fs.get_file_info(posixpath.join(path, METADATA_FILE)) if info.type == pafs.FileType.Directory else None
        fenced = meta is not None and fs.get_file_info(posixpath.join(path, FENCE_FILE)).type == pafs.FileType.File
    except OSError as exc:
        raise CheckpointError(f"cannot read savepoint {shown!r}: {exc}") from exc
    if info.type == pafs.FileType.NotFound and fs.type_name not in _OBJECT_STORES:
        raise CheckpointError(f"no savepoint at {shown!r}: the path does not exist")
    if info.type == pafs.FileType.File:
        raise CheckpointError(f"{shown!r} is a file, not a savepoint directory (give the directory holding "
                              f"{METADATA_FILE})")
    if meta is not None and meta.type != pafs.FileType.File:
        inside = _newest_checkpoint_below(fs, path)
        hint = (f"; it holds the complete checkpoint {inside!r}: pass that directory to restore from it" if inside
                else " (the savepoint was not written or not finished, or the path is wrong)")
        raise CheckpointError(f"no savepoint at {shown!r}: the directory has no {METADATA_FILE}{hint}")
    if fenced:
        inside = _newest_checkpoint_below(fs, posixpath.dirname(path.rstrip("/")))
        hint = f"; the newest complete checkpoint of its job is {inside!r}" if inside else ""
        raise CheckpointError(f"cannot restore {shown!r}: the checkpoint was fenced off ({FENCE_FILE}) by a job master "
                              f"that took its job over before it completed, so it is not restorable{hint}")


def _newest_checkpoint_below(fs: pafs.FileSystem, path: str) -> str | None:
    """The newest complete checkpoint directory in ``path`` when it is a job's checkpoint
    directory (``<checkpoint_dir>/<job id>``, holding ``chk-<n>``) or a checkpoint base with one
    job in it; None when there is none (or listing fails: only a hint for an error message)."""
    try:
        for depth in (0, 1):
            below = [i for i in fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
                     if i.type == pafs.FileType.Directory]
            chks = sorted(((int(m.group(1)), i.path) for i in below if (m := _CHK_DIR.match(i.base_name))), reverse=True)
            for _cid, chk in chks:
                meta, fence = fs.get_file_info([posixpath.join(chk, METADATA_FILE), posixpath.join(chk, FENCE_FILE)])
                if meta.type == pafs.FileType.File and fence.type == pafs.FileType.NotFound:
                    return chk
            jobs = [i.path for i in below if not _CHK_DIR.match(i.base_name)]
            if depth or len(jobs) != 1:
                return None
            path = jobs[0]
    except OSError:
        return None
    return None


def resolve_storage(
    location: CheckpointStorage | Location, *, secret: bytes | str | None = None
) -> CheckpointStorage:
    """A :class:`CheckpointStorage` for a path, URI, ``(filesystem, path)`` or storage.

    ``secret`` signs and checks its files (a given storage is copied with it); None keeps a
    given storage as it is, and a new one reads ``RAYSTREAM_CHECKPOINT_SECRET``.

    Example:
        >>> import tempfile
        >>> resolve_storage(tempfile.mkdtemp()).filesystem.type_name
        'local'
        >>> resolve_storage(tempfile.mkdtemp(), secret="s3cret").signed
        True
    """
    if isinstance(location, CheckpointStorage):
        return location if secret is None else location.with_secret(secret)
    return CheckpointStorage(location, secret=secret)
