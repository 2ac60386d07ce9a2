"""Remote function endpoints: which function types are served over HTTP, and where.

A StateFun deployment binds function types to HTTP endpoints that speak the
request-reply protocol (served by any official StateFun SDK, or by
:class:`~statefun_api.handler.RequestReplyHandler`). raystream takes the same
declarations, in Python (:func:`remote_endpoint`) or from a StateFun ``module.yaml``
(:func:`load_module_yaml`), and its dispatcher calls those functions
(see :mod:`statefun_api.remote`).

``functions`` is an exact typename (``"com.example/greeter"``) or a namespace pattern
(``"com.example/*"``); an exact match wins over a pattern. ``url_path_template`` may hold
``{function.name}`` (the name part of the typename), as in StateFun, and
``{function.namespace}``, both percent-encoded (StateFun puts the name in as it is, so a
``#`` or ``?`` in it cuts the path).

Example:
    >>> from datetime import timedelta
    >>> ep = remote_endpoint("com.example/*", "http://localhost:8000/{function.name}",
    ...                      call_timeout=timedelta(seconds=30))
    >>> ep.matches("com.example/greeter"), ep.url_for("com.example/greeter")
    (True, 'http://localhost:8000/greeter')
    >>> ep.call_timeout_s
    30.0
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import quote, urlsplit

from raystream.engine.errors import ConfigError
from raystream.statefun_api.address import parse_typename

__all__ = [
    "RemoteEndpoint",
    "remote_endpoint",
    "load_module_yaml",
    "parse_module_yaml",
    "parse_duration",
    "resolve_endpoint",
    "ENDPOINT_KINDS",
    "INGRESS_KINDS",
    "IngressTopic",
    "parse_module_ingresses",
    "module_documents",
    "TRANSPORT_ASYNC",
    "TRANSPORT_OKHTTP",
    "DEFAULT_MAX_RESPONSE_BYTES",
]

log = logging.getLogger(__name__)

#: the ``kind`` values of a module.yaml document that declare an HTTP endpoint
ENDPOINT_KINDS = ("io.statefun.endpoints.v2/http", "io.statefun.endpoints.v1/http")
#: StateFun's asynchronous (Netty) transport, the default of ``io.statefun.endpoints.v2/http``
TRANSPORT_ASYNC = "io.statefun.transports.v1/async"
#: StateFun's OkHttp transport (the only one of ``io.statefun.endpoints.v1/http``)
TRANSPORT_OKHTTP = "io.statefun.transports.v1/okhttp"
#: the default cap on a reply's size (StateFun's async transport caps at 32 MiB)
DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
_UNITS_MS = {
    "": 1,
    "ms": 1,
    "milli": 1,
    "millis": 1,
    "millisecond": 1,
    "milliseconds": 1,
    "s": 1000,
    "sec": 1000,
    "secs": 1000,
    "second": 1000,
    "seconds": 1000,
    "m": 60_000,
    "min": 60_000,
    "mins": 60_000,
    "minute": 60_000,
    "minutes": 60_000,
    "h": 3_600_000,
    "hour": 3_600_000,
    "hours": 3_600_000,
    "d": 86_400_000,
    "day": 86_400_000,
    "days": 86_400_000,
}


def parse_duration(value: str | int | float | timedelta, what: str = "duration") -> float:
    """A duration in seconds, from a timedelta, a number of seconds, or a Flink-style string.

    Strings follow Flink's ``TimeUtils.parseDuration``: ``"500ms"``, ``"10s"``, ``"1min"``,
    ``"2 minutes"``, ``"1h"``; a bare number in a string is milliseconds.

    Example:
        >>> parse_duration("1min"), parse_duration("250 ms"), parse_duration(timedelta(seconds=2))
        (60.0, 0.25, 2.0)
    """
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool):
        raise ConfigError(f"{what}: expected a duration such as '10s' or '1min', got {value!r}")
    elif isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        m = _DURATION.match(value)
        unit = m.group(2).lower() if m else None
        if m is None or unit not in _UNITS_MS:
            raise ConfigError(
                f"{what}: cannot parse duration {value!r}; use a number and a unit "
                f"(ms, s, min, h, d), e.g. '10s' or '1min'"
            )
        seconds = float(m.group(1)) * _UNITS_MS[unit] / 1000.0
    else:
        raise ConfigError(f"{what}: expected a duration such as '10s' or '1min', got {value!r}")
    if seconds <= 0:
        raise ConfigError(f"{what}: a duration must be positive, got {value!r}")
    return seconds


def _yaml_duration(value: Any, what: str) -> float:
    """A duration of a module.yaml, in seconds, read as StateFun reads it: the field's text
    through Flink's ``TimeUtils.parseDuration``, so a bare number (``call: 120000``, a YAML
    int) is milliseconds, as the same number in quotes is (``parse_duration`` takes a Python
    number as seconds)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    return parse_duration(value, what)


def _check_pattern(functions: str, what: str) -> None:
    if not isinstance(functions, str) or not functions:
        raise ConfigError(f"{what}: 'functions' must be a typename 'namespace/name' or 'namespace/*', got {functions!r}")
    try:
        namespace, name = parse_typename(functions)
    except ValueError as exc:
        raise ConfigError(f"{what}: 'functions' {functions!r} is not 'namespace/name' or 'namespace/*': {exc}") from None
    if "*" in namespace or ("*" in name and name != "*"):
        raise ConfigError(
            f"{what}: 'functions' {functions!r}: only a whole name may be a wildcard ('namespace/*')"
        )


def _check_url(url: str, what: str) -> None:
    """Refuse a URL template whose host or port no request could use (as it is declared,
    not when the first message is sent: that failed the running job, restart after restart)."""
    parts = urlsplit(url.replace("{function.name}", "f").replace("{function.namespace}", "n"))
    try:
        parts.port  # noqa: B018 - (urlsplit checks the port when it is read)
    except ValueError as exc:
        raise ConfigError(f"{what}: url_path_template {url!r} has an invalid port: {exc}") from None
    host = parts.hostname
    if not host:
        raise ConfigError(f"{what}: url_path_template {url!r} names no host")
    if not host.isascii():
        try:
            hint = f"; write it as {host.encode('idna').decode('ascii')!r}"
        except UnicodeError:
            hint = ""
        raise ConfigError(
            f"{what}: url_path_template {url!r}: the host name {host!r} is not ASCII (an internationalized name "
            f"goes in its IDNA form{hint})"
        )


@dataclass(frozen=True)
class RemoteEndpoint:
    """Function types served over HTTP by a StateFun request-reply endpoint.

    Build it with :func:`remote_endpoint` (Python) or :func:`load_module_yaml`.

    Attributes:
        functions: an exact typename or ``"namespace/*"``.
        url_path_template: the URL to POST to; ``{function.name}`` and
            ``{function.namespace}`` are substituted.
        max_num_batch_requests: most messages in one request to an address; once that
            many are queued behind an in-flight request, the dispatcher back-pressures.
        call_timeout_s: the whole call, retries and backoff included, measured from
            sending the first attempt (never the wait for a free request slot); StateFun's
            ``timeouts.call`` / ``transport.call``.
        connect_timeout_s: establishing a connection (``timeouts.connect``).
        read_timeout_s: between two reads of the response (``timeouts.read``); ``None``:
            only the call timeout bounds the wait (StateFun's async transport).
        write_timeout_s: StateFun's ``timeouts.write``; raystream bounds the upload by the
            attempt's share of the call timeout and keeps this for reference (``None``: unset).
        max_retries: retries after the first attempt (``None``: until the call timeout).
        backoff_initial_s / backoff_max_s: exponential backoff between attempts.
        max_response_bytes: the largest reply accepted; a longer one fails the call while
            it is being read (``transport.payload_max_bytes``).
        max_concurrent_requests: requests in flight to this endpoint per dispatcher subtask
            (``transport.pool_size``); ``None``: only the subtask's own limit
            (``max_concurrent_requests`` of the job) applies.
        pool_ttl_s: how long an idle pooled connection is kept (``transport.pool_ttl``).
        transport: StateFun's transport type (:data:`TRANSPORT_ASYNC` or
            :data:`TRANSPORT_OKHTTP`); raystream's own HTTP/1.1 client serves both.
        source: where it was declared (a module.yaml path, or ``"python"``), for errors.
    """

    functions: str
    url_path_template: str
    max_num_batch_requests: int = 1000
    call_timeout_s: float = 60.0
    connect_timeout_s: float = 10.0
    read_timeout_s: float | None = 10.0
    write_timeout_s: float | None = 10.0
    max_retries: int | None = None
    backoff_initial_s: float = 0.05
    backoff_max_s: float = 2.0
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    max_concurrent_requests: int | None = None
    pool_ttl_s: float = 15.0
    transport: str = TRANSPORT_ASYNC
    source: str = "python"

    def __post_init__(self) -> None:
        what = f"remote endpoint {self.functions!r} ({self.source})"
        _check_pattern(self.functions, what)
        url = self.url_path_template
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ConfigError(f"{what}: url_path_template must be an http(s) URL, got {url!r}")
        _check_url(url, what)
        n = self.max_num_batch_requests
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"{what}: max_num_batch_requests must be a positive int, got {n!r}")
        r = self.max_retries
        if r is not None and (isinstance(r, bool) or not isinstance(r, int) or r < 0):
            raise ConfigError(f"{what}: max_retries must be an int >= 0 or None, got {r!r}")
        for name in ("call_timeout_s", "connect_timeout_s", "read_timeout_s", "write_timeout_s", "backoff_initial_s", "backoff_max_s", "pool_ttl_s"):
            v = getattr(self, name)
            if v is None and name in ("read_timeout_s", "write_timeout_s"):
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
                raise ConfigError(f"{what}: {name} must be a positive number of seconds, got {v!r}")
        b = self.max_response_bytes
        if isinstance(b, bool) or not isinstance(b, int) or b < 1:
            raise ConfigError(f"{what}: max_response_bytes must be a positive int, got {b!r}")
        c = self.max_concurrent_requests
        if c is not None and (isinstance(c, bool) or not isinstance(c, int) or c < 1):
            raise ConfigError(f"{what}: max_concurrent_requests must be a positive int or None, got {c!r}")
        if self.transport not in (TRANSPORT_ASYNC, TRANSPORT_OKHTTP):
            raise ConfigError(
                f"{what}: unsupported transport {self.transport!r}; use {TRANSPORT_ASYNC!r} or {TRANSPORT_OKHTTP!r}"
            )

    @property
    def is_pattern(self) -> bool:
        """True for a ``namespace/*`` pattern."""
        return self.functions.endswith("/*")

    def matches(self, typename: str) -> bool:
        """Whether this endpoint serves function type ``typename``."""
        if self.is_pattern:
            return typename.rpartition("/")[0] == self.functions[:-2]
        return typename == self.functions

    def url_for(self, typename: str) -> str:
        """The URL of function type ``typename``: the template with the name (and namespace)
        percent-encoded (UTF-8; the namespace keeps its ``/``), so that a name holding ``#``,
        ``?``, ``%``, a space or ``&`` reaches the server as it is, not cut at a fragment or
        query, and never as another function's path.

        Example:
            >>> remote_endpoint("a/*", "http://h/fn/{function.name}").url_for("a/h#1")
            'http://h/fn/h%231'
        """
        namespace, _, name = typename.rpartition("/")
        return self.url_path_template.replace("{function.name}", quote(name, safe="")).replace(
            "{function.namespace}", quote(namespace, safe="/")
        )

    def describe(self) -> str:
        """A short description for error messages."""
        return f"endpoint {self.functions!r} -> {self.url_path_template!r} ({self.source})"


def remote_endpoint(
    functions: str,
    url_path_template: str,
    *,
    max_num_batch_requests: int = 1000,
    call_timeout: timedelta | float | str = timedelta(minutes=1),
    connect_timeout: timedelta | float | str = timedelta(seconds=10),
    read_timeout: timedelta | float | str | None = timedelta(seconds=10),
    write_timeout: timedelta | float | str | None = timedelta(seconds=10),
    max_retries: int | None = None,
    backoff_initial: timedelta | float | str = timedelta(milliseconds=50),
    backoff_max: timedelta | float | str = timedelta(seconds=2),
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    max_concurrent_requests: int | None = None,
) -> RemoteEndpoint:
    """Declare that function types ``functions`` are served at ``url_path_template``.

    Durations are timedeltas, seconds, or strings such as ``"10s"``; ``read_timeout=None``
    leaves the wait for the reply bounded by the call timeout only. Register the result
    with :meth:`StatefulFunctionsJob.with_endpoint
    <statefun_api.job.StatefulFunctionsJob.with_endpoint>`.

    Example:
        >>> ep = remote_endpoint("shop/*", "http://cart-service:8000/statefun",
        ...                      max_num_batch_requests=500, call_timeout="2min", max_retries=10)
        >>> ep.max_num_batch_requests, ep.call_timeout_s, ep.url_for("shop/cart")
        (500, 120.0, 'http://cart-service:8000/statefun')
    """
    what = f"remote_endpoint({functions!r})"
    return RemoteEndpoint(
        functions=functions,
        url_path_template=url_path_template,
        max_num_batch_requests=max_num_batch_requests,
        call_timeout_s=parse_duration(call_timeout, f"{what}: call_timeout"),
        connect_timeout_s=parse_duration(connect_timeout, f"{what}: connect_timeout"),
        read_timeout_s=None if read_timeout is None else parse_duration(read_timeout, f"{what}: read_timeout"),
        write_timeout_s=None if write_timeout is None else parse_duration(write_timeout, f"{what}: write_timeout"),
        max_retries=max_retries,
        backoff_initial_s=parse_duration(backoff_initial, f"{what}: backoff_initial"),
        backoff_max_s=parse_duration(backoff_max, f"{what}: backoff_max"),
        max_response_bytes=max_response_bytes,
        max_concurrent_requests=max_concurrent_requests,
    )


# -- module.yaml --------------------------------------------------------------------------

_SPEC_FIELDS = {"functions", "urlPathTemplate", "maxNumBatchRequests", "timeouts", "transport", "maxRetries", "backoff"}
_TIMEOUT_FIELDS = {"call": "call_timeout_s", "connect": "connect_timeout_s", "read": "read_timeout_s", "write": "write_timeout_s"}
_BACKOFF_FIELDS = {"initial": "backoff_initial_s", "max": "backoff_max_s"}
# the properties of each StateFun transport (``spec.transport``), besides ``type``:
# durations map to endpoint attributes, the rest is handled by _transport_kwargs
_TRANSPORT_FIELDS = {
    TRANSPORT_ASYNC: {"call", "connect", "timeouts", "pool_ttl", "pool_size", "payload_max_bytes"},
    TRANSPORT_OKHTTP: {"timeouts"},
}
# StateFun's defaults: v1 endpoints and the okhttp transport (DefaultHttpRequestReplyClientSpec)
# time out the call after 1 min and connect/read/write after 10 s; the async transport, the
# default of v2 endpoints (NettyRequestReplySpec), after 2 min (call) and 20 s (connect)
# and has no read or write timeout of its own
_TRANSPORT_DEFAULTS: dict[str, dict[str, Any]] = {
    TRANSPORT_OKHTTP: {"call_timeout_s": 60.0, "connect_timeout_s": 10.0, "read_timeout_s": 10.0, "write_timeout_s": 10.0},
    TRANSPORT_ASYNC: {"call_timeout_s": 120.0, "connect_timeout_s": 20.0, "read_timeout_s": None, "write_timeout_s": None},
}


def _yaml() -> Any:
    try:
        import yaml
    except ImportError as exc:  # pragma: no cover - Ray depends on PyYAML
        raise ImportError("reading a StateFun module.yaml needs PyYAML: `pip install pyyaml`") from exc
    return yaml


def _refuse_unknown_fields(mapping: Mapping[Any, Any], known: set[str], field: str, where: str) -> None:
    """Fail naming the keys of ``mapping`` (the value of ``field``) that are not in ``known``."""
    unknown = sorted(set(mapping) - known, key=str)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {unknown} in '{field}' (known: {', '.join(sorted(known))})")


def _positive_int(value: Any, field: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{where}: '{field}' must be a positive integer, got {value!r}")
    return value


def _timeouts(values: Any, field: str, where: str) -> dict[str, float]:
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where}: '{field}' must be a mapping, got {values!r}")
    out = {}
    for key, value in values.items():
        if key not in _TIMEOUT_FIELDS:
            raise ConfigError(f"{where}: unknown field '{field}.{key}' (known: {sorted(_TIMEOUT_FIELDS)})")
        out[_TIMEOUT_FIELDS[key]] = _yaml_duration(value, f"{where}: '{field}.{key}'")
    return out


def _transport_kwargs(transport: Any, where: str) -> tuple[str, dict[str, Any]]:
    """The transport type and the endpoint attributes set by ``spec.transport``."""
    if not isinstance(transport, Mapping):
        raise ConfigError(f"{where}: 'spec.transport' must be a mapping, got {transport!r}")
    kind = transport.get("type", TRANSPORT_ASYNC)
    if kind not in _TRANSPORT_FIELDS:
        raise ConfigError(
            f"{where}: unsupported 'spec.transport.type' {kind!r}; StateFun's transports are "
            f"{TRANSPORT_ASYNC!r} (the default) and {TRANSPORT_OKHTTP!r}"
        )
    known = _TRANSPORT_FIELDS[kind]
    unknown = sorted(set(transport) - known - {"type"})
    if unknown:
        raise ConfigError(
            f"{where}: unknown field(s) {unknown} in 'spec.transport' of type {kind!r} "
            f"(known: {sorted(known | {'type'})})"
        )
    out: dict[str, Any] = dict(_TRANSPORT_DEFAULTS[kind])
    for key in ("call", "connect"):  # the async transport's own keys; 'timeouts' wins, as in StateFun
        if key in transport:
            out[_TIMEOUT_FIELDS[key]] = _yaml_duration(transport[key], f"{where}: 'spec.transport.{key}'")
    if "timeouts" in transport:
        out.update(_timeouts(transport["timeouts"], "spec.transport.timeouts", where))
    if "pool_ttl" in transport:
        out["pool_ttl_s"] = _yaml_duration(transport["pool_ttl"], f"{where}: 'spec.transport.pool_ttl'")
    if "pool_size" in transport:
        out["max_concurrent_requests"] = _positive_int(transport["pool_size"], "spec.transport.pool_size", where)
    if "payload_max_bytes" in transport:
        out["max_response_bytes"] = _positive_int(transport["payload_max_bytes"], "spec.transport.payload_max_bytes", where)
    return kind, out


def _endpoint_from_spec(spec: Any, where: str, kind: str = ENDPOINT_KINDS[0]) -> RemoteEndpoint:
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{where}: 'spec' must be a mapping, got {spec!r}")
    unknown = sorted(set(spec) - _SPEC_FIELDS)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {unknown} in 'spec' (known: {sorted(_SPEC_FIELDS)})")
    for required in ("functions", "urlPathTemplate"):
        if required not in spec:
            raise ConfigError(f"{where}: 'spec.{required}' is missing")
    kwargs: dict[str, Any] = {"functions": spec["functions"], "url_path_template": spec["urlPathTemplate"], "source": where}
    # v1 endpoints speak through OkHttp; v2 through the transport they name (async by default)
    transport = TRANSPORT_OKHTTP if kind == "io.statefun.endpoints.v1/http" else TRANSPORT_ASYNC
    kwargs.update(_TRANSPORT_DEFAULTS[transport])
    if "maxNumBatchRequests" in spec:
        kwargs["max_num_batch_requests"] = _positive_int(spec["maxNumBatchRequests"], "spec.maxNumBatchRequests", where)
    if "maxRetries" in spec:
        r = spec["maxRetries"]
        if isinstance(r, bool) or not isinstance(r, int) or r < 0:
            raise ConfigError(f"{where}: 'spec.maxRetries' must be an integer >= 0, got {r!r}")
        kwargs["max_retries"] = r
    if "timeouts" in spec:  # v1 syntax, also accepted in v2 documents
        kwargs.update(_timeouts(spec["timeouts"], "spec.timeouts", where))
    if "transport" in spec:
        if kind == "io.statefun.endpoints.v1/http":
            raise ConfigError(f"{where}: 'spec.transport' needs kind 'io.statefun.endpoints.v2/http', not {kind!r}")
        transport, transport_kwargs = _transport_kwargs(spec["transport"], where)
        kwargs.update(transport_kwargs)
        if "timeouts" in spec:  # both given: spec.timeouts keeps what it sets
            kwargs.update(_timeouts(spec["timeouts"], "spec.timeouts", where))
    kwargs["transport"] = transport
    backoff = spec.get("backoff") or {}
    if not isinstance(backoff, Mapping):
        raise ConfigError(f"{where}: 'spec.backoff' must be a mapping, got {backoff!r}")
    for key, value in backoff.items():
        if key not in _BACKOFF_FIELDS:
            raise ConfigError(f"{where}: unknown field 'spec.backoff.{key}' (known: {sorted(_BACKOFF_FIELDS)})")
        kwargs[_BACKOFF_FIELDS[key]] = _yaml_duration(value, f"{where}: 'spec.backoff.{key}'")
    if not isinstance(spec["urlPathTemplate"], str) or not spec["urlPathTemplate"].startswith(("http://", "https://")):
        raise ConfigError(f"{where}: 'spec.urlPathTemplate' must be an http(s) URL, got {spec['urlPathTemplate']!r}")
    if not isinstance(spec["functions"], str):
        raise ConfigError(f"{where}: 'spec.functions' must be a typename or 'namespace/*', got {spec['functions']!r}")
    try:
        return RemoteEndpoint(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


#: the kinds of a legacy module's components and the kinds they stand for (StateFun's
#: ``LegacyRemoteModuleV30``); any other kind is taken as it is
_LEGACY_KINDS = {
    "http": "io.statefun.endpoints.v1/http",
    "io.statefun.kafka/ingress": "io.statefun.kafka.v1/ingress",
    "io.statefun.kafka/egress": "io.statefun.kafka.v1/egress",
    "io.statefun.kinesis/ingress": "io.statefun.kinesis.v1/ingress",
    "io.statefun.kinesis/egress": "io.statefun.kinesis.v1/egress",
}
#: the lists of a legacy module's ``module.spec``: (list, component key, the meta field naming its kind)
_LEGACY_COMPONENTS = (("endpoints", "endpoint", "kind"), ("ingresses", "ingress", "type"), ("egresses", "egress", "type"))


def module_documents(text: str, source: str = "<module.yaml>") -> list[tuple[str, Any]]:
    """The documents of the text of a StateFun ``module.yaml``, as ``(place, document)``:
    ``("document <n>", {"kind": ..., "spec": ...})`` for each document of the stream (not
    checked here), or, for StateFun's legacy single-document format (``version: "3.0"``),
    one ``{"kind": ..., "spec": ...}`` per component it declares, the place naming it
    (``"module.spec.endpoints[0]"``).

    A legacy module is a file of one document with a ``version`` field, as StateFun's
    ``JsonServiceLoader`` tells them apart: ``module.meta.type`` is ``remote`` and
    ``module.spec`` lists ``endpoints`` (``{endpoint: {meta: {kind}, spec}}``),
    ``ingresses`` and ``egresses`` (``{ingress: {meta: {type, id}, spec}}``). As in
    ``LegacyRemoteModuleV30``, the kind ``http`` is ``io.statefun.endpoints.v1/http``,
    ``io.statefun.kafka/ingress`` is ``io.statefun.kafka.v1/ingress`` (Kinesis and
    egresses likewise; other kinds are taken as they are) and an ingress's or egress's
    ``meta.id`` becomes its spec's ``id``. Format versions other than ``"3.0"`` (``1.0`` and
    ``2.0`` reached their end of life in StateFun 3), other module types, unknown fields and
    components of a kind StateFun 3 has no binder for fail, naming the field and its place.

    Example:
        >>> [(place, doc["kind"]) for place, doc in module_documents('''
        ... version: "3.0"
        ... module:
        ...   meta: {type: remote}
        ...   spec:
        ...     endpoints:
        ...       - endpoint:
        ...           meta: {kind: http}
        ...           spec: {functions: com.example/*, urlPathTemplate: "http://functions:8000/statefun"}
        ... ''')]
        [('module.spec.endpoints[0]', 'io.statefun.endpoints.v1/http')]
    """
    yaml = _yaml()
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    if len(documents) == 1 and isinstance(documents[0], Mapping) and "version" in documents[0]:
        return _legacy_documents(documents[0], source)
    for number, doc in enumerate(documents, 1):
        if isinstance(doc, Mapping) and "kind" not in doc and ("version" in doc or "module" in doc):
            raise ConfigError(
                f"{source} (document {number}): a legacy module (version: \"3.0\") must be the only document "
                f"of its file (the file has {len(documents)}); write each of its components as a "
                f"'kind'/'spec' document instead"
            )
    return [(f"document {number}", doc) for number, doc in enumerate(documents, 1)]


def _legacy_documents(root: Mapping[str, Any], source: str) -> list[tuple[str, Any]]:
    """The ``kind``/``spec`` documents of a legacy ``version: "3.0"`` module (:func:`module_documents`)."""
    unknown = sorted(set(root) - {"version", "module"}, key=str)
    if unknown:
        raise ConfigError(f"{source}: unknown top-level field(s) {unknown} of a legacy module (known: module, version)")
    version = root["version"]
    if not isinstance(version, str):
        raise ConfigError(f"{source}: 'version' must be a string such as \"3.0\" (quoted in YAML, as StateFun reads it), got {version!r}")
    if version in ("1.0", "2.0"):
        raise ConfigError(
            f"{source}: format version {version!r} of module.yaml reached its end of life in StateFun 3 (and is "
            f"not read); rewrite the file as 'kind'/'spec' documents (or as a legacy module of 'version: \"3.0\"')"
        )
    if version != "3.0":
        raise ConfigError(
            f"{source}: format version {version!r} is not a legacy module format: StateFun reads only '3.0' as a "
            f"single-document module; write 'kind'/'spec' documents, without 'version'"
        )
    module = root.get("module")
    if not isinstance(module, Mapping):
        raise ConfigError(f"{source}: 'module' must be a mapping with 'meta' and 'spec', got {module!r}")
    _refuse_unknown_fields(module, {"meta", "spec"}, "module", source)
    meta = module.get("meta")
    module_type = meta.get("type") if isinstance(meta, Mapping) else None
    if module_type is None:
        raise ConfigError(f"{source}: 'module.meta.type' is missing (a legacy module is of type 'remote')")
    _refuse_unknown_fields(meta, {"type"}, "module.meta", source)  # type: ignore[arg-type]  # (a mapping: it has a type)
    if not isinstance(module_type, str) or module_type.lower() != "remote":
        raise ConfigError(f"{source}: unsupported module type {module_type!r} at 'module.meta.type'; StateFun's one type is 'remote'")
    spec = module.get("spec")
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{source}: 'module.spec' must be a mapping of endpoints, ingresses and egresses, got {spec!r}")
    _refuse_unknown_fields(spec, {field for field, _key, _kind in _LEGACY_COMPONENTS}, "module.spec", source)
    out: list[tuple[str, Any]] = []
    for field, key, kind_field in _LEGACY_COMPONENTS:
        entries = spec.get(field)
        if entries is None:
            continue
        if not isinstance(entries, list):
            raise ConfigError(f"{source}: 'module.spec.{field}' must be a list, got {entries!r}")
        for i, entry in enumerate(entries):
            place = f"module.spec.{field}[{i}]"
            out.append((place, _legacy_component(entry, key, kind_field, f"{source} ({place})")))
    return out


def _legacy_component(entry: Any, key: str, kind_field: str, where: str) -> dict[str, Any]:
    """One ``{endpoint|ingress|egress: {meta, spec}}`` of a legacy module as a ``kind``/``spec`` document."""
    component = entry.get(key) if isinstance(entry, Mapping) and len(entry) == 1 else None
    if not isinstance(component, Mapping):
        raise ConfigError(f"{where}: expected a mapping with '{key}' (holding 'meta' and 'spec'), got {entry!r}")
    _refuse_unknown_fields(component, {"meta", "spec"}, key, where)
    meta = component.get("meta")
    known = {kind_field} if key == "endpoint" else {kind_field, "id"}
    if not isinstance(meta, Mapping):
        raise ConfigError(f"{where}: '{key}.meta' must be a mapping with {sorted(known)}, got {meta!r}")
    _refuse_unknown_fields(meta, known, f"{key}.meta", where)
    legacy_kind = meta.get(kind_field)
    if not isinstance(legacy_kind, str):
        raise ConfigError(f"{where}: '{key}.meta.{kind_field}' must be a string, got {legacy_kind!r}")
    kind = _LEGACY_KINDS.get(legacy_kind, legacy_kind)
    spec = component.get("spec")
    if key == "endpoint":
        if kind not in ENDPOINT_KINDS:
            raise ConfigError(
                f"{where}: unsupported endpoint kind {legacy_kind!r} at 'endpoint.meta.kind'; a legacy module's "
                f"endpoints are of kind 'http' ({' or '.join(repr(k) for k in ENDPOINT_KINDS)} are read too)"
            )
        return {"kind": kind, "spec": spec}
    if not kind.endswith(f"/{key}"):
        legacy = [name for name in _LEGACY_KINDS if name.endswith(f"/{key}")]
        raise ConfigError(
            f"{where}: unsupported {key} type {legacy_kind!r} at '{key}.meta.type'; StateFun 3 binds "
            f"{' and '.join(repr(name) for name in legacy)} (or a current kind such as "
            f"{_LEGACY_KINDS[legacy[0]]!r}), not the {key} types of StateFun 2"
        )
    ident = _typename_field(meta.get("id"), f"{where}: '{key}.meta.id'")
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{where}: '{key}.spec' must be a mapping, got {spec!r}")
    return {"kind": kind, "spec": {**spec, "id": ident}}


def parse_module_yaml(text: str, source: str = "<module.yaml>") -> list[RemoteEndpoint]:
    """The HTTP endpoints declared in the text of a StateFun ``module.yaml``.

    The file is a stream of YAML documents (``---``), each ``{kind: ..., spec: ...}``, or
    StateFun's legacy single-document module (``version: "3.0"``), read as the documents it
    stands for (:func:`module_documents`). Documents of kind ``io.statefun.endpoints.v2/http`` (or ``.v1/http``) become
    endpoints; the playground's HTTP ingress and egress documents are left to
    :meth:`StatefulFunctionsJob.with_module_yaml`, other ingress and egress documents
    (``.../ingress``, ``.../egress``) are skipped with a log message, since raystream binds
    them in Python; any other kind is an error.

    An endpoint's ``spec`` takes StateFun's fields: ``functions``, ``urlPathTemplate``,
    ``maxNumBatchRequests``, ``transport`` (``type: io.statefun.transports.v1/async``,
    the default, with ``call``, ``connect``, ``timeouts``, ``pool_ttl``, ``pool_size``,
    ``payload_max_bytes``; or ``io.statefun.transports.v1/okhttp`` with ``timeouts``) and
    the v1 ``timeouts`` (``call``, ``connect``, ``read``, ``write``); raystream adds
    ``maxRetries`` and ``backoff`` (``initial``, ``max``). Defaults are StateFun's: the
    async transport gives up after 2 min (call) and 20 s (connect), v1 endpoints and the
    okhttp transport after 1 min and 10 s. Any other field fails, naming it and the file.

    Example:
        >>> eps = parse_module_yaml('''
        ... kind: io.statefun.endpoints.v2/http
        ... spec:
        ...   functions: com.example/*
        ...   urlPathTemplate: http://functions:8000/{function.name}
        ...   maxNumBatchRequests: 500
        ...   transport:
        ...     type: io.statefun.transports.v1/async
        ...     call: 3min
        ...     pool_size: 64
        ...     payload_max_bytes: 1048576
        ... ''')
        >>> ep = eps[0]
        >>> ep.functions, ep.max_num_batch_requests, ep.call_timeout_s, ep.connect_timeout_s
        ('com.example/*', 500, 180.0, 20.0)
        >>> ep.max_concurrent_requests, ep.max_response_bytes
        (64, 1048576)
    """
    endpoints = []
    for place, doc in module_documents(text, source):
        where = f"{source} ({place})"
        if not isinstance(doc, Mapping) or "kind" not in doc:
            raise ConfigError(f"{where}: expected a mapping with 'kind' and 'spec', got {doc!r}")
        unknown = sorted(set(doc) - {"kind", "spec"})
        if unknown:
            raise ConfigError(f"{where}: unknown top-level field(s) {unknown}; expected 'kind' and 'spec'")
        kind = doc["kind"]
        if kind in ENDPOINT_KINDS:
            endpoints.append(_endpoint_from_spec(doc.get("spec"), where, kind))
        elif isinstance(kind, str) and kind.startswith("io.statefun.playground.v1/"):
            pass  # HTTP ingress/egress servers: StatefulFunctionsJob.with_module_yaml starts them
        elif isinstance(kind, str) and kind.endswith(("/ingress", "/egress")):
            log.info("%s: skipping %r; bind ingresses and egresses with StatefulFunctionsJob", where, kind)
        else:
            raise ConfigError(
                f"{where}: unsupported 'kind' {kind!r}; raystream reads endpoints of kind "
                f"{' or '.join(repr(k) for k in ENDPOINT_KINDS)}"
            )
    _check_duplicates(endpoints)
    return endpoints


#: StateFun's routable ingress kinds and the field listing their topics (Kafka) or streams (Kinesis)
INGRESS_KINDS = {"io.statefun.kafka.v1/ingress": ("topics", "topic"), "io.statefun.kinesis.v1/ingress": ("streams", "stream")}


@dataclass(frozen=True)
class IngressTopic:
    """One topic (Kafka) or stream (Kinesis) of a routable ingress in a ``module.yaml``:
    its records go to every function type of ``targets`` with the record key as the function
    id and the record value as a message of type ``value_type`` (a typename).

    Example:
        >>> IngressTopic("demo/in", "names", "demo/Name", ("demo/greeter",)).targets
        ('demo/greeter',)
    """

    ingress_id: str
    name: str
    value_type: str
    targets: tuple[str, ...]


def parse_module_ingresses(text: str, source: str = "<module.yaml>") -> list[IngressTopic]:
    """The routable ingress topics of the text of a StateFun ``module.yaml``: every topic of
    its ``io.statefun.kafka.v1/ingress`` documents (``topics: [{topic, valueType, targets}]``)
    and every stream of its ``io.statefun.kinesis.v1/ingress`` documents (``streams``); those
    of a legacy ``version: "3.0"`` module too (:func:`module_documents`).
    Connection fields (``address``, ``consumerGroupId``, ``startupPosition``...) are not
    read: raystream takes the records from a DataStream. Errors name the file, the document
    and the field.

    Example:
        >>> [t.name for t in parse_module_ingresses('''
        ... kind: io.statefun.kafka.v1/ingress
        ... spec:
        ...   id: demo/in
        ...   address: kafka:9092
        ...   topics:
        ...     - topic: names
        ...       valueType: demo/Name
        ...       targets: [demo/greeter]
        ... ''')]
        ['names']
    """
    out: list[IngressTopic] = []
    for place, doc in module_documents(text, source):
        if not isinstance(doc, Mapping) or doc.get("kind") not in INGRESS_KINDS:
            continue
        where = f"{source} ({place}, {doc['kind']})"
        spec = doc.get("spec")
        if not isinstance(spec, Mapping):
            raise ConfigError(f"{where}: 'spec' must be a mapping, got {spec!r}")
        ingress_id = _typename_field(spec.get("id"), f"{where}: 'spec.id'")
        list_field, name_field = INGRESS_KINDS[doc["kind"]]
        entries = spec.get(list_field)
        if not isinstance(entries, list) or not entries:
            raise ConfigError(f"{where}: ingress {ingress_id!r} needs a non-empty list 'spec.{list_field}'")
        for i, entry in enumerate(entries):
            at = f"{where}: spec.{list_field}[{i}]"
            if not isinstance(entry, Mapping) or not isinstance(entry.get(name_field), str) or not entry[name_field]:
                raise ConfigError(f"{at}: expected a mapping with '{name_field}', 'valueType' and 'targets', got {entry!r}")
            value_type = _typename_field(entry.get("valueType"), f"{at}.valueType")
            targets = entry.get("targets")
            if not isinstance(targets, list) or not targets:
                raise ConfigError(f"{at}.targets: a routable {name_field} lists the function types it feeds, got {targets!r}")
            out.append(IngressTopic(ingress_id, entry[name_field], value_type,
                                    tuple(_typename_field(t, f"{at}.targets") for t in targets)))
    return out


def _typename_field(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a typename 'namespace/name', got {value!r}")
    try:
        parse_typename(value)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return value


def load_module_yaml(path: str | Path) -> list[RemoteEndpoint]:
    """The HTTP endpoints declared in the StateFun ``module.yaml`` at ``path``.

    Errors name the file, the document and the offending field.

    Example:
        ``sf.with_endpoint(*load_module_yaml("module.yaml"))``
    """
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read module file {str(p)!r}: {exc}") from exc
    return parse_module_yaml(text, source=str(p))


def endpoint_problem(ep: Any, embedded: Any, where: str) -> str | None:
    """Why ``ep`` cannot be added next to the ``embedded`` function registry (``where``
    names the caller for the message), or None when it can."""
    if not isinstance(ep, RemoteEndpoint):
        return f"{where} takes RemoteEndpoint objects (remote_endpoint(...)), got {ep!r}"
    if not ep.is_pattern and ep.functions in embedded:
        return (f"function type {ep.functions!r} is registered as an embedded function and bound to "
                f"{ep.describe()}; bind it to one or the other")
    return None


def _check_duplicates(endpoints: Iterable[RemoteEndpoint]) -> None:
    seen: dict[str, RemoteEndpoint] = {}
    for ep in endpoints:
        other = seen.get(ep.functions)
        if other is not None and other != ep:
            raise ConfigError(
                f"function types {ep.functions!r} are bound to two endpoints: {other.describe()} and {ep.describe()}"
            )
        seen[ep.functions] = ep


class _Serves(Protocol):
    """What :func:`resolve_endpoint` reads of an endpoint (remote, or an embedded function's)."""

    @property
    def is_pattern(self) -> bool: ...

    def matches(self, typename: str) -> bool: ...


_E = TypeVar("_E", bound=_Serves)


def resolve_endpoint(endpoints: Iterable[_E], typename: str) -> _E | None:
    """The endpoint serving ``typename``: an exact binding first, then a namespace pattern.

    Example:
        >>> eps = [remote_endpoint("a/*", "http://h/all"), remote_endpoint("a/f", "http://h/f")]
        >>> resolve_endpoint(eps, "a/f").url_path_template, resolve_endpoint(eps, "b/f")
        ('http://h/f', None)
    """
    pattern = None
    for ep in endpoints:
        if ep.matches(typename):
            if not ep.is_pattern:
                return ep
            pattern = pattern or ep
    return pattern
