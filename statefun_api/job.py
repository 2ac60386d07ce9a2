"""Wiring a stateful-functions job onto a raystream StreamEnvironment.

A :class:`StatefulFunctionsJob` compiles to::

    ingress stream -> router (IngressRouter: record -> messages) -> key_by(address)
        -> FunctionDispatcher (keyed; side output "statefun-feedback" closed as a feedback
           edge hash-partitioned by address) -> side output "egress:<typename>" -> sink

Ingresses are any DataStreams with a router; egresses are named (StateFun typenames) and
bound to any raystream sink, or taken as a DataStream to transform further. A job needs
no egress (as a StateFun module needs none): the dispatcher's main output, which carries
no records, always ends in a :class:`DiscardingSink`, so the job has a sink even when its
functions only keep state.

Example:
    >>> import raystream as rs
    >>> from raystream.statefun_api import StatefulFunctions, message_builder, egress_message_builder, StringType
    >>> functions = StatefulFunctions()
    >>> @functions.bind("demo/greeter")
    ... def greeter(context, message):
    ...     context.send_egress(egress_message_builder(
    ...         "demo/greets", f"hello {message.as_string()}", StringType))
    >>> env = rs.StreamEnvironment(parallelism=2)
    >>> sf = StatefulFunctionsJob(env, functions)
    >>> sf.with_ingress(env.from_collection(["ann", "bob"]),
    ...                 lambda name: message_builder("demo/greeter", name, str_value=name))  # doctest: +ELLIPSIS
    <StatefulFunctionsJob 'statefun': 1 function type(s), 1 ingress(es), 0 egress(es)>
    >>> sorted(sf.egress_stream("demo/greets").execute_and_collect())  # doctest: +SKIP
    ['hello ann', 'hello bob']
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from raystream.engine.connectors import Sink, SinkWriter
from raystream.engine.errors import GraphError
from raystream.engine.graph import StreamEdge
from raystream.engine.operator import OperatorContext
from raystream.engine.partitioners import KeyGroupPartitioner, KeySelector
from raystream.engine.records import Batch
from raystream.operators.datastream import KeyedStream
from raystream.statefun_api.address import parse_typename
from raystream.statefun_api.dispatcher import DispatcherConfig, FunctionDispatcher
from raystream.statefun_api.endpoints import (
    IngressTopic,
    RemoteEndpoint,
    _check_duplicates,
    endpoint_problem,
    load_module_yaml,
    parse_module_ingresses,
)
from raystream.statefun_api.functions import StatefulFunctions, not_a_registry
from raystream.statefun_api.ingress import (
    Field,
    IngressRouter,
    RoutedIngress,
    Router,
    check_routed_targets,
)
from raystream.statefun_api.playground import (
    EGRESS_RECORD_TYPENAME,
    PLAYGROUND_EGRESS,
    FunctionTypes,
    PlaygroundEgress,
    PlaygroundIngress,
    parse_module_playground,
)
from raystream.statefun_api.routing import (
    FEEDBACK_TAG,
    address_key,
    egress_tag,
    message_record_key_groups,
)
from raystream.statefun_api.types import Type, make_json_type, simple_type

__all__ = ["StatefulFunctionsJob", "Router", "DiscardingSink"]


def _find_topic(topics: list[IngressTopic], name: str, path: str) -> IngressTopic:
    """The ingress topic (or stream) ``name`` of a module.yaml, or an ingress id with one topic."""
    found = [t for t in topics if t.name == name]
    if not found:
        by_id = [t for t in topics if t.ingress_id == name]
        if len(by_id) > 1:
            raise GraphError(f"{path}: ingress {name!r} has {len(by_id)} topics ({', '.join(t.name for t in by_id)}); bind each by name")
        found = by_id
    if not found:
        listed = ", ".join(f"{t.name!r} (ingress {t.ingress_id})" for t in topics) or "none"
        raise GraphError(f"{path}: no routable ingress topic or stream {name!r}; the file has: {listed}")
    if len(found) > 1:
        raise GraphError(f"{path}: topic {name!r} is in {len(found)} ingresses; bind it by ingress id")
    return found[0]


def _payload_type(typename: str) -> Type[Any]:
    """A Type for values that are already the serialized payload of ``typename`` (bytes)."""

    def payload(value: Any) -> bytes:
        if isinstance(value, (bytes, bytearray, memoryview)):
            return bytes(value)
        raise TypeError(
            f"an ingress value of {typename!r} must be its serialized payload (bytes), got {type(value).__name__} "
            f"{value!r}; to send decoded values pass value_types={{{typename!r}: <its Type>}}"
        )

    return simple_type(typename, payload, bytes)


class _DiscardingWriter(SinkWriter[Any]):
    def write(self, batch: Batch) -> None:
        """Drop the batch."""


class DiscardingSink(Sink[Any]):
    """A sink that drops every record: the end of a stateful-functions job's main output.

    Example:
        >>> DiscardingSink().describe()
        'DiscardingSink'
    """

    def create_writer(self, ctx: OperatorContext) -> SinkWriter[Any]:
        """A writer that drops every batch (called in each sink task)."""
        return _DiscardingWriter()


class StatefulFunctionsJob:
    """Stateful functions on a StreamEnvironment: ingresses in, named egresses out.

    Args:
        env: the environment to add the job to.
        functions: the function registry.
        name: the dispatcher's operator name; its uid is ``"<name>-dispatcher"`` (stable
            across runs so savepoints find its state). Use different names for two jobs in
            one environment.
        parallelism: the dispatcher's parallelism (default: the environment's).
        max_in_flight: back-pressure cap (StateFun's ``statefun.async.max-per-task``): a
            dispatcher subtask admits ingress messages only while its in-flight work
            (queued messages, received feedback messages, remote calls) is under it (see
            :mod:`statefun_api.dispatcher`).
        drain_step: messages invoked per mailbox step before yielding to barriers, timers
            and other inputs.
        inbox_memory_bytes: memory budget per dispatcher subtask for messages waiting to
            be invoked; beyond it they spill to local disk.
        spill_dir: where spill files go (default: the system temporary directory).
        max_batch_per_address: messages given to one invocation of an address.
        endpoints: remote function endpoints (:func:`~statefun_api.endpoints.remote_endpoint`);
            more with :meth:`with_endpoint` / :meth:`with_module_yaml`.
        max_concurrent_requests: HTTP requests to remote functions, and invocations of
            embedded ``async def`` functions, in flight per dispatcher subtask (further calls
            wait their turn; none is dropped).

    Declare every egress (``with_egress`` / ``egress_stream``) before executing: the
    declarations travel with the dispatcher when the job is submitted.

    Example:
        >>> import raystream as rs
        >>> from raystream.statefun_api import StatefulFunctions
        >>> sf = StatefulFunctionsJob(rs.StreamEnvironment(), StatefulFunctions(), name="shop")
        >>> sf.with_egress("shop/receipts").egresses
        ['shop/receipts']
    """

    def __init__(
        self,
        env: Any,
        functions: StatefulFunctions,
        *,
        name: str = "statefun",
        parallelism: int | None = None,
        max_in_flight: int = 10_000,
        drain_step: int = 4096,
        max_batch_per_address: int = 1000,
        endpoints: Iterable[RemoteEndpoint] = (),
        max_concurrent_requests: int = 256,
        inbox_memory_bytes: int = 64 << 20,
        spill_dir: str | None = None,
    ) -> None:
        if not isinstance(functions, StatefulFunctions):
            raise GraphError(not_a_registry("StatefulFunctionsJob", functions))
        self.env = env
        self.functions = functions
        self.name = name
        self.parallelism = parallelism
        self.config = DispatcherConfig(
            functions,
            {},
            max_in_flight=max_in_flight,
            drain_step=drain_step,
            max_batch_per_address=max_batch_per_address,
            max_concurrent_requests=max_concurrent_requests,
            inbox_memory_bytes=inbox_memory_bytes,
            spill_dir=spill_dir,
        )
        if endpoints:
            self.with_endpoint(*endpoints)
        self._dispatcher: Any = None  # DataStream of the dispatcher, built by the first ingress
        self._ingresses = 0
        self._deferred_sinks: list[tuple[str, Sink]] = []
        self._routed: list[tuple[str, list[str]]] = []  # (routed ingress, its targets)

    def __reduce__(self):
        raise TypeError("StatefulFunctionsJob lives in the driver and cannot be pickled")

    def __repr__(self) -> str:
        return (
            f"<StatefulFunctionsJob {self.name!r}: {len(self.functions)} function type(s), "
            f"{self._ingresses} ingress(es), {len(self.config.egresses)} egress(es)>"
        )

    @property
    def egresses(self) -> list[str]:
        """The declared egress typenames."""
        return list(self.config.egresses)

    @property
    def ingress_count(self) -> int:
        """How many ingress streams feed the functions.

        Example:
            >>> import raystream as rs
            >>> from raystream.statefun_api import StatefulFunctions
            >>> StatefulFunctionsJob(rs.StreamEnvironment(), StatefulFunctions()).ingress_count
            0
        """
        return self._ingresses

    @property
    def dispatcher(self) -> Any:
        """The dispatcher's DataStream (to set a uid, parallelism...; exists after an ingress)."""
        if self._dispatcher is None:
            raise GraphError(f"{self!r} has no ingress yet: call with_ingress(stream, router) first")
        return self._dispatcher

    # ------------------------------------------------------------------ remote functions
    @property
    def endpoints(self) -> list[RemoteEndpoint]:
        """The declared remote function endpoints."""
        return list(self.config.endpoints)

    def with_endpoint(self, *endpoints: RemoteEndpoint) -> StatefulFunctionsJob:
        """Call the function types of ``endpoints`` over StateFun's HTTP request-reply protocol.

        Embedded functions (registered in the job's ``StatefulFunctions``) and remote ones
        mix freely and message each other; a namespace pattern (``"ns/*"``) does not cover
        the embedded functions of that namespace. The HTTP client is raystream's own (no
        extra to install).

        Example:
            >>> import raystream as rs
            >>> from raystream.statefun_api import StatefulFunctions
            >>> from raystream.statefun_api.endpoints import remote_endpoint
            >>> sf = StatefulFunctionsJob(rs.StreamEnvironment(), StatefulFunctions())
            >>> sf.with_endpoint(remote_endpoint("shop/*", "http://localhost:8000/{function.name}")).endpoints[0].functions
            'shop/*'
        """
        for ep in endpoints:
            problem = endpoint_problem(ep, self.functions, "with_endpoint()")
            if problem is not None:
                raise GraphError(problem)
        merged = self.config.endpoints + [ep for ep in endpoints if ep not in self.config.endpoints]
        _check_duplicates(merged)
        self.config.endpoints = merged
        return self

    def with_module_yaml(
        self,
        path: str,
        *,
        ingresses: Mapping[str, Any] | None = None,
        value_types: Mapping[str, Type[Any]] | None = None,
        playground: bool = True,
    ) -> StatefulFunctionsJob:
        """Declare the HTTP endpoints of a StateFun ``module.yaml`` (see
        :func:`~statefun_api.endpoints.load_module_yaml`) and feed its routable ingresses.

        ``ingresses`` binds a DataStream to each Kafka topic or Kinesis stream of the file's
        ingress documents that should get records (by topic/stream name, or by ingress id
        when that ingress has one topic): the stream's records are ``(key, value)`` pairs, as
        a Kafka record's, routed as StateFun routes them: one message per ``targets`` entry,
        the key as the function id, the value as a message of the topic's ``valueType``
        (:meth:`with_routed_ingress`). Values are the serialized payload (``bytes``, what the
        topic carries), or decoded values when ``value_types`` maps the ``valueType`` to its
        Type (``make_json_type(...)``), which then serializes them. A name that is not in
        the file fails, listing the topics it has; topics left unbound get no records.

        The playground's ``io.statefun.playground.v1/ingress`` and ``.../egress`` documents
        (flink-statefun-playground 3.2 on) start their HTTP servers on the ports they name
        (:meth:`with_playground_ingress`, :meth:`with_playground_egress`); ``playground=False``
        leaves them out.

        Example:
            ``sf.with_module_yaml("module.yaml", ingresses={"names": env.from_collection([("ann", b'{"name": "ann"}')])})``
        """
        endpoints = load_module_yaml(path)  # (a file that cannot be read fails here, clearly)
        if endpoints:
            self.with_endpoint(*endpoints)
        text = Path(path).read_text()
        spec = parse_module_playground(text, source=str(path)) if playground else None
        if spec is not None and spec.ingress_port is not None:
            self.with_playground_ingress(PlaygroundIngress(port=spec.ingress_port))
        if spec is not None and spec.egress_port is not None:
            self.with_playground_egress(PlaygroundEgress(port=spec.egress_port, topics=spec.topics))
        if ingresses:
            topics = parse_module_ingresses(text, source=str(path))
            types = dict(value_types or {})
            for name, stream in ingresses.items():
                topic = _find_topic(topics, name, path)
                value_type = types.get(topic.value_type) or _payload_type(topic.value_type)
                if value_type.typename != topic.value_type:
                    raise GraphError(
                        f"{path}: value_types[{topic.value_type!r}] is a Type of {value_type.typename!r}; "
                        f"ingress {topic.ingress_id!r} ({topic.name}) carries {topic.value_type!r}"
                    )
                self.with_routed_ingress(stream, list(topic.targets), value_type)
        return self

    def with_playground_ingress(self, ingress: PlaygroundIngress | None = None) -> StatefulFunctionsJob:
        """Take messages for the functions over HTTP, as StateFun's playground ingress does:
        ``PUT /<namespace>/<type>/<id>`` with the value as the body and its type in
        ``Content-Type: application/vnd.<namespace>/<name>``; answered 200 once the message
        is durable (see :mod:`statefun_api.playground`). One source task serves the port.

        Example:
            >>> import raystream as rs
            >>> from raystream.statefun_api import StatefulFunctions
            >>> sf = StatefulFunctionsJob(rs.StreamEnvironment(), StatefulFunctions())
            >>> sf.with_playground_ingress(PlaygroundIngress(port=8090)).dispatcher.node.name
            'statefun'
        """
        ingress = PlaygroundIngress() if ingress is None else ingress
        if not isinstance(ingress, PlaygroundIngress):
            raise GraphError(f"with_playground_ingress(): expected a PlaygroundIngress, got {ingress!r}")
        # a PUT for a type no function of the job takes is answered 404, instead of failing the job
        ingress.function_types = FunctionTypes(self._function_types)
        stream = self.env.from_source(ingress, f"playground-ingress:{ingress.port}")  # (max_parallelism 1)
        return self._connect(stream)

    def _function_types(self) -> tuple[list[str], list[str]]:
        """The embedded typenames and the endpoints' ``functions`` (as the job runs them)."""
        return list(self.functions.typenames()), [ep.functions for ep in self.config.endpoints]

    def with_playground_egress(self, egress: PlaygroundEgress) -> StatefulFunctionsJob:
        """Hand out what functions send to the egress ``io.statefun.playground/egress`` over
        HTTP, as StateFun's playground egress does: ``GET /<topic>`` takes the oldest record of
        a topic (its ``payload``; 404 while there is none). Records are JSON values of type
        ``io.statefun.playground/EgressRecord``, ``{"topic": ..., "payload": ...}``; a topic
        the egress does not declare fails the job. One sink task serves the port.

        Example:
            >>> import raystream as rs
            >>> from raystream.statefun_api import StatefulFunctions
            >>> sf = StatefulFunctionsJob(rs.StreamEnvironment(), StatefulFunctions())
            >>> sf.with_playground_egress(PlaygroundEgress(port=8091, topics=["greetings"])).egresses
            ['io.statefun.playground/egress']
        """
        if not isinstance(egress, PlaygroundEgress):
            raise GraphError(f"with_playground_egress(): expected a PlaygroundEgress, got {egress!r}")
        return self.with_egress(PLAYGROUND_EGRESS, egress, value_type=make_json_type(EGRESS_RECORD_TYPENAME))

    # ------------------------------------------------------------------ ingress
    def with_ingress(self, stream: Any, router: Router) -> StatefulFunctionsJob:
        """Feed ``stream`` into the functions: ``router(record)`` returns the message(s).

        Example:
            >>> import raystream as rs
            >>> from raystream.statefun_api import StatefulFunctions, message_builder
            >>> env = rs.StreamEnvironment()
            >>> sf = StatefulFunctionsJob(env, StatefulFunctions())
            >>> sf.with_ingress(env.from_collection([1, 2]),
            ...     lambda n: [message_builder("demo/counter", str(n), int_value=n)]).dispatcher.node.name
            'statefun'
        """
        if not callable(router):
            raise GraphError(f"with_ingress() needs a router function record -> message(s), got {router!r}")
        self._check_stream(stream, "with_ingress")
        # the router keeps the stream's parallelism, so it chains to it and keeps its order
        # (a node named and placed as the flat_map it once was: savepoints keep their operator ids)
        routed = stream.transform(f"{self.name}-router", functools.partial(IngressRouter, router)).set_parallelism(stream.node.parallelism)
        return self._connect(routed)

    def with_routed_ingress(
        self,
        stream: Any,
        targets: str | Sequence[str],
        value_type: Type[Any],
        *,
        id_field: Field = 0,
        value_field: Field | None = 1,
    ) -> StatefulFunctionsJob:
        """Feed ``stream`` into the functions without a router, as a StateFun routable
        ingress does (``targets:`` of a Kafka/Kinesis ingress in ``module.yaml``): every
        record becomes a message of ``value_type`` to each function type of ``targets``,
        with the id and the value taken from the record's fields.

        By default a record is an ``(id, value)`` pair (a Kafka record's key and value);
        ``id_field`` / ``value_field`` name a column (or dict key), a tuple index, or a
        function of the record; ``value_field=None`` sends the whole record. Ids must be
        non-empty strings and values valid for ``value_type`` (checked as
        ``message_builder`` checks them; a bad record fails the job naming it). The ids and
        values of a whole batch are taken at once (an Arrow column is read as a column), so
        this costs a fraction of a Python router per record.

        Example:
            >>> import raystream as rs
            >>> from raystream.statefun_api import StatefulFunctions, IntType
            >>> env = rs.StreamEnvironment()
            >>> sf = StatefulFunctionsJob(env, StatefulFunctions())
            >>> sf.with_routed_ingress(env.from_collection([("a", 1), ("b", 2)]),
            ...     "demo/counter", IntType).dispatcher.node.name
            'statefun'
        """
        self._check_stream(stream, "with_routed_ingress")
        targets = [targets] if isinstance(targets, str) else list(targets)
        RoutedIngress(targets, value_type, id_field, value_field)  # checks the arguments now
        # the targets are checked against the function types as the job runs them (functions
        # and endpoints may still be added): by execute() here, and by each ingress task's
        # open() for a job started with env.execute() (FunctionTypes is frozen when shipped)
        factory = functools.partial(
            RoutedIngress, targets, value_type, id_field, value_field, function_types=FunctionTypes(self._function_types)
        )
        routed = stream.transform(f"{self.name}-ingress", factory).set_parallelism(stream.node.parallelism)
        self._routed.append((f"{self.name + '-ingress'!r} (reading {stream.node.name!r})", targets))
        return self._connect(routed)

    def _check_stream(self, stream: Any, method: str) -> None:
        """Raise a GraphError unless ``stream`` is a DataStream of this job's environment."""
        env = getattr(stream, "env", None)
        if env is None or not callable(getattr(stream, "transform", None)):
            shown = repr(stream)
            shown = shown if len(shown) <= 80 else shown[:77] + "..."
            raise GraphError(
                f"{method}() needs a DataStream of the job's StreamEnvironment, got {type(stream).__name__} {shown}; "
                f"make one from the records with env.from_collection(records) (or another source of env)"
            )
        if env is not self.env:
            raise GraphError(
                f"{method}(): the stream belongs to another StreamEnvironment than this StatefulFunctionsJob's; "
                f"build it from the environment given to StatefulFunctionsJob(env, ...)"
            )

    def _connect(self, routed: Any) -> StatefulFunctionsJob:
        """Key the message records of ``routed`` by address into the dispatcher (made by
        the first ingress, with its feedback edge, discarding main output and egresses)."""
        # message records carry str typenames and ids (checked when built): their key groups
        # need not be computed to be checked when one dispatcher subtask owns them all
        selector = KeySelector(
            address_key, stable_keys=True, batch_key_groups=RoutedIngress.message_key_groups,
            record_key_groups=message_record_key_groups,
        )
        if self._dispatcher is None:
            factory = functools.partial(FunctionDispatcher, self.config)
            keyed = KeyedStream(self.env, routed.node, selector)
            dispatcher = keyed.transform(self.name, factory, keyed=True).uid(f"{self.name}-dispatcher")
            if self.parallelism is not None:
                dispatcher.set_parallelism(self.parallelism)
            dispatcher.close_feedback(FEEDBACK_TAG, selector)
            # the main output carries nothing; this sink lets a job without egress run
            dispatcher.sink_to(DiscardingSink(), name=f"{self.name}-discard").uid(f"{self.name}-discard").set_parallelism(1)
            self._dispatcher = dispatcher
            for typename, sink in self._deferred_sinks:
                self._sink_egress(typename, sink)
            self._deferred_sinks = []
        else:
            edge = StreamEdge(routed.node, KeyGroupPartitioner(selector), 0)
            self._dispatcher.node.inputs.insert(self._ingresses, edge)
        self._ingresses += 1
        return self

    # ------------------------------------------------------------------ egress
    def _declare(self, typename: str, value_type: Type[Any] | None) -> None:
        try:
            parse_typename(typename)
        except ValueError as exc:
            raise GraphError(f"egress names are StateFun typenames 'namespace/name': {exc}") from None
        if value_type is not None and not isinstance(value_type, Type):
            raise GraphError(f"egress {typename!r}: value_type must be a statefun_api Type, got {value_type!r}")
        egresses = self.config.egresses
        declared = egresses.get(typename)
        if declared is not None and value_type is not None and declared is not value_type:
            if declared.typename == value_type.typename:  # (each make_json_type/simple_type call makes a new Type)
                raise GraphError(
                    f"egress {typename!r} is already declared with another Type object of the same typename "
                    f"{value_type.typename!r} (each make_json_type(...) or simple_type(...) call makes a new one, "
                    f"which may decode differently); declare the egress with one Type object, e.g. a module-level "
                    f"constant, or leave value_type out of the later declarations"
                )
            raise GraphError(
                f"egress {typename!r} is already declared with value type {declared.typename!r}, not "
                f"{value_type.typename!r}; an egress has one value type"
            )
        if value_type is not None or typename not in egresses:
            egresses[typename] = value_type

    def with_egress(self, typename: str, sink: Sink | None = None, *, value_type: Type[Any] | None = None) -> StatefulFunctionsJob:
        """Declare the egress ``typename`` and optionally bind it to a raystream ``sink``.

        Records reaching the sink are the decoded values: with ``value_type``, values of
        that type (another type fails the job); without, built-in types (int, string...)
        decoded and other types as their ``TypedValue``. A function sending to an egress
        that was not declared fails the job.

        Example:
            >>> import raystream as rs
            >>> from raystream.statefun_api import StatefulFunctions, StringType
            >>> sf = StatefulFunctionsJob(rs.StreamEnvironment(), StatefulFunctions())
            >>> sf.with_egress("demo/out", value_type=StringType).egresses
            ['demo/out']
        """
        self._declare(typename, value_type)
        if sink is not None:
            if not isinstance(sink, Sink):
                raise GraphError(f"with_egress({typename!r}): sink must be an engine.connectors.Sink, got {sink!r}")
            if self._dispatcher is None:
                self._deferred_sinks.append((typename, sink))
            else:
                self._sink_egress(typename, sink)
        return self

    def _sink_egress(self, typename: str, sink: Sink) -> None:
        # (at the environment's parallelism, capped to the sink's max_parallelism: a
        # PlaygroundEgress, one HTTP server, runs one subtask)
        self.egress_stream(typename).sink_to(sink, name=f"egress {typename}")

    def egress_stream(self, typename: str, value_type: Type[Any] | None = None) -> Any:
        """The DataStream of egress ``typename`` (declared if needed), to transform or sink.

        Example:
            >>> import raystream as rs
            >>> from raystream.statefun_api import StatefulFunctions, message_builder
            >>> env = rs.StreamEnvironment()
            >>> sf = StatefulFunctionsJob(env, StatefulFunctions()).with_ingress(
            ...     env.from_collection(["a"]), lambda r: message_builder("demo/f", r, str_value=r))
            >>> sf.egress_stream("demo/out").map(str.upper).node.name
            'map'
        """
        self._declare(typename, value_type)
        return self.dispatcher.get_side_output(egress_tag(typename))

    # ------------------------------------------------------------------ running
    def execute(self, job_name: str | None = None) -> Any:
        """Run the environment's job to its end (see ``StreamEnvironment.execute``).

        Raises:
            GraphError: a routed ingress targets a function type that no function of the job
                takes (checked before the job is submitted; a job started with
                ``env.execute()`` fails as its ingress tasks open, before any record).
        """
        types = FunctionTypes(self._function_types)
        for ingress, targets in self._routed:
            check_routed_targets(ingress, targets, types)
        return self.env.execute(job_name or self.name)
