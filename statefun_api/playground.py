"""StateFun's playground ingress and egress: messages in over HTTP, egress records out over HTTP.

The flink-statefun-playground examples (python/greeter and others, release 3.2 on) declare no
Kafka: their ``module.yaml`` has an ``io.statefun.playground.v1/ingress`` document (an HTTP
server taking messages) and an ``io.statefun.playground.v1/egress`` one (an HTTP server
handing out what functions sent to the egress ``io.statefun.playground/egress``, by topic).
:meth:`StatefulFunctionsJob.with_module_yaml` binds both, so the playground runs unchanged:

* ``curl -X PUT -H "Content-Type: application/vnd.example/GreetRequest" -d '{"name": "Bob"}'
  localhost:8090/example/person/Bob`` sends the body as a message of type
  ``example/GreetRequest`` (the content type after ``application/vnd.``; without one
  ``io.statefun.types/string``) to the function ``example/person`` with id ``Bob``
  (:class:`PlaygroundIngress`). PUT and POST are accepted. In a job, a path naming a function
  type the job has no function for (embedded, or behind one of its endpoints) gets 404 and
  sends nothing (its message would fail the job).
* ``curl -X GET localhost:8091/greetings`` takes the oldest record of topic ``greetings``:
  200 with the ``payload`` of an egress record ``{"topic": "greetings", "payload": "..."}``
  (typename ``io.statefun.playground/EgressRecord``, JSON), 404 while the topic is empty,
  405 for a topic the egress does not declare (:class:`PlaygroundEgress`).

What raystream adds to StateFun's playground (which answers a PUT once the message is in
memory, and drops egress records when a topic holds 2^20): nothing is lost silently.

* The ingress answers 200 once the message is durable: with checkpointing, after the first
  checkpoint that covers it completes (so a PUT waits up to a checkpoint interval); without,
  once the message entered the job. A message the job did not make durable (the job failed,
  was cancelled, or ``ack_timeout_s`` passed) gets 503 or 504 and may be sent again: a client
  that retries on those gets every message at least once. Beyond ``max_pending`` messages
  not yet settled (a 504 keeps its place until a checkpoint or the job's end settles the
  message), a PUT gets 503 at once (back-pressure on the senders).
* The egress makes a record readable once the checkpoint that covers it completes (without
  checkpointing: at once), so a failure never shows a record that is then produced again;
  the records not yet read are kept in checkpoints (a record read after the checkpoint a job
  restores from is served again: reads are at least once). Holding ``max_buffered`` records,
  the egress stops taking input (back-pressure on the functions) until readers take some; up
  to one channel credit window of batches more can arrive (data ahead of a barrier is never
  held back).

Both servers run in their task's process (the source and sink run at parallelism 1): on a
cluster, the node that runs the task serves the port.

Example:
    >>> from raystream.statefun_api.playground import parse_module_playground
    >>> parse_module_playground('''
    ... kind: io.statefun.playground.v1/ingress
    ... spec:
    ...   port: 8090
    ... ---
    ... kind: io.statefun.playground.v1/egress
    ... spec:
    ...   port: 8091
    ...   topics:
    ...     - greetings
    ... ''')
    PlaygroundSpec(ingress_port=8090, egress_port=8091, topics=('greetings',))
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

from raystream.engine.connectors import (
    END_OF_INPUT,
    NOTHING_AVAILABLE,
    PollResult,
    Sink,
    SinkWriter,
    Source,
    SourceReader,
)
from raystream.engine.errors import ConfigError
from raystream.engine.operator import OperatorContext
from raystream.engine.records import Batch
from raystream.statefun_api.endpoints import module_documents

__all__ = [
    "PLAYGROUND_INGRESS_KIND",
    "PLAYGROUND_EGRESS_KIND",
    "PLAYGROUND_EGRESS",
    "EGRESS_RECORD_TYPENAME",
    "PlaygroundSpec",
    "PlaygroundIngress",
    "FunctionTypes",
    "PlaygroundEgress",
    "parse_module_playground",
]

log = logging.getLogger(__name__)

#: the module.yaml kind of the playground's HTTP ingress
PLAYGROUND_INGRESS_KIND = "io.statefun.playground.v1/ingress"
#: the module.yaml kind of the playground's HTTP egress
PLAYGROUND_EGRESS_KIND = "io.statefun.playground.v1/egress"
#: the egress typename functions send playground egress records to
PLAYGROUND_EGRESS = "io.statefun.playground/egress"
#: the (JSON) type of a playground egress record: ``{"topic": ..., "payload": ...}``
EGRESS_RECORD_TYPENAME = "io.statefun.playground/EgressRecord"
#: the value type of an ingress message whose Content-Type does not name one
DEFAULT_INGRESS_TYPE = "io.statefun.types/string"
_CONTENT_TYPE_PREFIX = "application/vnd."
_BIND_RETRY_S = 10.0  # a restarted task may find the port still held by the old attempt's server


@dataclass(frozen=True)
class PlaygroundSpec:
    """The playground documents of a module.yaml: the ingress port (None: no ingress), the
    egress port (None: no egress) and the egress topics."""

    ingress_port: int | None
    egress_port: int | None
    topics: tuple[str, ...]


def parse_module_playground(text: str, source: str = "<module.yaml>") -> PlaygroundSpec | None:
    """The ``io.statefun.playground.v1/ingress`` and ``.../egress`` documents of a module.yaml
    (None when it has neither). Raises ConfigError naming the file and document for a bad
    field (``port`` must be an integer in 0..65535, ``topics`` a list of names)."""
    ingress: int | None = None
    egress: int | None = None
    topics: tuple[str, ...] = ()
    found = False
    for place, doc in module_documents(text, source):
        if not isinstance(doc, Mapping) or doc.get("kind") not in (PLAYGROUND_INGRESS_KIND, PLAYGROUND_EGRESS_KIND):
            continue
        where = f"{source} ({place}, {doc['kind']})"
        spec = doc.get("spec")
        if not isinstance(spec, Mapping):
            raise ConfigError(f"{where}: 'spec' must be a mapping, got {spec!r}")
        known = {"port"} if doc["kind"] == PLAYGROUND_INGRESS_KIND else {"port", "topics"}
        unknown = sorted(set(spec) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown field(s) {unknown} in 'spec' (known: {sorted(known)})")
        port = spec.get("port")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ConfigError(f"{where}: 'spec.port' must be a port number (0..65535), got {port!r}")
        found = True
        if doc["kind"] == PLAYGROUND_INGRESS_KIND:
            if ingress is not None:
                raise ConfigError(f"{where}: a second playground ingress (the first listens on port {ingress})")
            ingress = port
        else:
            if egress is not None:
                raise ConfigError(f"{where}: a second playground egress (the first listens on port {egress})")
            names = spec.get("topics", [])
            if not isinstance(names, list) or not all(isinstance(t, str) and t and "/" not in t for t in names):
                raise ConfigError(f"{where}: 'spec.topics' must be a list of topic names, got {names!r}")
            egress, topics = port, tuple(dict.fromkeys(names))
    return PlaygroundSpec(ingress, egress, topics) if found else None


def _serve(host: str, port: int, handler: type[BaseHTTPRequestHandler], what: str) -> ThreadingHTTPServer:
    """An HTTP server on ``host:port`` answering from a daemon thread; binding is retried for
    a while (the server of a failed attempt may still hold the port)."""
    deadline = time.monotonic() + _BIND_RETRY_S
    while True:
        try:
            server = ThreadingHTTPServer((host, port), handler)
            break
        except OSError as exc:
            if time.monotonic() >= deadline:
                raise ConfigError(f"{what}: cannot listen on {host}:{port}: {exc}") from exc
            time.sleep(0.1)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.05,), name=f"rs-{what.replace(' ', '-')}", daemon=True).start()
    return server


def _stop(server: ThreadingHTTPServer | None) -> None:
    """Stop serving and free the port (the next attempt's task may bind it)."""
    if server is not None:
        server.shutdown()
        server.server_close()


class _Handler(BaseHTTPRequestHandler):
    """Quiet request handler: answers through ``_answer``; the owner is set on a subclass."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        log.debug("%s: " + format, self.address_string(), *args)

    def _answer(self, status: int, body: bytes = b"", content_type: str = "text/plain; charset=utf-8") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if body:
            self.wfile.write(body)


# ---------------------------------------------------------------------------- ingress
@dataclass
class _IngressSplit:
    """The one split of a playground ingress: its server (a port is served once)."""

    split_id: str
    port: int


class _Request:
    """A message a PUT carried, waiting for its answer."""

    __slots__ = ("record", "status", "reason", "_done")

    def __init__(self, record: tuple | None) -> None:
        self.record = record
        self.status = 0
        self.reason = ""
        self._done = threading.Event()

    def answer(self, status: int, reason: str = "") -> None:
        if not self._done.is_set():
            self.status, self.reason = status, reason
            self._done.set()

    def wait(self, timeout_s: float) -> bool:
        return self._done.wait(timeout_s)


class FunctionTypes:
    """The function types a job can deliver messages to: its embedded typenames and the
    ``functions`` of its remote endpoints (``namespace/*`` patterns or typenames).

    ``current()`` gives them as ``(typenames, endpoint patterns)``; it is read when the ingress
    checks a message, and once when the job is pickled for its tasks (the functions and
    endpoints as the job is executed; the registry itself does not travel with the source).

    Example:
        >>> types = FunctionTypes(lambda: (["example/person"], ["remote/*"]))
        >>> types.serves("example/person"), types.serves("remote/any"), types.serves("example/nope")
        (True, True, False)
    """

    def __init__(self, current: Callable[[], tuple[Iterable[str], Iterable[str]]]) -> None:
        self._current: Callable[[], tuple[Iterable[str], Iterable[str]]] | None = current
        self._frozen: tuple[frozenset[str], frozenset[str]] | None = None

    def _types(self) -> tuple[frozenset[str], frozenset[str]]:
        if self._frozen is not None:
            return self._frozen
        assert self._current is not None
        typenames, patterns = self._current()
        return frozenset(typenames), frozenset(patterns)

    def serves(self, typename: str) -> bool:
        """A function of the job (embedded, or behind an endpoint) receives ``typename``'s messages."""
        typenames, patterns = self._types()
        return typename in typenames or typename in patterns or f"{typename.rpartition('/')[0]}/*" in patterns

    def describe(self) -> str:
        typenames, patterns = self._types()
        return ", ".join(sorted(typenames | patterns)) or "none"

    def __getstate__(self) -> dict[str, Any]:
        return {"frozen": self._types()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._current, self._frozen = None, state["frozen"]


class PlaygroundIngress(Source[_IngressSplit]):
    """StateFun's playground ingress: an HTTP server taking messages for functions (see the
    module docstring for the protocol and the delivery guarantee).

    ``max_pending`` bounds the messages accepted and not yet answered (each waits on a server
    thread); ``function_types`` (set by :meth:`StatefulFunctionsJob.with_playground_ingress`)
    the types it takes messages for (404 for others; ``None``: any); ``ack_timeout_s`` how
    long a PUT waits for its message to become durable (504 after); ``max_body_bytes`` the
    size of one message (413 beyond).

    Example:
        >>> import raystream as rs
        >>> from raystream.statefun_api import StatefulFunctions
        >>> from raystream.statefun_api.job import StatefulFunctionsJob
        >>> from raystream.statefun_api.playground import PlaygroundIngress
        >>> env = rs.StreamEnvironment()
        >>> sf = StatefulFunctionsJob(env, StatefulFunctions())
        >>> sf.with_playground_ingress(PlaygroundIngress(port=8090)).dispatcher.node.name
        'statefun'
    """

    bounded = False
    max_parallelism = 1  # one HTTP server

    def __init__(self, port: int = 8090, host: str = "0.0.0.0", max_pending: int = 1_000,
                 ack_timeout_s: float = 120.0, max_body_bytes: int = 4 << 20) -> None:
        if max_pending < 1:
            raise ConfigError(f"PlaygroundIngress: max_pending must be >= 1, got {max_pending}")
        self.port = port
        self.host = host
        self.max_pending = max_pending
        self.ack_timeout_s = ack_timeout_s
        self.max_body_bytes = max_body_bytes
        self.function_types: FunctionTypes | None = None

    def create_splits(self, parallelism: int) -> list[_IngressSplit]:
        return [_IngressSplit(f"playground-ingress:{self.port}", self.port)]

    def create_reader(self, ctx: OperatorContext) -> SourceReader[_IngressSplit]:
        return _IngressReader(self, ctx)

    def describe(self) -> str:
        return f"PlaygroundIngress(port={self.port})"


class _IngressReader(SourceReader[_IngressSplit]):
    def __init__(self, source: PlaygroundIngress, ctx: OperatorContext) -> None:
        self._source = source
        self._checkpointing = ctx.checkpointing
        # an idle source task waits longer and longer between polls (up to
        # TaskConfig.idle_poll_max_ms): a PUT wakes it to poll at once
        self._post: Callable[[Callable[[], None]], None] | None = ctx.post
        # gauges and counters in the job's metrics (``raystream status``): messages not yet
        # settled (<= max_pending), messages taken, PUTs refused with 503 for lack of room
        self._metrics = ctx.metrics
        self._metrics.update(playground_pending=0, playground_messages=0, playground_refused=0)
        self._lock = threading.Lock()
        self._queue: deque[_Request] = deque()  # accepted, not yet emitted
        self._outstanding = 0  # accepted and not yet settled (queued, emitted, awaiting): <= max_pending
        self._since: list[_Request] = []  # emitted since the last snapshot
        self._awaiting: deque[tuple[int, list[_Request]]] = deque()  # (checkpoint, emitted before it)
        self._split: _IngressSplit | None = None
        self._server: ThreadingHTTPServer | None = None
        self._closed = False

    def add_splits(self, splits: list[_IngressSplit]) -> None:
        if splits and self._server is None:
            self._split = splits[0]
            self._server = _serve(self._source.host, self._split.port, self._handler(), "playground ingress")

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        reader = self

        class IngressHandler(_Handler):
            def do_PUT(self) -> None:  # noqa: N802 - http.server's naming
                reader._ingest(self)

            do_POST = do_PUT  # noqa: N815

        return IngressHandler

    def _ingest(self, h: _Handler) -> None:
        parts = urlsplit(h.path).path.strip("/").split("/")
        h.close_connection = True  # (until the body is read: an early answer leaves it unread)
        if len(parts) != 3 or not all(parts):
            h._answer(400, b"Invalid URL. Please specify '/namespace/function_type/function_id'\n")
            return
        namespace, name, fid = (unquote(p) for p in parts)
        types = self._source.function_types
        if types is not None and not types.serves(f"{namespace}/{name}"):
            # (a message no function takes would fail the job once it reached the dispatcher)
            h._answer(404, f"no function type {namespace + '/' + name!r} in this job (it has: {types.describe()})\n".encode())
            return
        content_type = h.headers.get("Content-Type", "")
        value_type = DEFAULT_INGRESS_TYPE
        if content_type.startswith(_CONTENT_TYPE_PREFIX):
            value_type = content_type[len(_CONTENT_TYPE_PREFIX):].split(";", 1)[0].strip()
            if value_type.count("/") < 1 or value_type.startswith("/") or value_type.endswith("/"):
                h._answer(400, f"Content-Type names no message type 'namespace/name': {content_type!r}\n".encode())
                return
        try:
            length = int(h.headers.get("Content-Length", ""))
        except ValueError:
            h._answer(411, b"a message needs a Content-Length\n")
            return
        if length > self._source.max_body_bytes:
            h._answer(413, f"message of {length} bytes; the ingress takes at most {self._source.max_body_bytes}\n".encode())
            return
        body = h.rfile.read(length) if length > 0 else b""
        h.close_connection = False
        request = _Request((f"{namespace}/{name}", fid, "", "", value_type, body, True))
        refused = b""  # (answered after the lock: the task thread's poll takes it too)
        with self._lock:
            if self._closed:
                refused = b"the job is not running\n"
            elif self._outstanding >= self._source.max_pending:
                self._metrics["playground_refused"] += 1
                refused = (f"the ingress holds {self._outstanding} messages not yet durable (max_pending); "
                           "send again later\n").encode()
            else:
                self._outstanding += 1
                self._metrics["playground_pending"] = self._outstanding
                self._queue.append(request)
        if refused:
            h._answer(503, refused)
            return
        if self._post is not None:
            self._post(_nothing)
        if not request.wait(self._source.ack_timeout_s):  # (it keeps its place in max_pending until settled)
            request.answer(504, "the message was not yet durable after ack_timeout_s; it may still be processed")
        h._answer(request.status, (request.reason + "\n").encode() if request.reason else b"")

    def poll_next(self) -> PollResult:
        if self._split is None:
            return END_OF_INPUT  # (a subtask without the split: the server runs once)
        with self._lock:
            if not self._queue:
                return NOTHING_AVAILABLE
            taken = list(self._queue)
            self._queue.clear()
        self._metrics["playground_messages"] += len(taken)
        records = []
        for request in taken:
            records.append(request.record)
            request.record = None  # (the batch has it: a request waiting for its checkpoint holds no body)
        if self._checkpointing:
            self._since.extend(taken)
        else:
            self._settle(taken, 200)
        return Batch.of_records(records)

    def _settle(self, requests: list[_Request], status: int, reason: str = "") -> None:
        """Answer ``requests`` (a no-op for one already answered 504) and free their places."""
        for request in requests:
            request.answer(status, reason)
        with self._lock:
            self._outstanding -= len(requests)
            self._metrics["playground_pending"] = self._outstanding

    def snapshot_state(self, checkpoint_id: int) -> list[_IngressSplit]:
        if self._since:
            self._awaiting.append((checkpoint_id, self._since))
            self._since = []
        return [self._split] if self._split is not None else []

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        awaiting = self._awaiting
        while awaiting and awaiting[0][0] <= checkpoint_id:
            self._settle(awaiting.popleft()[1], 200)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            left = [*self._queue, *self._since, *(r for _cid, rs in self._awaiting for r in rs)]
            self._queue.clear()
            self._since, self._awaiting = [], deque()
        self._settle(left, 503, "the job stopped before the message was durable; send it again")
        _stop(self._server)
        self._server = None


# ---------------------------------------------------------------------------- egress
class PlaygroundEgress(Sink[None]):
    """StateFun's playground egress: an HTTP server handing out egress records by topic
    (``GET /<topic>``; see the module docstring for the protocol and the guarantees). Bind
    it to the egress ``io.statefun.playground/egress`` at parallelism 1, with values of the
    JSON type ``io.statefun.playground/EgressRecord`` (:meth:`StatefulFunctionsJob.with_module_yaml`
    does both).

    Example:
        >>> import raystream as rs
        >>> from raystream.statefun_api import StatefulFunctions, make_json_type
        >>> from raystream.statefun_api.job import StatefulFunctionsJob
        >>> from raystream.statefun_api.playground import PlaygroundEgress
        >>> sf = StatefulFunctionsJob(rs.StreamEnvironment(), StatefulFunctions())
        >>> sf.with_egress(PLAYGROUND_EGRESS, PlaygroundEgress(8091, ["greetings"]),
        ...                value_type=make_json_type(EGRESS_RECORD_TYPENAME)).egresses
        ['io.statefun.playground/egress']
    """

    gates_input = True  # holding max_buffered records, it waits for readers
    max_parallelism = 1  # one HTTP server: the records of other subtasks would never be readable

    def __init__(self, port: int = 8091, topics: Iterable[str] = (), host: str = "0.0.0.0",
                 max_buffered: int = 1 << 20) -> None:
        if max_buffered < 1:
            raise ConfigError(f"PlaygroundEgress: max_buffered must be >= 1, got {max_buffered}")
        self.port = port
        self.topics = tuple(topics)
        self.host = host
        self.max_buffered = max_buffered

    def create_writer(self, ctx: OperatorContext) -> SinkWriter[None]:
        return _EgressWriter(self, ctx)

    def describe(self) -> str:
        return f"PlaygroundEgress(port={self.port}, topics={list(self.topics)})"


class _EgressWriter(SinkWriter[None]):
    def __init__(self, sink: PlaygroundEgress, ctx: OperatorContext) -> None:
        if ctx.parallelism != 1:  # records of the other subtasks would never be readable
            raise ConfigError(
                f"{ctx.task_name}: a PlaygroundEgress runs at parallelism 1 (one HTTP server), not "
                f"{ctx.parallelism} (its max_parallelism: the job graph caps its sink node to 1; a writer made "
                f"outside a job must be too)"
            )
        self._sink = sink
        self._where = f"playground egress of {ctx.task_name}"
        self._checkpointing = ctx.checkpointing
        self._post: Callable[[Callable[[], None]], None] | None = ctx.post
        self._lock = threading.Lock()
        self._readable: dict[str, deque[bytes]] = {t: deque() for t in sink.topics}  # GET takes from these
        self._pending: list[tuple[str, bytes]] = []  # written since the last snapshot
        self._prepared: deque[tuple[int, list[tuple[str, bytes]]]] = deque()  # (checkpoint, written before it)
        self._held = 0  # records in all three
        # in the job's metrics: records held (<= max_buffered + a credit window), records read
        self._metrics = ctx.metrics
        self._metrics.update(playground_held=0, playground_read=0)
        self._server: ThreadingHTTPServer | None = _serve(sink.host, sink.port, self._handler(), "playground egress")

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        writer = self

        class EgressHandler(_Handler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                writer._read(self)

        return EgressHandler

    def _read(self, h: _Handler) -> None:
        topic = unquote(urlsplit(h.path).path.strip("/"))
        if topic not in self._readable:  # (the topics are fixed: no lock needed)
            h._answer(405, f"no topic {topic!r} (topics: {list(self._sink.topics)})\n".encode())
            return
        with self._lock:  # (answered after it: the task thread's write takes it too)
            queue = self._readable[topic]
            payload = queue.popleft() if queue else None
            if payload is not None:
                self._held -= 1
                self._metrics["playground_held"] = self._held
                self._metrics["playground_read"] += 1
                wake = self._held == self._sink.max_buffered - 1
        if payload is None:
            h._answer(404)
            return
        if wake and self._post is not None:  # the task may wait in accepts_input(): look again
            self._post(_nothing)
        h._answer(200, payload, "application/octet-stream")

    def accepts_input(self) -> bool:
        return self._held < self._sink.max_buffered

    def write(self, batch: Batch) -> None:
        out = []
        for value in batch.records():
            topic = value.get("topic") if isinstance(value, dict) else None
            payload = value.get("payload") if isinstance(value, dict) else None
            if not isinstance(topic, str) or not isinstance(payload, str):
                raise ValueError(
                    f"{self._where}: an egress record is a JSON object {{\"topic\": str, \"payload\": str}} "
                    f"of type {EGRESS_RECORD_TYPENAME!r}, got {value!r}"
                )
            if topic not in self._readable:
                raise ValueError(
                    f"{self._where}: a record for topic {topic!r}, which the egress does not declare "
                    f"(topics: {list(self._sink.topics)}; add it to 'spec.topics' of the module.yaml's "
                    f"{PLAYGROUND_EGRESS_KIND} document)"
                )
            out.append((topic, payload.encode("utf-8")))
        with self._lock:
            self._held += len(out)
            self._metrics["playground_held"] = self._held
            if self._checkpointing:
                self._pending.extend(out)
            else:
                self._publish(out)

    def _publish(self, records: list[tuple[str, bytes]]) -> None:
        readable = self._readable
        for topic, payload in records:
            readable[topic].append(payload)

    def snapshot_state(self, checkpoint_id: int) -> Any:
        with self._lock:
            if self._pending:
                self._prepared.append((checkpoint_id, self._pending))
                self._pending = []
            # unread records and those prepared up to this checkpoint: readable after a restore
            return {"records": [*((t, p) for t, q in self._readable.items() for p in q),
                                *(r for _cid, rs in self._prepared for r in rs)]}

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        with self._lock:
            prepared = self._prepared
            while prepared and prepared[0][0] <= checkpoint_id:
                self._publish(prepared.popleft()[1])

    def restore_state(self, states: list[Any]) -> None:
        records = [(t, p) for st in states if st for t, p in st.get("records", []) if t in self._readable]
        with self._lock:
            self._publish(records)
            self._held += len(records)
            self._metrics["playground_held"] = self._held

    def prepare_commit(self, checkpoint_id: int | None) -> list[None]:
        if checkpoint_id is None:  # end of input: what is left becomes readable
            with self._lock:
                while self._prepared:
                    self._publish(self._prepared.popleft()[1])
                self._publish(self._pending)
                self._pending = []
        return []

    def close(self) -> None:
        _stop(self._server)
        self._server = None


def _nothing() -> None:
    """A mail that only wakes the task (its input gate is looked at again)."""
