"""Redis Streams source and sink, exactly once (redis-py; ``pip install 'raystream[redis]'``).

:class:`RedisStreamSource` reads one or more streams. Each stream key is a split; a split's
position is the id of the last entry it emitted, kept in checkpoints, so a restored job reads
again from just after it (``XREAD`` is exclusive). Bounded (the default) reads every stream up
to the last entry it held when the job started, then ends; unbounded polls for new entries
forever. No consumer group is used: the checkpoint, not Redis, owns the read position.

:class:`RedisStreamSink` is a two-phase-commit sink. A writer buffers its records and hands
them over at each checkpoint barrier as a :class:`RedisStreamCommittable` with a unique
``commit_id``; the job master's committer writes a committable with one Lua script that, in
one atomic step, skips it if its **commit marker** key exists, else ``XADD`` s its entries and
sets the marker (with a TTL). A committable that comes again (after a restore, or from a job
master that took the job over) finds its marker and writes nothing: every record reaches the
output stream exactly once.

Example:
    >>> src = RedisStreamSource(["orders:0", "orders:1"], "redis://localhost:6379/0")
    >>> src.describe()
    "redis_streams(['orders:0', 'orders:1'], bounded)"
    >>> sink = RedisStreamSink("totals", "redis://localhost:6379/0")
    >>> sink.marker_key("sum/0/ab12/chk-3/0")
    'raystream:commit:sum/0/ab12/chk-3/0'
"""

from __future__ import annotations

import copy
import json
import logging
import math
import re
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence, Union
from urllib.parse import urlsplit, urlunsplit

from raystream.engine.connectors import (
    END_OF_INPUT,
    NOTHING_AVAILABLE,
    Committer,
    PollResult,
    Sink,
    SinkWriter,
    Source,
    SourceReader,
)
from raystream.engine.errors import (
    ConfigError,
    JobFailed,
    RaystreamError,
    UserCodeError,
    short_repr,
)
from raystream.engine.operator import OperatorContext
from raystream.engine.records import Batch

__all__ = [
    "RedisStreamSource",
    "RedisStreamSplit",
    "RedisStreamSink",
    "RedisStreamCommittable",
    "entry_timestamp_ms",
]

#: a value Redis stores in a stream field as it is (anything else is JSON-encoded)
FieldValue = Union[str, bytes, int, float]

log = logging.getLogger(__name__)

#: seconds the driver tries to connect when it resolves ``"$"`` at submission (unless the
#: source's ``connection_kwargs`` say otherwise): a server it cannot reach delays no submission longer
SUBMIT_CONNECT_TIMEOUT_S = 10.0

_ID = re.compile(r"^\d+(-\d+)?$")
#: seconds a source's read waits for Redis's answer beyond its ``block_ms`` (unless its
#: ``connection_kwargs`` set ``socket_timeout``)
READ_TIMEOUT_S = 10.0
#: the most seconds a sink's commit waits for Redis (see ``RedisStreamSink(commit_timeout_s=)``)
DEFAULT_COMMIT_TIMEOUT_S = 60.0
#: a week: a committable can come again only while a checkpoint that carries it may be restored
DEFAULT_MARKER_TTL_S = 7 * 24 * 3600.0
#: the most fields a sink entry may have: the commit script passes an entry's fields to one
#: ``XADD`` call, and a Lua call in Redis takes at most about 8,000 arguments (Lua's
#: LUAI_MAXCSTACK; 3,997 fields is the measured most, this keeps a margin)
MAX_ENTRY_FIELDS = 3900


# ---------------------------------------------------------------- helpers
def _safe_url(url: str) -> str:
    """``url`` without its password (for error messages and ``describe``)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable url>"
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit((parts.scheme, user + host, parts.path, parts.query, parts.fragment))


def _redis(what: str) -> Any:
    """The redis-py module (an optional dependency: imported when a connector first needs it)."""
    try:
        import redis
    except ImportError as exc:
        raise ConfigError(f"{what} needs redis-py: pip install 'raystream[redis]' (or pip install redis)") from exc
    return redis


def _connect(url: str, options: Mapping[str, Any], what: str) -> Any:
    """A redis-py client for ``url`` (bytes in and out: decoding is the connectors' job)."""
    redis = _redis(what)
    kwargs = {**options, "decode_responses": False}
    try:
        return redis.Redis.from_url(url, **kwargs)
    except ValueError as exc:
        raise ConfigError(f"{what}: bad Redis url {_safe_url(url)!r}: {exc}") from exc


def _parse_id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _decodes(value: bytes, encoding: str) -> bool:
    try:
        value.decode(encoding)
    except UnicodeDecodeError:
        return False
    return True


def entry_timestamp_ms(entry_id: str | bytes) -> int:
    """The milliseconds part of a stream entry id: the time Redis appended the entry.

    Use it as event time with the source's ``id_field``.

    Example:
        >>> entry_timestamp_ms("1700000000123-4")
        1700000000123
        >>> # WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(
        >>> #     lambda r: entry_timestamp_ms(r["_id"]))
    """
    return _parse_id(_text(entry_id))[0]


# ---------------------------------------------------------------- source
@dataclass
class RedisStreamSplit:
    """One stream of a :class:`RedisStreamSource`.

    Attributes:
        split_id: the stream key (splits are told apart by it, e.g. for per-split watermarks).
        key: the stream key.
        position: id of the last entry emitted; reading resumes just after it.
        end: bounded sources: the id of the stream's last entry when the job started (None:
            unbounded).
    """

    split_id: str
    key: str
    position: str
    end: str | None = None

    def finished(self) -> bool:
        """True once a bounded split has emitted its last entry."""
        return self.end is not None and _parse_id(self.position) >= _parse_id(self.end)


class RedisStreamSource(Source[RedisStreamSplit]):
    """Reads Redis streams; one split per stream key, entry ids as checkpointed positions.

    Args:
        keys: the stream key, or several (e.g. ``["events:0", "events:1"]``, shards read in
            parallel by the source subtasks).
        url: a redis-py URL (``redis://[:password@]host:port/db``, ``rediss://``, ``unix://``).
        bounded: True: read each stream up to the last entry it holds when the job starts,
            then end. False: read forever, polling for new entries.
        start_id: where reading starts: ``"0"`` (the first entry), ``"$"`` (only entries
            appended after the job was submitted: resolved once, by the driver when it ships
            the job (:meth:`resolve_at_submit`), so neither a restart nor a job master taking
            the job over before its first checkpoint skips any) or an entry id (exclusive:
            reading starts after it).
        batch_size: entries per read and per emitted batch (per stream).
        encoding: field names and values are decoded with it; None keeps them as bytes.
        id_field: if set, each record gets the entry id under this name.
        stream_field: if set, each record gets the stream key under this name.
        deserializer: turns each record (the dict of decoded fields) into the emitted record,
            e.g. ``lambda r: {**r, "amount": int(r["amount"])}``.
        rate: at most this many records per second over all source subtasks (each stream gets
            an equal share, whichever subtask reads it).
        block_ms: unbounded: block up to this long in ``XREAD`` when no entry is ready (the
            task thread waits, so checkpoints wait too); None: poll without blocking, the task
            idles between polls. A read waits for Redis's answer up to ``block_ms`` plus 10 s
            (``READ_TIMEOUT_S``) unless ``connection_kwargs`` sets a ``socket_timeout``, which
            must then exceed ``block_ms``.
        connection_kwargs: more arguments for ``redis.Redis.from_url`` (timeouts, TLS...).

    Records are dicts of the entry's fields (``{"user": "ann", "amount": "12"}``; Redis stores
    strings). For event time, apply ``assign_timestamps_and_watermarks`` to the source stream:
    watermarks are then generated per stream.

    Example:
        >>> src = RedisStreamSource("clicks", bounded=False, start_id="$", id_field="_id")
        >>> src.bounded
        False
        >>> # env.from_source(src).assign_timestamps_and_watermarks(
        >>> #     WatermarkStrategy.for_bounded_out_of_orderness(500)
        >>> #     .with_timestamp_assigner(lambda r: entry_timestamp_ms(r["_id"])))
    """

    def __init__(
        self,
        keys: str | Sequence[str],
        url: str = "redis://localhost:6379/0",
        *,
        bounded: bool = True,
        start_id: str = "0",
        batch_size: int = 1000,
        encoding: str | None = "utf-8",
        id_field: str | None = None,
        stream_field: str | None = None,
        deserializer: Callable[[dict[str, Any]], Any] | None = None,
        rate: float | None = None,
        block_ms: int | None = None,
        connection_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        key_list = [keys] if isinstance(keys, (str, bytes)) else list(keys)
        if not key_list or not all(isinstance(k, str) and k for k in key_list):
            raise ConfigError(f"RedisStreamSource needs stream keys (non-empty strings), got {keys!r}")
        if len(set(key_list)) != len(key_list):
            raise ConfigError(f"RedisStreamSource: stream keys repeat in {key_list!r}; each stream is read once")
        if start_id != "$" and not _ID.match(start_id):
            raise ConfigError(
                f"RedisStreamSource start_id must be '0', '$' or an entry id like '1700000000000-0', got {start_id!r}"
            )
        if start_id == "$" and bounded:
            raise ConfigError(
                "RedisStreamSource(start_id='$') reads only entries appended after the job started, and a "
                "bounded source ends at the last entry before it: it would read nothing; pass bounded=False"
            )
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"RedisStreamSource batch_size must be a positive int, got {batch_size!r}")
        if rate is not None and rate <= 0:
            raise ConfigError(f"RedisStreamSource rate must be positive, got {rate!r}")
        if block_ms is not None and (bounded or not isinstance(block_ms, int) or block_ms < 1):
            raise ConfigError(
                f"RedisStreamSource block_ms={block_ms!r}: only an unbounded source blocks, for 1 ms or more "
                f"(Redis reads 0 as 'forever')"
            )
        timeout = (connection_kwargs or {}).get("socket_timeout")
        if (block_ms is not None and isinstance(timeout, (int, float)) and not isinstance(timeout, bool)
                and timeout <= block_ms / 1000):
            raise ConfigError(
                f"RedisStreamSource connection_kwargs socket_timeout={timeout!r} s does not exceed block_ms={block_ms!r}: "
                f"every XREAD that waits the whole block for entries would time out and fail the job; give a "
                f"socket_timeout above {block_ms / 1000:g} s (or leave it out: the reader waits block_ms plus "
                f"{READ_TIMEOUT_S:g} s)"
            )
        if deserializer is not None and not callable(deserializer):
            raise ConfigError(f"RedisStreamSource deserializer must be callable, got {deserializer!r}")
        self.keys = key_list
        self.url = url
        self.bounded = bounded
        self.start_id = start_id
        self.batch_size = batch_size
        self.encoding = encoding
        self.id_field = id_field
        self.stream_field = stream_field
        self.deserializer = deserializer
        self.rate = rate
        self.block_ms = block_ms
        self.connection_kwargs = dict(connection_kwargs or {})
        #: the last id of each stream read when the job was submitted (None: not yet), where a
        #: ``"$"`` split starts and a bounded split ends (:meth:`resolve_at_submit`)
        self.resolved_ids: dict[str, str] | None = None

    def resolve_at_submit(self) -> RedisStreamSource:
        """A copy of this source with each stream's last entry id read now, called by the
        driver as it ships the job (:func:`engine.graph.ship`).

        A ``"$"`` split then starts, and a bounded split ends, where the streams were when the
        job was submitted, in every plan of the job: the first job master's, and one that takes
        the job over before its first checkpoint completed (its plan starts from scratch with
        the graph the driver shipped). Before, each master read the ids again when it planned,
        and the entries appended in between were never read (Flink's ``OffsetsInitializer
        .latest()`` is resolved once too). A source that reads from ``"0"`` or an entry id and
        is unbounded has nothing to resolve and is returned as it is. When the driver cannot
        reach the server, the copy resolves nothing (a warning says so) and the job master
        reads the ids when it plans, as before.

        Example:
            >>> src = RedisStreamSource("clicks", "redis://localhost:1/0", bounded=False, start_id="0")
            >>> src.resolve_at_submit() is src
            True
        """
        if self.start_id != "$" and not self.bounded:
            return self
        # (a driver without redis-py, or that cannot reach the server, leaves it to the master)
        try:
            redis = _redis("RedisStreamSource")
        except ConfigError as exc:
            return self._unresolved(exc)
        options = {"socket_connect_timeout": SUBMIT_CONNECT_TIMEOUT_S, **self.connection_kwargs}
        try:
            client = _connect(self.url, options, "RedisStreamSource")
            try:
                last = {key: self._last_id(client, key) for key in self.keys}
            finally:
                client.close()
        except (ConfigError, OSError, redis.RedisError) as exc:
            return self._unresolved(exc)
        resolved = copy.copy(self)
        resolved.resolved_ids = last
        return resolved

    def _unresolved(self, error: Exception) -> RedisStreamSource:
        log.warning("RedisStreamSource %r: the driver cannot read the streams' last ids at %r (%s); the job "
                    "master reads them when it plans the job (a master that takes the job over before its "
                    "first checkpoint reads them again)", self.keys, _safe_url(self.url), error)
        return self

    def describe(self) -> str:
        return f"redis_streams({self.keys!r}, {'bounded' if self.bounded else 'unbounded'})"

    def create_splits(self, parallelism: int) -> list[RedisStreamSplit]:
        """One split per stream; a bounded split ends at the stream's last entry, and a ``"$"``
        split starts there: as read when the job was submitted (:meth:`resolve_at_submit`),
        else now."""
        last = self.resolved_ids
        if last is None:  # (also checks, as the job is planned, that the streams can be read)
            client = _connect(self.url, self.connection_kwargs, "RedisStreamSource")
            try:
                last = {key: self._last_id(client, key) for key in self.keys}
            except _redis("RedisStreamSource").RedisError as exc:
                raise ConfigError(
                    f"RedisStreamSource cannot read streams {self.keys!r} at {_safe_url(self.url)!r}: {exc} "
                    f"(is the server running, and are the keys streams?)"
                ) from exc
            finally:
                client.close()
        splits = []
        for key in self.keys:
            start = last[key] if self.start_id == "$" else self.start_id
            splits.append(RedisStreamSplit(key, key, start, last[key] if self.bounded else None))
        return splits

    @staticmethod
    def _last_id(client: Any, key: str) -> str:
        newest = client.xrevrange(key, "+", "-", count=1)
        return _text(newest[0][0]) if newest else "0-0"

    def create_reader(self, ctx: OperatorContext) -> SourceReader[RedisStreamSplit]:
        return _RedisStreamReader(self, ctx)


class _RedisStreamReader(SourceReader[RedisStreamSplit]):
    """Reads its splits with one ``XREAD`` over all of them and emits one stream's entries
    per batch, so per-split watermarks see each batch's split (``current_split_id``).

    A split's position advances when its batch is returned: entries fetched but not yet
    emitted when a snapshot is taken are simply read again after a restore.
    """

    def __init__(self, source: RedisStreamSource, ctx: OperatorContext) -> None:
        self.source = source
        self.splits: list[RedisStreamSplit] = []
        self._client: Any = None
        self._fetched: deque[tuple[RedisStreamSplit, list[tuple[Any, Any]]]] = deque()
        # the last poll returned entries: the next XREAD does not block (see poll_next)
        self._returned = False
        self._current: str | None = None
        self._shares = 0  # splits added: each stream gets rate / (number of streams) of the rate
        self._started = time.monotonic()
        self._emitted = 0

    def add_splits(self, splits: list[RedisStreamSplit]) -> None:
        self.splits.extend(splits)
        self._shares += len(splits)

    def current_split_id(self) -> str | None:
        """The split of the batch returned last."""
        return self._current

    def snapshot_state(self, checkpoint_id: int) -> list[RedisStreamSplit]:
        return [RedisStreamSplit(s.split_id, s.key, s.position, s.end) for s in self.splits]

    def is_idle(self) -> bool:
        return not self.splits and not self.source.bounded

    def _allowed(self) -> int:
        """Entries per stream this reader may read now (``XREAD``'s count is per stream).
        ``rate`` is shared by the streams: a subtask without one takes none of it, so the source
        reads at ``rate`` at any parallelism, and one reading several streams reads its share of
        the rate over all of them, not in each."""
        if self.source.rate is None:
            return self.source.batch_size
        rate = self.source.rate * self._shares / max(1, len(self.source.keys))
        allowed = int((time.monotonic() - self._started) * rate) - self._emitted
        return min(self.source.batch_size, allowed // max(1, len(self.splits)))

    def poll_next(self) -> PollResult:
        if not self._fetched:
            self.splits = [s for s in self.splits if not s.finished()]
            if not self.splits:
                return END_OF_INPUT if self.source.bounded else NOTHING_AVAILABLE
            count = self._allowed()
            if count <= 0:
                return NOTHING_AVAILABLE
            # right after entries, read without blocking: when nothing more is there, the task
            # hears NOTHING_AVAILABLE and sends what it holds before the next poll blocks (before,
            # the last entries of a burst waited in its output buffer for up to block_ms)
            self._fetch(count, block=not self._returned)
            if not self._fetched:
                self._returned = False
                if self.source.bounded:
                    return END_OF_INPUT if not self.splits else NOTHING_AVAILABLE
                return NOTHING_AVAILABLE
        self._returned = True
        split, entries = self._fetched.popleft()
        split.position = _text(entries[-1][0])
        if split.finished():  # its last entry: it holds no watermark back any more
            self.splits.remove(split)
        self._current = split.split_id
        self._emitted += len(entries)
        return Batch.of_records(self._records(split, entries))

    def _fetch(self, count: int, block: bool = True) -> None:
        if self._client is None:
            # a read waits block_ms for entries, then for the answer: redis-py 8's default socket
            # timeout (5 s) failed every XREAD of a longer block on a quiet stream
            options = {"socket_timeout": READ_TIMEOUT_S + (self.source.block_ms or 0) / 1000,
                       **self.source.connection_kwargs}
            self._client = _connect(self.source.url, options, "RedisStreamSource")
        by_key = {s.key: s for s in self.splits}
        block_ms = self.source.block_ms if block and not self.source.bounded else None
        reply = self._client.xread({s.key: s.position for s in self.splits}, count=count, block=block_ms)
        items = reply.items() if isinstance(reply, dict) else (reply or [])
        got: set[str] = set()
        for raw_key, entries in items:
            split = by_key[_text(raw_key)]
            if split.end is not None:  # bounded: nothing after the end of the stream at job start
                end = _parse_id(split.end)
                entries = [e for e in entries if _parse_id(_text(e[0])) <= end]
            if entries:
                got.add(split.key)
                self._fetched.append((split, entries))
        if self.source.bounded:
            # nothing (left) up to the end: the split is done (later entries were deleted or trimmed)
            for s in self.splits:
                if s.key not in got:
                    s.position = s.end or s.position
            self.splits = [s for s in self.splits if s.key in got]

    def _records(self, split: RedisStreamSplit, entries: list[tuple[Any, Any]]) -> list[Any]:
        src = self.source
        enc = src.encoding
        out: list[Any] = []
        for raw_id, fields in entries:
            if enc is None:
                record: dict[Any, Any] = dict(fields)
            else:
                record = self._decoded(split, raw_id, fields, enc)
            if src.id_field is not None:
                record[src.id_field] = _text(raw_id)
            if src.stream_field is not None:
                record[src.stream_field] = split.key
            if src.deserializer is not None:
                try:
                    record = src.deserializer(record)
                except Exception as exc:  # (the task names the source and this entry)
                    raise UserCodeError(record, exc, f"entry {_text(raw_id)!r} of stream {split.key!r}") from exc
            out.append(record)
        return out

    @staticmethod
    def _decoded(split: RedisStreamSplit, raw_id: Any, fields: Mapping[bytes, bytes], enc: str) -> dict[str, str]:
        """The entry's fields decoded with ``enc``; one that does not decode fails naming the
        stream, the entry and the field."""
        try:
            return {k.decode(enc): v.decode(enc) for k, v in fields.items()}
        except UnicodeDecodeError as exc:
            bad = next(k for k, v in fields.items() if not _decodes(k, enc) or not _decodes(v, enc))
            part = "name" if not _decodes(bad, enc) else "value"
            name = bad.decode(enc) if part == "value" else bad
            raise RaystreamError(
                f"RedisStreamSource: entry {_text(raw_id)!r} of stream {split.key!r}: the {part} of field "
                f"{name!r} is not valid {enc} ({exc}); pass encoding=None to get the fields as bytes "
                "(and decode them in deserializer), or another encoding="
            ) from exc

    def close(self) -> None:
        self._fetched.clear()
        if self._client is not None:
            self._client.close()
            self._client = None


# ---------------------------------------------------------------- sink
@dataclass
class RedisStreamCommittable:
    """Entries a sink subtask wrote between two checkpoint barriers, to append at commit.

    Attributes:
        commit_id: unique per committable (sink uid, subtask, writer token, checkpoint,
            sequence number); names its commit marker.
        entries: stream key -> the entries (field -> value) to append, in order.
    """

    commit_id: str
    entries: dict[str, list[dict[str, FieldValue]]] = field(default_factory=dict)

    def __len__(self) -> int:
        return sum(len(v) for v in self.entries.values())


def _field_value(value: Any) -> FieldValue:
    if isinstance(value, (str, bytes, float)) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    return json.dumps(value, default=str)


def default_fields(record: Any) -> dict[str, FieldValue]:
    """The stream entry of a record: a dict's items, anything else as ``{"value": ...}``.

    Strings, bytes, ints and floats are stored as they are; other values (None, bools, lists,
    nested dicts...) as JSON.

    Example:
        >>> default_fields({"user": "ann", "n": 3, "tags": ["a"]})
        {'user': 'ann', 'n': 3, 'tags': '["a"]'}
        >>> default_fields(("ann", 3))
        {'value': '["ann", 3]'}
    """
    if isinstance(record, Mapping):
        return {str(k): _field_value(v) for k, v in record.items()}
    return {"value": _field_value(record)}


#: KEYS: [marker, stream...]; ARGV: [ttl ms, marker value, maxlen or "", "~" or "=", most fields
#: per entry, then per stream: its entry count, then per entry: its field count, field, value, ...]
#: Everything that can fail is checked before the first write: Redis does not undo the writes
#: of a script that fails halfway, so a failure after one would leave entries without their
#: marker, and every re-commit would append them again.
_COMMIT_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return -1
end
for i = 2, #KEYS do
  local t = redis.call('TYPE', KEYS[i])['ok']
  if t ~= 'none' and t ~= 'stream' then
    return redis.error_reply('WRONGTYPE raystream sink: key ' .. KEYS[i] .. ' holds a ' .. t .. ', not a stream')
  end
end
local most = tonumber(ARGV[5])
local a = 6
for i = 2, #KEYS do
  local count = tonumber(ARGV[a])
  a = a + 1
  for _ = 1, count do
    local nf = tonumber(ARGV[a])
    if nf > most then
      return redis.error_reply('ERR raystream sink: an entry for ' .. KEYS[i] .. ' has ' .. nf ..
        ' fields; a commit appends entries of at most ' .. most .. ' fields')
    end
    a = a + 1 + 2 * nf
  end
end
a = 6
local n = 0
for i = 2, #KEYS do
  local count = tonumber(ARGV[a])
  a = a + 1
  for _ = 1, count do
    local nf = tonumber(ARGV[a])
    a = a + 1
    local args = {KEYS[i]}
    if ARGV[3] ~= '' then
      args[#args + 1] = 'MAXLEN'
      args[#args + 1] = ARGV[4]
      args[#args + 1] = ARGV[3]
    end
    args[#args + 1] = '*'
    for _ = 1, 2 * nf do
      args[#args + 1] = ARGV[a]
      a = a + 1
    end
    redis.call('XADD', unpack(args))
    n = n + 1
  end
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[1])
return n
"""


class RedisStreamSink(Sink[RedisStreamCommittable]):
    """Appends records to Redis streams, exactly once (entries appear at checkpoint commits).

    Args:
        stream: the stream key, or a function record -> stream key.
        url: a redis-py URL (``redis://[:password@]host:port/db``).
        serializer: record -> the entry's fields (default :func:`default_fields`: a dict's
            items, anything else as ``{"value": ...}``; values other than str, bytes, int and
            float are JSON-encoded).
        maxlen: cap each stream at about this many entries (``XADD MAXLEN``); None: no cap.
        approximate: trim with ``~`` (cheap, Redis may keep a few more) rather than ``=``.
        marker_prefix: prefix of the commit marker keys (``<prefix><commit_id>``).
        marker_ttl_s: how long a commit marker lives. A committable can come again only
            while a checkpoint that carries it can be restored: keep the TTL longer than you
            would restore a job from an old retained checkpoint or savepoint.
        max_entries_per_commit: a subtask's output between two checkpoints is committed in
            atomic steps of at most this many entries (one marker each).
        commit_timeout_s: the most seconds a commit waits for Redis to connect or answer
            (redis-py's ``socket_connect_timeout`` and ``socket_timeout`` of the committer's
            client, unless ``connection_kwargs`` sets them); a commit that gets no answer in
            time fails the attempt, and the restored job commits again (a commit that went
            through meanwhile is skipped by its marker). None: wait for ever (a server that
            stops answering then holds every later commit, and the job's end, back).
        connection_kwargs: more arguments for ``redis.Redis.from_url``.

    Entries are appended by the job master when a checkpoint completes (or when the job ends);
    a subtask's entries keep their order. Without checkpointing everything is appended at the
    end of the job.

    Example:
        >>> sink = RedisStreamSink(lambda r: f"totals:{r['region']}", maxlen=100_000)
        >>> sink.describe()
        'redis_stream(<function>)'
        >>> # stream.sink_to(sink)
    """

    def __init__(
        self,
        stream: str | Callable[[Any], str],
        url: str = "redis://localhost:6379/0",
        *,
        serializer: Callable[[Any], Mapping[str, Any]] | None = None,
        maxlen: int | None = None,
        approximate: bool = True,
        marker_prefix: str = "raystream:commit:",
        marker_ttl_s: float = DEFAULT_MARKER_TTL_S,
        max_entries_per_commit: int = 5000,
        commit_timeout_s: float | None = DEFAULT_COMMIT_TIMEOUT_S,
        connection_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        if not (callable(stream) or (isinstance(stream, str) and stream)):
            raise ConfigError(f"RedisStreamSink needs a stream key or a function record -> key, got {stream!r}")
        if serializer is not None and not callable(serializer):
            raise ConfigError(f"RedisStreamSink serializer must be callable, got {serializer!r}")
        if maxlen is not None and (not isinstance(maxlen, int) or maxlen < 1):
            raise ConfigError(f"RedisStreamSink maxlen must be a positive int or None, got {maxlen!r}")
        if not marker_ttl_s or marker_ttl_s < 1:
            raise ConfigError(
                f"RedisStreamSink marker_ttl_s must be at least 1 s (markers expire so they never pile up), "
                f"got {marker_ttl_s!r}"
            )
        if not isinstance(max_entries_per_commit, int) or max_entries_per_commit < 1:
            raise ConfigError(f"RedisStreamSink max_entries_per_commit must be a positive int, got {max_entries_per_commit!r}")
        if commit_timeout_s is not None and (isinstance(commit_timeout_s, bool)
                                             or not isinstance(commit_timeout_s, (int, float))
                                             or not 0 < commit_timeout_s < math.inf):
            raise ConfigError(
                f"RedisStreamSink commit_timeout_s must be a positive number of seconds (how long a commit waits "
                f"for Redis to answer) or None (for ever), got {commit_timeout_s!r}"
            )
        self.stream = stream
        self.url = url
        self.serializer = serializer
        self.maxlen = maxlen
        self.approximate = approximate
        self.marker_prefix = marker_prefix
        self.marker_ttl_s = marker_ttl_s
        self.max_entries_per_commit = max_entries_per_commit
        self.commit_timeout_s = commit_timeout_s
        self.connection_kwargs = dict(connection_kwargs or {})

    def describe(self) -> str:
        return f"redis_stream({self.stream!r})" if isinstance(self.stream, str) else "redis_stream(<function>)"

    def marker_key(self, commit_id: str) -> str:
        """The key of the commit marker of committable ``commit_id``."""
        return f"{self.marker_prefix}{commit_id}"

    def entry(self, record: Any) -> tuple[str, dict[str, FieldValue]]:
        """The stream key and fields that ``record`` is written as."""
        key = self.stream if isinstance(self.stream, str) else self.stream(record)
        if not isinstance(key, str) or not key:
            raise ConfigError(f"RedisStreamSink: the stream function gave {key!r} for record {record!r}, not a key")
        fields = default_fields(record) if self.serializer is None else default_fields(self.serializer(record))
        if not fields:
            raise ConfigError(f"RedisStreamSink: record {record!r} gives no field; a stream entry needs one")
        if len(fields) > MAX_ENTRY_FIELDS:
            raise ConfigError(
                f"RedisStreamSink {self.describe()}: record {short_repr(record)} gives an entry of {len(fields):,} "
                f"fields; the sink appends entries of at most {MAX_ENTRY_FIELDS:,} fields (one Lua call per entry, "
                f"which takes about 8,000 arguments): pack them into fewer with a serializer, e.g. "
                f"serializer=lambda r: {{'json': json.dumps(r)}}"
            )
        return key, fields

    def create_writer(self, ctx: OperatorContext) -> SinkWriter[RedisStreamCommittable]:
        return _RedisStreamWriter(self, ctx)

    def create_committer(self) -> Committer[RedisStreamCommittable]:
        return _RedisStreamCommitter(self)


class _RedisStreamWriter(SinkWriter[RedisStreamCommittable]):
    """Buffers entries per stream until the next barrier; writes nothing to Redis itself."""

    def __init__(self, sink: RedisStreamSink, ctx: OperatorContext) -> None:
        self.sink = sink
        # unique per writer (a restarted task has a new one): ids never repeat across attempts
        self.prefix = f"{ctx.operator_uid}/{ctx.subtask_index}/{uuid.uuid4().hex[:16]}"
        self.seq = 0
        self.buffer: list[tuple[str, dict[str, FieldValue]]] = []

    def write(self, batch: Batch) -> None:
        entry = self.sink.entry
        for record in batch.records():
            try:
                self.buffer.append(entry(record))
            except ConfigError:
                raise  # (names the record)
            except Exception as exc:  # the stream function or serializer failed: the task names the record
                raise UserCodeError(record, exc) from exc

    def prepare_commit(self, checkpoint_id: int | None) -> list[RedisStreamCommittable]:
        tag = "final" if checkpoint_id is None else f"chk-{checkpoint_id}"
        step = self.sink.max_entries_per_commit
        out: list[RedisStreamCommittable] = []
        for start in range(0, len(self.buffer), step):
            c = RedisStreamCommittable(f"{self.prefix}/{tag}/{self.seq}")
            for key, fields in self.buffer[start : start + step]:
                c.entries.setdefault(key, []).append(fields)
            out.append(c)
            self.seq += 1
        self.buffer = []
        return out

    def close(self) -> None:
        self.buffer = []  # uncommitted: dropped (a restored job writes it again)


class _RedisStreamCommitter(Committer[RedisStreamCommittable]):
    """Appends each committable and sets its marker in one atomic Lua script (see module)."""

    def __init__(self, sink: RedisStreamSink) -> None:
        self.sink = sink
        self._client: Any = None
        self._script: Any = None
        self.counts = {"commits": 0, "entries": 0, "skipped": 0}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_client": None, "_script": None}

    def _args(self, c: RedisStreamCommittable, marker: str) -> tuple[list[str], list[FieldValue]]:
        sink = self.sink
        args: list[FieldValue] = [
            int(sink.marker_ttl_s * 1000),
            len(c),
            "" if sink.maxlen is None else sink.maxlen,
            "~" if sink.approximate else "=",
            MAX_ENTRY_FIELDS,
        ]
        for entries in c.entries.values():
            args.append(len(entries))
            for fields in entries:
                args.append(len(fields))
                for k, v in fields.items():
                    args.append(k)
                    args.append(v)
        return [marker, *c.entries], args

    def commit(self, committables: list[RedisStreamCommittable]) -> None:
        if self._client is None:
            timeout = getattr(self.sink, "commit_timeout_s", DEFAULT_COMMIT_TIMEOUT_S)  # (a sink pickled before it had one)
            options = dict(self.sink.connection_kwargs)
            if timeout is not None:
                options.setdefault("socket_timeout", timeout)
                options.setdefault("socket_connect_timeout", timeout)
            self._client = _connect(self.sink.url, options, "RedisStreamSink")
            self._script = self._client.register_script(_COMMIT_SCRIPT)
        for c in committables:
            if not c.entries:
                continue
            keys, args = self._args(c, self.sink.marker_key(c.commit_id))
            try:
                n = int(self._script(keys=keys, args=args))
            except _redis("RedisStreamSink").RedisError as exc:
                # JobFailed, as the master's own wrapping of a failed commit makes it: the final
                # commit of a job without checkpointing is not wrapped (engine/master.py)
                why = ""
                if isinstance(exc, _redis("RedisStreamSink").TimeoutError):
                    why = (f" (no answer within commit_timeout_s={getattr(self.sink, 'commit_timeout_s', DEFAULT_COMMIT_TIMEOUT_S)!r}; "
                           "the restored job commits it again, and skips it if it went through)")
                raise JobFailed(
                    f"RedisStreamSink {self.sink.describe()} at {_safe_url(self.sink.url)!r}: committing "
                    f"{c.commit_id!r} ({len(c)} entries to {list(c.entries)!r}) failed: {exc}{why}"
                ) from exc
            if n < 0:
                self.counts["skipped"] += 1  # committed before (a re-commit after a restore)
            else:
                self.counts["commits"] += 1
                self.counts["entries"] += n

    def result(self) -> dict[str, int]:
        """What this job master committed: commits, entries, and committables skipped as
        already committed."""
        return dict(self.counts)
