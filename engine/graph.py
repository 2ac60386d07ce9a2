"""Logical graph (transformations) and its translation into a chained job graph.

The DataStream API appends :class:`Transformation` nodes to a :class:`StreamGraph`.
:func:`build_job_graph` fuses chains of operators joined by forward edges with equal
parallelism into one :class:`JobVertex` (one Ray actor per parallel instance), as Flink's
operator chaining does, and resolves the partitioner of every remaining edge.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, NoReturn, Protocol

import cloudpickle

from .config import as_int
from .connectors import Sink, Source
from .errors import GraphError
from .observability import job_graph_html
from .operator import StreamOperator
from .partitioners import ForwardPartitioner, KeyGroupPartitioner, Partitioner, RebalancePartitioner
from .records import Batch
from .serde import find_unpicklable

if TYPE_CHECKING:
    import numpy as np

    from .config import JobConfig

__all__ = [
    "Transformation",
    "StreamEdge",
    "StreamGraph",
    "JobVertex",
    "JobEdge",
    "JobGraph",
    "TimestampAssignerLike",
    "build_job_graph",
    "check_max_parallelism",
    "resolve_at_submit",
    "ship",
]


class TimestampAssignerLike(Protocol):
    """Reads the event timestamps of a batch (``operators.time.TimestampAssigner``); the
    graph keeps it on the node of ``assign_timestamps_and_watermarks`` for downstream
    event-time operators to find."""

    def timestamps(self, batch: Batch) -> np.ndarray:
        """The int64 event timestamps of every record of ``batch``."""
        ...


@dataclass(eq=False)
class StreamEdge:
    """A logical edge: ``source`` feeds input ``input_index`` of the consumer."""

    source: "Transformation"
    partitioner: Partitioner | None  # None: forward if parallelism matches, else rebalance
    input_index: int = 0
    feedback: bool = False
    side_tag: str | None = None  # consume the source's side output with this tag


@dataclass(eq=False)
class Transformation:
    """One node of the logical graph: a source, an operator or a sink."""

    id: int
    name: str
    kind: str  # "source" | "operator" | "sink"
    parallelism: int
    operator_factory: Callable[[], StreamOperator] | None = None
    source: Source | None = None
    sink: Sink | None = None
    inputs: list[StreamEdge] = field(default_factory=list)
    uid: str | None = None
    chaining: bool = True
    keyed: bool = False
    num_inputs: int = 1
    schema_names: list[str] | None = None  # column names when known at build time
    timestamp_assigner: TimestampAssignerLike | None = None  # set by assign_timestamps_and_watermarks

    def stable_uid(self, graph: "StreamGraph") -> str:
        """The user uid, or one derived from the node's position in the graph (stable for
        an unchanged graph, like Flink's auto-generated operator ids)."""
        if self.uid:
            return self.uid
        digest = hashlib.sha1()
        chain = [self]
        while chain:
            node = chain.pop()
            digest.update(f"{node.id}:{node.kind}:{node.name}:{len(node.inputs)}|".encode())
            chain.extend(e.source for e in node.inputs if not e.feedback)
        return f"{self.name}-{digest.hexdigest()[:12]}"

    def __reduce__(self) -> NoReturn:
        raise TypeError("raystream graph objects live in the driver and cannot be pickled")


class StreamGraph:
    """The logical graph built by a StreamEnvironment."""

    def __init__(self) -> None:
        self.nodes: list[Transformation] = []

    def add(self, node: Transformation) -> Transformation:
        self.nodes.append(node)
        return node

    def next_id(self) -> int:
        return len(self.nodes)

    def consumers(self, node: Transformation) -> list[tuple[Transformation, StreamEdge]]:
        return [(n, e) for n in self.nodes for e in n.inputs if e.source is node]

    def __reduce__(self) -> NoReturn:
        raise TypeError("raystream graph objects live in the driver and cannot be pickled")


@dataclass
class JobEdge:
    """A network edge between two job vertices."""

    source_vertex: int
    target_vertex: int
    partitioner: Partitioner
    input_index: int
    feedback: bool = False
    side_tag: str | None = None


@dataclass
class JobVertex:
    """A chain of operators deployed as ``parallelism`` task actors."""

    id: int
    name: str
    parallelism: int
    chain: list[dict]  # per operator: name, uid, factory, kind, keyed
    source: Source | None = None
    inputs: list[JobEdge] = field(default_factory=list)
    outputs: list[JobEdge] = field(default_factory=list)
    #: the chain's operator factories as the driver pickled them (:func:`ship`),
    #: in chain order, while ``chain`` holds no factories: the job master forwards these bytes
    #: to the tasks unread, so user code and the data it captures are never unpickled and
    #: pickled again there
    operators: bytes | None = None


@dataclass
class JobGraph:
    """The deployable graph: vertices (chains) and network edges."""

    vertices: list[JobVertex]
    max_parallelism: int

    def vertex(self, vid: int) -> JobVertex:
        return self.vertices[vid]

    def describe(self) -> str:
        """A readable multi-line description of the chains and edges."""
        lines = []
        for v in self.vertices:
            ops = " -> ".join(op["name"] for op in v.chain)
            lines.append(f"[{v.id}] {v.name} (parallelism {v.parallelism}): {ops}")
            for e in v.outputs:
                tag = " (feedback)" if e.feedback else ""
                if e.side_tag:
                    tag += f" (side output {e.side_tag!r})"
                lines.append(f"    --{e.partitioner!r}--> [{e.target_vertex}]{tag}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        """Jupyter display: an SVG of the chains, their parallelism and the edge partitioners."""
        return job_graph_html(self)


def _resolve_partitioner(edge: StreamEdge, consumer: Transformation) -> Partitioner:
    if edge.partitioner is not None:
        if isinstance(edge.partitioner, ForwardPartitioner) and edge.source.parallelism != consumer.parallelism:
            raise GraphError(
                f"forward() from {edge.source.name!r} (parallelism {edge.source.parallelism}) to "
                f"{consumer.name!r} (parallelism {consumer.parallelism}) needs equal parallelism; "
                "use rebalance() instead"
            )
        return edge.partitioner
    if edge.source.parallelism == consumer.parallelism:
        return ForwardPartitioner()
    return RebalancePartitioner()


def _chainable(graph: StreamGraph, up: Transformation, down: Transformation) -> bool:
    if len(down.inputs) != 1 or down.kind == "source":
        return False
    edge = down.inputs[0]
    if edge.source is not up or edge.feedback or edge.side_tag is not None:
        return False
    if len(graph.consumers(up)) != 1:
        return False
    part = _resolve_partitioner(edge, down)
    return (
        isinstance(part, ForwardPartitioner)
        and up.parallelism == down.parallelism
        and up.chaining
        and down.chaining
        and not down.keyed
    )


def _connector(node: Transformation) -> Any:
    """``node``'s source or sink (None for an operator)."""
    return node.source if node.source is not None else node.sink


def connector_parallelism_limit(node: Transformation) -> int | None:
    """The most parallel subtasks ``node``'s source or sink can run (None: no limit); a
    :class:`GraphError` if its ``max_parallelism`` is not an int >= 1."""
    connector = _connector(node)
    given = getattr(connector, "max_parallelism", None)
    limit = as_int(given)
    if given is not None and (limit is None or limit < 1):
        raise GraphError(f"{node.name!r}: {type(connector).__name__}.max_parallelism must be an int >= 1 or None, "
                         f"got {given!r}")
    return limit


def check_node_parallelism(node: Transformation, parallelism: int) -> int:
    """``parallelism`` if ``node``'s source or sink can run that many subtasks, else a
    :class:`GraphError` naming the node and its limit.

    Example:
        >>> from raystream.engine.connectors import Sink
        >>> class OneServer(Sink):
        ...     max_parallelism = 1
        ...     def create_writer(self, ctx): ...
        >>> check_node_parallelism(Transformation(1, "serve", "sink", 1, sink=OneServer()), 2)
        Traceback (most recent call last):
        ...
        raystream.engine.errors.GraphError: 'serve': a OneServer runs at most 1 parallel subtask, not 2 (set_parallelism(1), or leave the default: it is capped to 1)
    """
    limit = connector_parallelism_limit(node)
    if limit is not None and parallelism > limit:
        raise GraphError(
            f"{node.name!r}: a {type(_connector(node)).__name__} runs at most {limit} parallel subtask{'s' if limit > 1 else ''}, "
            f"not {parallelism} (set_parallelism({limit}), or leave the default: it is capped to {limit})"
        )
    return parallelism


def check_max_parallelism(nodes: list[Transformation], max_parallelism: int) -> None:
    """A :class:`GraphError` naming every operator whose parallelism is above
    ``max_parallelism``, keyed or not, and why the limit binds each kind: a keyed operator's
    state is split into ``max_parallelism`` key groups and each of its subtasks owns at least
    one; every other subtask is given a key-group range too (its operator context's, which
    the restore of operator state holding per-key parts cuts by), so the limit binds every
    operator, as in Flink, where a vertex's parallelism is at most its max parallelism.

    Example:
        >>> check_max_parallelism([Transformation(1, "parse", "map", 6)], 4)
        Traceback (most recent call last):
        ...
        raystream.engine.errors.GraphError: operator 'parse' (parallelism 6) is above max_parallelism 4: every subtask of a job owns a range of its max_parallelism key groups, also a subtask without keyed state (as in Flink, where no operator runs above its max parallelism); set StreamEnvironment(max_parallelism=6) or more (a savepoint with keyed state restores only at the max_parallelism it was taken with), or lower the parallelism of 'parse'
    """
    above = [n for n in nodes if n.parallelism > max_parallelism]
    if not above:
        return
    names = ", ".join(f"{n.name!r} (parallelism {n.parallelism}{', keyed' if n.keyed else ''})" for n in above)
    keyed = any(n.keyed for n in above)
    why = ("a keyed operator's state is split into max_parallelism key groups, each subtask owning at least one, "
           "and every other subtask owns a range of them too" if keyed else
           "every subtask of a job owns a range of its max_parallelism key groups, also a subtask without keyed "
           "state")
    raise GraphError(
        f"operator{'s' if len(above) > 1 else ''} {names} {'are' if len(above) > 1 else 'is'} above max_parallelism "
        f"{max_parallelism}: {why} (as in Flink, where no operator runs above its max parallelism); set "
        f"StreamEnvironment(max_parallelism={max(n.parallelism for n in above)}) or more (a savepoint with keyed "
        "state restores only at the max_parallelism it was taken with), or lower the parallelism of "
        + ", ".join(repr(n.name) for n in above)
    )


def build_job_graph(graph: StreamGraph, max_parallelism: int) -> JobGraph:
    """Fuse chainable operators and resolve partitioners (see module docstring)."""
    if not graph.nodes:
        raise GraphError("the job has no operators: add a source and a sink")
    check_max_parallelism(graph.nodes, max_parallelism)
    for node in graph.nodes:
        check_node_parallelism(node, node.parallelism)
    sinks = [n for n in graph.nodes if n.kind == "sink"]
    if not sinks:
        raise GraphError("the job has no sink: end the stream with collect(), print(), write_parquet() or sink_to()")
    for n in graph.nodes:
        for e in n.inputs:
            if e.feedback and e.source is not n:
                raise GraphError(
                    f"feedback edge from {e.source.name!r} to {n.name!r}: a feedback edge must lead "
                    "from an operator back to its own input"
                )
            if e.feedback and e.side_tag is None:
                raise GraphError(
                    f"feedback edge of {n.name!r} carries its main output: every record would come back "
                    "forever; feed back a side output (close_feedback(tag, key) with output.emit_side(tag, ...))"
                )
    uids: dict[str, str] = {}
    for n in graph.nodes:
        uid = n.stable_uid(graph)
        if uid in uids:
            raise GraphError(f"uid {uid!r} is used by both {uids[uid]!r} and {n.name!r}; uids must be unique")
        uids[uid] = n.name

    head_of: dict[int, Transformation] = {}
    chains: list[list[Transformation]] = []
    for node in graph.nodes:  # nodes are in creation order, so inputs come first
        if node.inputs and len(node.inputs) == 1 and _chainable(graph, node.inputs[0].source, node):
            head = head_of[node.inputs[0].source.id]
            head_of[node.id] = head
            for chain in chains:
                if chain[0] is head:
                    chain.append(node)
                    break
        else:
            head_of[node.id] = node
            chains.append([node])

    vertex_of: dict[int, int] = {}
    vertices: list[JobVertex] = []
    for vid, chain in enumerate(chains):
        head = chain[0]
        ops = []
        for n in chain:
            if n.kind == "source":
                continue
            ops.append(
                {
                    "name": n.name,
                    "uid": n.stable_uid(graph),
                    "factory": n.operator_factory,
                    "kind": n.kind,
                    "keyed": n.keyed,
                    "num_inputs": n.num_inputs,
                    "sink": n.sink,
                }
            )
        name = " -> ".join(n.name for n in chain)
        vertex = JobVertex(vid, name, head.parallelism, ops, source=head.source)
        if head.kind == "source":
            vertex.chain.insert(0, {"name": head.name, "uid": head.stable_uid(graph), "kind": "source"})
        vertices.append(vertex)
        for n in chain:
            vertex_of[n.id] = vid

    for node in graph.nodes:
        if head_of[node.id] is not node:
            continue
        for edge in node.inputs:
            partitioner = _resolve_partitioner(edge, node)
            if isinstance(partitioner, KeyGroupPartitioner):
                partitioner = partitioner.feeding(node.name)
            job_edge = JobEdge(
                vertex_of[edge.source.id],
                vertex_of[node.id],
                partitioner,
                edge.input_index,
                edge.feedback,
                edge.side_tag,
            )
            vertices[job_edge.target_vertex].inputs.append(job_edge)
            vertices[job_edge.source_vertex].outputs.append(job_edge)
    return JobGraph(vertices, max_parallelism)


def ship(graph: JobGraph, config: JobConfig) -> bytes:
    """The job graph as bytes for the job master; an operator whose function cannot be
    pickled is named with the function and the captured variable at fault.

    Each vertex's operator factories (the user's functions and whatever they capture, e.g.
    a lookup table) are pickled here apart from the rest of the graph, one blob per vertex
    (:attr:`JobVertex.operators`): the job master plans and deploys without unpickling them
    and sends the same bytes to every subtask, so a large captured object is pickled once,
    by the driver, and unpickled only by the tasks. Sources and sinks stay in the graph (the
    master plans a source's splits and makes a sink's committer).

    A source that resolves something once per job (where ``"$"`` or "latest" is) does so here,
    on the driver, through :func:`resolve_at_submit`: every plan of the job, also a job
    master's that takes the job over before its first checkpoint, uses what it resolved.

    Raises:
        GraphError: something in the job cannot be sent to another process.
    """
    vertices = []
    for v in graph.vertices:
        try:
            operators = cloudpickle.dumps([op.get("factory") for op in v.chain])
        except Exception as exc:
            _raise_unshippable(graph, config, exc)
        chain = [{k: x for k, x in op.items() if k != "factory"} for op in v.chain]
        source = resolve_at_submit(v.source) if v.source is not None else None
        vertices.append(dataclasses.replace(v, chain=chain, operators=operators, source=source))
    try:
        return cloudpickle.dumps(dataclasses.replace(graph, vertices=vertices))
    except Exception as exc:
        _raise_unshippable(graph, config, exc)


def resolve_at_submit(source: Source) -> Source:
    """``source`` as the job is shipped: its :meth:`~engine.connectors.Source.resolve_at_submit`
    (e.g. :meth:`RedisStreamSource.resolve_at_submit` reads where ``"$"`` is; a
    ``WatermarkedSource`` forwards to the source it wraps), so that what a source resolves "at
    job start" is resolved once per submission, by the driver, and not again by each job master
    that plans the job. An object without the method (not a :class:`Source` subclass) is
    shipped as it is. The user's source object is never changed.

    Example:
        >>> from raystream.engine.connectors import Source
        >>> class Latest(Source):
        ...     def __init__(self, at=None): self.at = at
        ...     def resolve_at_submit(self): return Latest(at=42)
        ...     def create_splits(self, parallelism): return [self.at]
        ...     def create_reader(self, ctx): raise NotImplementedError
        >>> resolve_at_submit(Latest()).create_splits(1)
        [42]
    """
    resolve = getattr(source, "resolve_at_submit", None)
    if not callable(resolve):
        return source
    resolved: Source = resolve()
    return resolved


def _raise_unshippable(graph: JobGraph, config: JobConfig, exc: Exception) -> NoReturn:
    for v in graph.vertices:
        for op in v.chain:
            culprit = find_unpicklable(op, "the operator")
            if culprit is not None:
                raise GraphError(
                    f"job {config.name!r}: operator {op.get('name')!r} cannot be sent to the task executors: "
                    f"{culprit}; capture only picklable values (create locks, connections and clients in "
                    "open() or inside the function)"
                ) from None
    raise GraphError(f"job {config.name!r} cannot be sent to the task executors: {exc}") from exc
