"""Built-in split-based sources: collections, Parquet, text files and generators.

Each source splits its input so parallel source tasks share it, and each reader reports
its position per split at checkpoints so a restored job resumes exactly there.
"""

from __future__ import annotations

import codecs
import copy
import fnmatch
import os
import pickle
import re
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, TypeVar, Union
from urllib.parse import urlsplit, urlunsplit

import cloudpickle
import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from raystream.engine.connectors import (
    END_OF_INPUT,
    NOTHING_AVAILABLE,
    PollResult,
    Source,
    SourceReader,
)
from raystream.engine.errors import ConfigError, GraphError, UserCodeError, short_repr
from raystream.engine.operator import OperatorContext
from raystream.engine.records import Batch

__all__ = ["CollectionSource", "ParquetSource", "TextSource", "GeneratorSource", "resolve_paths"]

SplitT = TypeVar("SplitT")


@dataclass
class RangeSplit:
    """Records [start, end) of a collection; ``position`` is the next one."""

    split_id: str
    start: int
    end: int
    position: int
    stride: int = 1

    def weight(self) -> float:
        """Records left (see :func:`~raystream.engine.connectors.assign_splits`)."""
        return float(max(0, -(-(self.end - self.position) // self.stride)))


class _QueueReader(SourceReader[SplitT]):
    """Common reader: takes splits in order and reads each to its end."""

    def __init__(self) -> None:
        self.splits: list[SplitT] = []

    def add_splits(self, splits: list[SplitT]) -> None:
        self.splits.extend(splits)

    def snapshot_state(self, checkpoint_id: int) -> list[SplitT]:
        return [copy.copy(s) for s in self.splits]


class CollectionSource(Source[RangeSplit]):
    """Emits the items of a Python collection (bounded).

    Shipped to the job master and the tasks as pickled chunks of ``batch_size`` items
    (pickled once, in the driver): the master and each task spec copy bytes instead of
    pickling every item again, and a task unpickles only the chunks its splits cover, so
    a large collection costs one pickling at any parallelism.

    Example:
        >>> src = CollectionSource([1, 2, 3]); len(src.create_splits(2))
        2
        >>> import pickle
        >>> shipped = pickle.loads(pickle.dumps(src))   # as the tasks get it
        >>> shipped.expected_records(), shipped.items[1:3]
        (3, [2, 3])
    """

    split_type = RangeSplit

    def __init__(self, items: Iterable[Any], batch_size: int = 8192) -> None:
        self.items: list[Any] | _PickledItems = list(items)
        self.batch_size = batch_size

    def create_splits(self, parallelism: int) -> list[RangeSplit]:
        n = len(self.items)
        bounds = [n * i // parallelism for i in range(parallelism + 1)]
        return [RangeSplit(f"items-{i}", bounds[i], bounds[i + 1], bounds[i]) for i in range(parallelism)]

    def create_reader(self, ctx: OperatorContext) -> SourceReader[RangeSplit]:
        return _CollectionReader(self.items, self.batch_size)

    def expected_records(self) -> int:
        """How many records the source emits (all subtasks together)."""
        return len(self.items)

    def describe(self) -> str:
        return f"collection({len(self.items)} items)"

    def __getstate__(self) -> dict[str, Any]:
        items = self.items
        if not isinstance(items, _PickledItems):
            items = _PickledItems.of(items, max(1, self.batch_size))
        return {"items": items, "batch_size": self.batch_size}


class _PickledItems:
    """The items of a shipped :class:`CollectionSource`: pickled chunks of ``chunk_size``
    items, unpickled when read (the last chunk read is kept: a reader goes forward).
    Pickling it again copies the chunks' bytes."""

    def __init__(self, chunks: list[bytes], chunk_size: int, count: int) -> None:
        self.chunks = chunks
        self.chunk_size = chunk_size
        self.count = count
        self._cached: tuple[int, list[Any]] = (-1, [])

    @classmethod
    def of(cls, items: list[Any], chunk_size: int) -> _PickledItems:
        """``items`` pickled in chunks with cloudpickle (as the rest of the job: instances of
        classes defined in a notebook or a script's ``__main__`` travel by value, which plain
        pickle would send by a reference the task's process cannot resolve).

        Raises:
            GraphError: an item cannot be pickled at all (named by its index).
        """
        return cls([_pickled_chunk(items[start : start + chunk_size], start) for start in range(0, len(items), chunk_size)],
                   chunk_size, len(items))

    def __len__(self) -> int:
        return self.count

    def __getstate__(self) -> dict[str, Any]:
        return {"chunks": self.chunks, "chunk_size": self.chunk_size, "count": self.count}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.chunks, self.chunk_size, self.count = state["chunks"], state["chunk_size"], state["count"]
        self._cached = (-1, [])

    def _chunk(self, i: int) -> list[Any]:
        if self._cached[0] != i:
            self._cached = (i, pickle.loads(self.chunks[i]))
        return self._cached[1]

    def __getitem__(self, index: slice) -> list[Any]:
        """The items ``[start:stop]`` (slices with step 1 only)."""
        if not isinstance(index, slice) or index.step not in (None, 1):
            raise TypeError("collection items are read by slices with step 1")
        start, stop, _ = index.indices(self.count)
        out: list[Any] = []
        size = self.chunk_size
        while start < stop:
            i, offset = divmod(start, size)
            chunk = self._chunk(i)
            take = min(stop - start, size - offset)
            out.extend(chunk if take == len(chunk) else chunk[offset : offset + take])
            start += take
        return out


def _pickled_chunk(chunk: list[Any], start: int) -> bytes:
    try:
        return cloudpickle.dumps(chunk, protocol=5)
    except Exception:  # noqa: BLE001 - find the item at fault
        for i, item in enumerate(chunk):
            try:
                cloudpickle.dumps(item, protocol=5)
            except Exception as exc:  # noqa: BLE001
                raise GraphError(
                    f"from_collection item {start + i} ({short_repr(item, 80)}) cannot be pickled: {type(exc).__name__}: {exc}"
                ) from None
        raise


class _CollectionReader(_QueueReader[RangeSplit]):
    def __init__(self, items: list[Any] | _PickledItems, batch_size: int) -> None:
        super().__init__()
        self.items = items
        self.batch_size = batch_size

    def poll_next(self) -> PollResult:
        while self.splits:
            s = self.splits[0]
            if s.position >= s.end:
                self.splits.pop(0)
                continue
            end = min(s.end, s.position + self.batch_size)
            out = self.items[s.position : end]
            s.position = end
            return Batch.of_records(out)
        return END_OF_INPUT


@dataclass
class _GenSplit:
    split_id: str
    position: int  # next index to produce (this split produces position, position+stride, ...)
    stride: int
    count: int | None

    def weight(self) -> float:
        """Records left (1 for an unbounded split)."""
        if self.count is None:
            return 1.0
        return float(max(0, -(-(self.count - self.position) // self.stride)))


#: most ms a :class:`GeneratorSource` spends calling ``fn`` for one batch (the default
#: buffer timeout, ``TaskConfig.flush_ms``)
DEFAULT_LINGER_MS = 50

#: what a :class:`GeneratorSource` ``batch_fn`` returns for a range of indices
GeneratedBatch = Union[list, pa.RecordBatch, pa.Table]


class GeneratorSource(Source[_GenSplit]):
    """Emits ``fn(i)`` for i = 0, 1, 2, ... (``count`` items, or forever when None),
    optionally rate limited to ``rate`` records per second over all subtasks.

    With ``batch_fn`` instead of ``fn``, the source calls ``batch_fn(indices)`` once per
    batch with the ``range`` of indices of that batch (a subtask's indices are strided:
    ``range(start, stop, parallelism)``) and emits the records it returns for them (usually
    one per index; checkpoints and ``rate`` count indices): a list of records (no call per
    record from the source), or an Arrow ``RecordBatch``/``Table`` (a columnar stream: the
    batch API, the channels and ``collect`` use it as it is, and a typed schema needs no
    type inference).

    A batch of ``fn(i)`` calls is returned once making it took ``linger_ms`` (Kafka's
    producer setting of that name; the default is the default buffer timeout, ``flush_ms``),
    so the records of a slow or blocking ``fn`` (one that waits for a sensor, a socket, a
    queue) leave within about that long instead of waiting for ``batch_size`` - 1 more.

    Example:
        >>> GeneratorSource(lambda i: i * i, count=10).bounded
        True
        >>> squares = GeneratorSource(batch_fn=lambda idx: [i * i for i in idx], count=10)
        >>> squares.batch_fn(range(1, 10, 2))
        [1, 9, 25, 49, 81]
    """

    split_type = _GenSplit

    def __init__(
        self,
        fn: Callable[[int], Any] | None = None,
        count: int | None = None,
        rate: float | None = None,
        batch_size: int = 8192,
        batch_fn: Callable[[range], GeneratedBatch] | None = None,
        linger_ms: float = DEFAULT_LINGER_MS,
    ) -> None:
        if fn is not None and not callable(fn):
            raise ConfigError(f"generate() expects a function of the index or a count, got {fn!r}")
        if batch_fn is not None and not callable(batch_fn):
            raise ConfigError(f"GeneratorSource batch_fn must be a function of a range of indices, got {batch_fn!r}")
        if batch_fn is not None and fn is not None:
            raise ConfigError(
                f"GeneratorSource takes fn (one record per call) or batch_fn (a batch per call of a "
                f"range of indices), not both; got fn={fn!r}, batch_fn={batch_fn!r}"
            )
        if rate is not None and rate <= 0:
            raise ConfigError(f"generate(rate=...) must be positive, got {rate!r}")
        if isinstance(linger_ms, bool) or not isinstance(linger_ms, (int, float)) or not 0 <= linger_ms < float("inf"):
            raise ConfigError(f"GeneratorSource linger_ms must be a finite number of ms >= 0, got {linger_ms!r}")
        self.fn = fn
        self.batch_fn = batch_fn
        self.count = count
        self.rate = rate
        self.batch_size = batch_size
        self.linger_ms = linger_ms
        self.bounded = count is not None

    def create_splits(self, parallelism: int) -> list[_GenSplit]:
        return [_GenSplit(f"gen-{i}", i, parallelism, self.count) for i in range(parallelism)]

    def create_reader(self, ctx: OperatorContext) -> SourceReader[_GenSplit]:
        return _GeneratorReader(self, ctx)

    def describe(self) -> str:
        return f"generate(count={self.count}, rate={self.rate})"


class _GeneratorReader(_QueueReader[_GenSplit]):
    """Reads the strided index splits of a :class:`GeneratorSource`: one per subtask when the job
    starts; several when it was restored at a lower parallelism than the job that made them.

    Several splits are read in turns, the one with the lowest next index first, so that every
    split advances (an unbounded split never ends: read one after the other, the first would
    be read forever and the others never) and the indices come out about in order. The rate of
    the source is shared by its splits: a reader gets ``rate / stride`` per split it holds.
    """

    def __init__(self, source: GeneratorSource, ctx: OperatorContext | None = None) -> None:
        super().__init__()
        self.source = source
        self.started = time.monotonic()
        self.emitted = 0
        self.shares = 0  # splits added: each gets rate / stride of the source's rate
        self._current: str | None = None
        # a rate-limited reader knows when its next record is due: a processing-time timer
        # then wakes its task, whose wait between polls of an idle reader grows up to
        # TaskConfig.idle_poll_max_ms (else the records came up to 100 ms late, in bursts,
        # just after whatever mail woke the task: a checkpoint's trigger)
        self._ctx = ctx
        self._wake_pending = False

    def _wake_when_due(self, per_task: float) -> None:
        ctx = self._ctx
        if ctx is None or ctx.register_processing_timer is None or self._wake_pending:
            return
        due_s = self.started + (self.emitted + 1) / per_task - time.monotonic()
        self._wake_pending = True
        ctx.register_processing_timer(ctx.clock.now_ms() + max(1, int(due_s * 1000) + 1), self._woken)

    def _woken(self, _time: int) -> None:
        self._wake_pending = False

    def add_splits(self, splits: list[_GenSplit]) -> None:
        super().add_splits(splits)
        self.shares += len(splits)

    def current_split_id(self) -> str | None:
        """The split of the batch returned last (for per-split watermarks)."""
        return self._current

    def poll_next(self) -> PollResult:
        src = self.source
        self.splits = [s for s in self.splits if s.count is None or s.position < s.count]
        if self.splits:
            s = min(self.splits, key=lambda split: split.position)
            self._current = s.split_id
            n = src.batch_size
            if src.rate is not None:
                per_task = src.rate * self.shares / max(1, s.stride)
                allowed = int((time.monotonic() - self.started) * per_task) - self.emitted
                if allowed <= 0:
                    self._wake_when_due(per_task)
                    return NOTHING_AVAILABLE
                n = min(n, allowed)
            stop = s.position + n * s.stride
            if s.count is not None:
                stop = min(stop, s.count)
            idx = range(s.position, stop, s.stride)
            fn = src.fn
            if fn is not None:
                records = _made(fn, idx, src.linger_ms)
                idx = idx[: len(records)]
            s.position = idx[-1] + s.stride if len(idx) else stop
            self.emitted += len(idx)
            if src.batch_fn is not None:
                return _generated(src.batch_fn, idx)
            if fn is None:
                return Batch.of_records(list(idx))
            return Batch.of_records(records)
        return END_OF_INPUT


def _made(fn: Callable[[int], Any], idx: range, linger_ms: float) -> list[Any]:
    """``fn(i)`` for the indices ``idx`` in order, up to the first call that ends
    ``linger_ms`` after the first began (at least one record): a blocking ``fn`` (one
    record per sensor reading) made all of ``batch_size`` (8192 calls, minutes) before the
    first record left the source."""
    out: list[Any] = []
    clock = time.monotonic
    deadline = clock() + linger_ms / 1000.0
    i = idx.start
    try:
        for i in idx:
            out.append(fn(i))
            if clock() >= deadline:
                break
    except Exception as exc:
        raise UserCodeError(i, exc, what="index") from exc  # (names the index)
    return out


def _generated(batch_fn: Callable[[range], GeneratedBatch], idx: range) -> Batch:
    """The batch ``batch_fn(idx)`` returned, as a :class:`Batch`."""
    out = batch_fn(idx)
    if isinstance(out, (pa.RecordBatch, pa.Table)):
        return Batch.of_arrow(out)
    if isinstance(out, list):
        return Batch.of_records(out)
    raise ConfigError(
        f"GeneratorSource batch_fn {getattr(batch_fn, '__name__', batch_fn)!r} returned "
        f"{type(out).__name__} for indices {idx!r}; it returns a list of records, a pyarrow "
        "RecordBatch or a Table"
    )


def filesystem_for(uri: str | None) -> pafs.FileSystem:
    """The pyarrow filesystem of a URI (``s3://...``), or the local one for plain paths."""
    if uri and "://" in uri:
        return pafs.FileSystem.from_uri(uri)[0]
    return pafs.LocalFileSystem()


def _hidden(name: str) -> bool:
    """Whether a directory reader skips ``name``: it starts with ``_`` or ``.`` (``_SUCCESS``,
    ``_temporary/``, ``.inprogress-*`` of raystream's own sinks), as pyarrow, Hive and Spark do."""
    return name.startswith(("_", "."))


def _files_under(fs: pafs.FileSystem, base: str) -> list[str]:
    """The files below directory ``base``, at any depth, except those with a path component
    below ``base`` that is :func:`_hidden` (such directories are not even listed). Local
    symbolic links to directories are not followed (as ``os.walk``: no cycles)."""
    local = isinstance(fs, pafs.LocalFileSystem)
    files: list[str] = []
    dirs = [base]
    while dirs:
        for info in fs.get_file_info(pafs.FileSelector(dirs.pop())):
            if _hidden(info.base_name):
                continue
            if info.type == pafs.FileType.Directory:
                if not (local and os.path.islink(info.path)):
                    dirs.append(info.path)
            elif info.type == pafs.FileType.File:
                files.append(info.path)
    return files


_MAGIC = re.compile(r"[*?[]")


def _entries_matching(fs: pafs.FileSystem, base: str, pattern: str) -> list[pafs.FileInfo]:
    """The entries of directory ``base`` whose name matches glob component ``pattern``; as
    with Python's glob for ``.``, a wildcard does not match a name starting with ``_`` or
    ``.`` unless the pattern starts with that character too."""
    return [
        info
        for info in fs.get_file_info(pafs.FileSelector(base))
        if fnmatch.fnmatchcase(info.base_name, pattern)
        and not (_hidden(info.base_name) and not pattern.startswith(info.base_name[0]))
    ]


def _glob(fs: pafs.FileSystem, base: str, parts: list[str]) -> list[str]:
    """The files matching the glob components ``parts`` below existing directory ``base``.

    ``**`` matches any number of directories (none included), as Python's glob with
    ``recursive=True``; a match that is a directory gives its files (:func:`_files_under`).
    """
    head, rest = parts[0], parts[1:]
    if head == "**":
        if not rest:
            return _files_under(fs, base)
        found = _glob(fs, base, rest)
        local = isinstance(fs, pafs.LocalFileSystem)
        for info in fs.get_file_info(pafs.FileSelector(base)):
            if info.type == pafs.FileType.Directory and not _hidden(info.base_name):
                if not (local and os.path.islink(info.path)):
                    found.extend(_glob(fs, info.path, parts))
        return found
    if _MAGIC.search(head):
        matches = _entries_matching(fs, base, head)
    else:
        matches = [fs.get_file_info(f"{base.rstrip('/')}/{head}")]
    found = []
    for info in matches:
        if info.type == pafs.FileType.Directory:
            found.extend(_glob(fs, info.path, rest) if rest else _files_under(fs, info.path))
        elif info.type == pafs.FileType.File and not rest:
            found.append(info.path)
    return found


def _resolve(fs: pafs.FileSystem, path: str) -> list[str]:
    """The sorted files of ``path`` on ``fs``: a file, a directory or a glob."""
    parts = path.split("/")
    first = next((i for i, part in enumerate(parts) if _MAGIC.search(part)), None)
    if first is None:
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.Directory:
            return sorted(_files_under(fs, path))
        return [path] if info.type == pafs.FileType.File else []
    base = "/".join(parts[:first]) or "/"
    if fs.get_file_info(base).type != pafs.FileType.Directory:
        return []
    return sorted(set(_glob(fs, base, [p for p in parts[first:] if p])))


def resolve_paths(path_or_glob: str) -> tuple[pafs.FileSystem, list[str]]:
    """A filesystem and the sorted file paths for a local path, a glob or a URI.

    A directory gives the files below it at any depth, except those with a path component
    (below the directory) starting with ``_`` or ``.``. A glob matches as Python's glob with
    ``recursive=True`` (``**`` is any number of directories) except that its wildcards match
    no name starting with ``_`` either (write such a leading character literally); a match
    that is a directory gives its files. A URI takes the same on its path (``*``, ``**`` and
    ``[...]``: ``?`` starts its query). A local path starting with ``~`` or ``~user`` is in
    that user's home directory, as in a shell (a URI is taken as it is).

    Raises:
        ConfigError: nothing to read there.
    """
    fs: pafs.FileSystem
    if "://" in path_or_glob:
        uri, pattern = _uri_and_pattern(path_or_glob)
        try:
            fs, base = pafs.FileSystem.from_uri(uri)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
            raise ConfigError(f"cannot open {path_or_glob!r}: {exc}") from exc
        files = _resolve(fs, "/".join([base.rstrip("/"), *pattern]) if pattern else base)
    else:
        fs = pafs.LocalFileSystem()
        files = _resolve(fs, os.path.abspath(os.path.expanduser(path_or_glob)))
    if not files:
        raise ConfigError(f"no input file matches {path_or_glob!r}")
    return fs, files


def _uri_and_pattern(uri: str) -> tuple[str, list[str]]:
    """A URI split at its first path component with a wildcard (``*`` or ``[``): the URI of
    the directory above it (the filesystem is opened from it) and the glob components from
    it on (none: no glob). ``?`` starts the URI's query, as in any URI, and is no wildcard.

    Example:
        >>> _uri_and_pattern("s3://bucket/logs/2024-*/**/*.parquet?region=eu-west-1")
        ('s3://bucket/logs?region=eu-west-1', ['2024-*', '**', '*.parquet'])
        >>> _uri_and_pattern("file:///data/x.parquet")
        ('file:///data/x.parquet', [])
    """
    parts = urlsplit(uri)
    if re.search(r"[*[]", parts.netloc):
        raise ConfigError(f"{uri!r}: a glob in the bucket or host name is not supported; "
                          "put wildcards in the path only")
    components = parts.path.split("/")
    first = next((i for i, c in enumerate(components) if re.search(r"[*[]", c)), None)
    if first is None:
        return uri, []
    path = "/".join(components[:first]) or "/"
    return urlunsplit(parts._replace(path=path)), [c for c in components[first:] if c]


def _filesystem_uri(path_or_glob: str) -> str | None:
    """The URI the readers open the filesystem of ``path_or_glob`` from (None: local)."""
    return _uri_and_pattern(path_or_glob)[0] if "://" in path_or_glob else None


def _parquet_metadata(fs: pafs.FileSystem, path: str) -> pq.FileMetaData:
    """The footer of Parquet file ``path``; a file that is not one fails naming it."""
    try:
        with fs.open_input_file(path) as f:
            return pq.ParquetFile(f).metadata
    except (pa.ArrowInvalid, OSError) as exc:
        raise ConfigError(f"{path!r} is not a readable Parquet file: {exc}") from exc


@dataclass
class _RowGroupSplit:
    split_id: str
    path: str
    row_group: int
    offset: int  # rows of the row group already emitted
    rows: int = -1  # rows of the row group (-1: unknown, e.g. a split of an older checkpoint)

    def weight(self) -> float:
        """Rows left (1 when the row group's size is unknown)."""
        return 1.0 if self.rows < 0 else float(max(0, self.rows - self.offset))


class ParquetSource(Source[_RowGroupSplit]):
    """Reads Parquet files (a path, directory, glob or URI); one split per row group.

    Example:
        >>> ParquetSource  # doctest: +ELLIPSIS
        <class '...ParquetSource'>
    """

    split_type = _RowGroupSplit

    def __init__(self, path_or_glob: str, batch_size: int = 65536, columns: list[str] | None = None) -> None:
        self.path = path_or_glob
        self.batch_size = batch_size
        self.columns = columns
        fs, files = resolve_paths(path_or_glob)
        self.files = files
        self._fs_uri = _filesystem_uri(path_or_glob)
        self.schema = _parquet_metadata(fs, files[0]).schema.to_arrow_schema()
        if columns:
            missing = [c for c in columns if c not in self.schema.names]
            if missing:
                raise ConfigError(f"columns {missing} are not in {files[0]!r} (has {self.schema.names})")

    def filesystem(self) -> pafs.FileSystem:
        return filesystem_for(self._fs_uri)

    def create_splits(self, parallelism: int) -> list[_RowGroupSplit]:
        fs = self.filesystem()
        splits: list[_RowGroupSplit] = []
        for path in self.files:
            meta = _parquet_metadata(fs, path)
            if self.columns:
                names = meta.schema.to_arrow_schema().names
                missing = [c for c in self.columns if c not in names]
                if missing:
                    raise ConfigError(f"columns {missing} are not in {path!r} (has {names}); read_parquet(columns=...) "
                                      f"reads them from every file")
            splits.extend(
                _RowGroupSplit(f"{path}#{rg}", path, rg, 0, meta.row_group(rg).num_rows) for rg in range(meta.num_row_groups)
            )
        return splits

    def create_reader(self, ctx: OperatorContext) -> SourceReader[_RowGroupSplit]:
        return _ParquetReader(self)

    def describe(self) -> str:
        return f"parquet({self.path})"


class _ParquetReader(_QueueReader[_RowGroupSplit]):
    def __init__(self, source: ParquetSource) -> None:
        super().__init__()
        self.source = source
        self.fs = source.filesystem()
        self._open: tuple[str, pq.ParquetFile] | None = None
        self._table: tuple[str, int, pa.Table] | None = None

    def _row_group(self, s: _RowGroupSplit) -> pa.Table:
        if self._table is None or self._table[:2] != (s.path, s.row_group):
            if self._open is None or self._open[0] != s.path:
                try:
                    self._open = (s.path, pq.ParquetFile(self.fs.open_input_file(s.path)))
                except FileNotFoundError as exc:
                    raise FileNotFoundError(
                        f"read_parquet: input file {s.path} no longer exists; it was there when the job was "
                        "planned: leave the input files in place until the job has read them"
                    ) from exc
            meta = self._open[1].metadata
            rows = meta.row_group(s.row_group).num_rows if s.row_group < meta.num_row_groups else None
            if rows is None or (s.rows >= 0 and rows != s.rows):
                had = f"{s.rows} rows" if s.rows >= 0 else "rows"
                now = f"{rows} rows" if rows is not None else f"only {meta.num_row_groups} row group(s)"
                raise ValueError(
                    f"read_parquet: {s.path} changed since the job was planned: its row group {s.row_group} had "
                    f"{had}, the file now has {now}; read files that are complete and no longer written to"
                )
            table = self._open[1].read_row_group(s.row_group, columns=self.source.columns, use_threads=False)
            self._table = (s.path, s.row_group, table)
        return self._table[2]

    def poll_next(self) -> PollResult:
        while self.splits:
            s = self.splits[0]
            table = self._row_group(s)
            if s.offset >= table.num_rows:
                self.splits.pop(0)
                continue
            part = table.slice(s.offset, self.source.batch_size)
            s.offset += part.num_rows
            return Batch.of_arrow(part)
        return END_OF_INPUT

    def close(self) -> None:
        self._open = None
        self._table = None


@dataclass
class _TextSplit:
    split_id: str
    path: str
    start: int
    end: int
    position: int  # byte offset of the next line to read

    def weight(self) -> float:
        """Bytes left."""
        return float(max(0, self.end - self.position))


class TextSource(Source[_TextSplit]):
    """Reads text files line by line (records are ``str`` without the newline); large files
    are split into byte ranges aligned to line starts.

    ``encoding`` is any text encoding Python knows whose newline is one byte (UTF-8, Latin-1,
    cp1252, Shift-JIS, GB18030, EBCDIC...) or UTF-16 / UTF-32 (``-le``/``-be``, or with a byte
    order mark: ``utf-16``, ``utf-32``), whose newline is found on code unit boundaries.

    Example:
        >>> import raystream
        >>> TextSource(raystream.__file__, encoding="utf-16").encoding
        'utf-16'
        >>> TextSource(raystream.__file__, encoding="unicode_escape")
        Traceback (most recent call last):
        ...
        raystream.engine.errors.ConfigError: read_text(encoding='unicode_escape') ...
    """

    split_type = _TextSplit

    def __init__(self, path_or_glob: str, batch_size: int = 8192, split_bytes: int = 16 << 20, encoding: str = "utf-8") -> None:
        self.path = path_or_glob
        self.batch_size = batch_size
        self.split_bytes = split_bytes
        _text_codec(encoding)  # refused when the job is built, not in a task
        self.encoding = encoding
        self.files = resolve_paths(path_or_glob)[1]
        self._fs_uri = _filesystem_uri(path_or_glob)

    def filesystem(self) -> pafs.FileSystem:
        return filesystem_for(self._fs_uri)

    def create_splits(self, parallelism: int) -> list[_TextSplit]:
        fs = self.filesystem()
        splits: list[_TextSplit] = []
        for path in self.files:
            info = fs.get_file_info(path)
            if info.type != pafs.FileType.File:  # (listed when the job was built, gone since)
                what = "no longer exists" if info.type == pafs.FileType.NotFound else f"is now a {info.type.name.lower()}"
                raise ConfigError(f"read_text({self.path!r}): input file {path!r} {what}; it was there when the "
                                  "job was built: leave the input files in place until the job has started "
                                  "(or build the job again)")
            size = info.size
            for start in range(0, max(size, 1), self.split_bytes):
                end = min(size, start + self.split_bytes)
                splits.append(_TextSplit(f"{path}@{start}", path, start, end, start))
        return splits

    def create_reader(self, ctx: OperatorContext) -> SourceReader[_TextSplit]:
        return _TextReader(self)

    def describe(self) -> str:
        return f"text({self.path})"


def _text_codec(encoding: str) -> tuple[str, bytes, int]:
    """The codec name of ``encoding``, its newline's bytes and the size of its code unit
    (newlines are searched at offsets that are multiples of it).

    For ``utf-16`` / ``utf-32`` the newline is that of the native byte order; a reader takes
    the byte order of each file from its byte order mark (:meth:`_TextReader._open`).

    Example:
        >>> _text_codec("UTF_16_LE"), _text_codec("latin-1"), _text_codec("cp500")
        (('utf-16-le', b'\\n\\x00', 2), ('iso8859-1', b'\\n', 1), ('cp500', b'%', 1))

    Raises:
        ConfigError: not a text encoding, or one whose newline is not found by bytes.
    """
    try:
        name = codecs.lookup(encoding).name
        one, three = "\n".encode(encoding), "\n\n\n".encode(encoding)
    except LookupError as exc:
        raise ConfigError(f"read_text(encoding={encoding!r}): {exc}; give a text encoding such as 'utf-8'") from exc
    size = (len(three) - len(one)) // 2  # "\n" and "\n\n\n" differ by two newlines (a BOM in both)
    newline = three[len(three) - size :]
    if name.startswith(("utf-16", "utf-32")):
        return name, newline, size
    if size != 1 or not three.endswith(newline * 3):
        raise ConfigError(
            f"read_text(encoding={encoding!r}) cannot split lines in it: it encodes a newline as "
            f"{one!r}, not as one byte of its own; re-encode the files to UTF-8 "
            f"(e.g. iconv -t UTF-8) and read them with the default encoding"
        )
    return name, newline, 1


class _TextReader(_QueueReader[_TextSplit]):
    """Reads its splits' lines. Offsets it reads at stay multiples of the encoding's code unit
    (a split's start is rounded to the first line starting at or after it), so a newline is
    only matched where a character starts: ``b"\\n\\x00"`` inside UTF-16-LE ``"\\u0a41\\n"``
    (``41 0a 0a 00``) starts at an odd offset and is no newline."""

    BLOCK = 1 << 20  # the most bytes read at once (but for a line longer than that); a multiple of every code unit
    MIN_READ = 1 << 12  # the fewest (also a multiple of every code unit)

    def __init__(self, source: TextSource) -> None:
        super().__init__()
        self.source = source
        self.fs = source.filesystem()
        self.codec, self.newline, self.unit = _text_codec(source.encoding)
        self._file: pa.NativeFile | None = None
        self._path: str | None = None
        self._file_codec, self._file_newline = self.codec, self.newline
        self._want = self.BLOCK  # bytes the next read asks for

    def _open(self, path: str) -> pa.NativeFile:
        """Opens ``path``; for ``utf-16`` / ``utf-32`` its byte order comes from its byte order
        mark (without one, the native order, as ``bytes.decode("utf-16")``)."""
        f = self.fs.open_input_file(path)
        self._file, self._path = f, path
        self._file_codec, self._file_newline = self.codec, self.newline
        if self.codec in ("utf-16", "utf-32"):
            boms = {"utf-16": (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE),
                    "utf-32": (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)}[self.codec]
            head = f.read_at(self.unit, 0)
            native = "le" if sys.byteorder == "little" else "be"
            order = "le" if head == boms[0] else "be" if head == boms[1] else native
            self._file_codec = f"{self.codec}-{order}"
            self._file_newline = "\n".encode(self._file_codec)
        return f

    def _find(self, chunk: bytes, start: int) -> int:
        """Index of the first newline in ``chunk`` at or after ``start`` on a code unit
        boundary (``chunk`` starts on one), or -1."""
        unit, newline = self.unit, self._file_newline
        i = chunk.find(newline, -(-max(start, 0) // unit) * unit)
        while i > 0 and i % unit:
            i = chunk.find(newline, i + unit - i % unit)
        return i

    def _rfind(self, chunk: bytes) -> int:
        """Index of the last newline in ``chunk`` on a code unit boundary, or -1."""
        unit, newline = self.unit, self._file_newline
        i = chunk.rfind(newline)
        while i > 0 and i % unit:
            i = chunk.rfind(newline, 0, i - i % unit + len(newline))
        return i

    def _line_end(self, f: pa.NativeFile, pos: int) -> int:
        """Offset just past the first newline at or after ``pos`` (or the file size)."""
        pos = -(-max(pos, 0) // self.unit) * self.unit
        while True:
            chunk = f.read_at(self.BLOCK, pos)
            if not chunk:
                return pos
            i = self._find(chunk, 0)
            if i >= 0:
                return pos + i + self.unit
            pos += len(chunk)

    def _batch_end(self, chunk: bytes, cut: int) -> int:
        """``cut``, or the end of the ``batch_size``-th line of ``chunk`` when ``chunk[:cut]``
        holds more lines than that: a batch has at most ``batch_size`` lines."""
        size, newline = self.source.batch_size, self._file_newline
        if chunk.count(newline, 0, cut) < size:  # (newlines off code unit boundaries counted too: a bound)
            return cut
        if self.unit == 1:
            ends = np.flatnonzero(np.frombuffer(chunk, np.uint8, cut) == newline[0])
            return min(cut, int(ends[size - 1]) + 1)
        i, found = -self.unit, 0
        while found < size:
            i = self._find(chunk, i + self.unit)
            if i < 0 or i >= cut:
                return cut
            found += 1
        return min(cut, i + self.unit)

    def poll_next(self) -> PollResult:
        unit = self.unit
        while self.splits:
            s = self.splits[0]
            f = self._file
            if f is None or self._path != s.path:
                try:
                    f = self._open(s.path)
                except FileNotFoundError as exc:
                    raise FileNotFoundError(
                        f"read_text: input file {s.path} no longer exists; it was there when the job was "
                        "planned: leave the input files in place until the job has read them"
                    ) from exc
            if s.position == s.start and s.start > 0:
                # a split owns the lines that start inside it; skip the tail of the previous one
                s.position = self._line_end(f, s.start - unit)
            if s.position >= s.end:
                self.splits.pop(0)
                continue
            want = self._want
            chunk = f.read_at(want, s.position)
            if not chunk:  # (the split ends before the file: it was shorter when the job was planned)
                raise ValueError(
                    f"read_text: {s.path} ends at byte {s.position}, but it had at least {s.end} bytes when "
                    "the job was planned: it was truncated or replaced while the job read it (a log rotated "
                    "with copytruncate?); read files that are complete and no longer written to"
                )
            owned = s.end - s.position  # lines starting before this offset are ours
            nl = self._rfind(chunk)
            if len(chunk) < want and (nl < 0 or nl + unit < len(chunk)):
                cut = len(chunk)  # end of file without a trailing newline
            elif nl < 0:
                cut = self._line_end(f, s.position) - s.position
                chunk = f.read_at(cut, s.position)
            else:
                cut = nl + unit
            if owned < cut:
                last = self._find(chunk, owned - unit)
                cut = last + unit if last >= 0 else cut
            cut = self._batch_end(chunk, cut)
            text = chunk[:cut]
            at = s.position
            s.position += cut
            if s.position >= s.end:
                s.position = max(s.position, s.end)
            codec = self.source.encoding if at == 0 else self._file_codec  # a BOM is at 0 only
            try:
                decoded = text.decode(codec)
            except UnicodeDecodeError as exc:
                raise ValueError(
                    f"read_text: {s.path} at byte {at + exc.start}: cannot decode as {self.source.encoding!r} "
                    f"({exc.reason}); pass the encoding the files were written in: read_text(..., encoding=...)"
                ) from exc
            lines = _lines(decoded)
            if lines:
                # the next read: about the bytes of a batch of lines like these (a read of a
                # whole block for a few of its lines would read and scan the rest again)
                per_line = -(-cut // len(lines))
                self._want = min(self.BLOCK, max(self.MIN_READ, -(-per_line * self.source.batch_size * 5 // 4 // unit) * unit))
                return Batch.of_records(lines)
        return END_OF_INPUT

    def close(self) -> None:
        self._file = None


def _lines(text: str) -> list[str]:
    r"""The lines of ``text``, split at ``\n`` only (a ``\r`` before it is dropped); unlike
    ``str.splitlines``, form feeds, ``\x1c``-``\x1e`` and ``\u2028`` stay inside a line.

    Example:
        >>> _lines("a\x0cb\r\nc\u2028d\n\ne")
        ['a\x0cb', 'c\u2028d', '', 'e']
    """
    if not text:
        return []
    lines = text.split("\n")
    if text.endswith("\n"):
        lines.pop()
    if "\r" in text:
        lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    return lines
