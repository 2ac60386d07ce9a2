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
``{function.namespace}``.

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
from typing import Any

from engine.errors import ConfigError
from statefun_api.address import parse_typename

__all__ = [
    "RemoteEndpoint",
    "remote_endpoint",
    "load_module_yaml",
    "parse_module_yaml",
    "parse_duration",
    "resolve_endpoint",
    "ENDPOINT_KINDS",
]

log = logging.getLogger(__name__)

#: the ``kind`` values of a module.yaml document that declare an HTTP endpoint
ENDPOINT_KINDS = ("io.statefun.endpoints.v2/http", "io.statefun.endpoints.v1/http")

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
        call_timeout_s: the whole call, retries included (StateFun's ``timeouts.call``).
        connect_timeout_s: establishing a connection (``timeouts.connect``).
        read_timeout_s: between two reads of the response (``timeouts.read``).
        write_timeout_s: StateFun's ``timeouts.write``; raystream bounds the upload by the
            attempt's share of the call timeout and keeps this for reference.
        max_retries: retries after the first attempt (``None``: until the call timeout).
        backoff_initial_s / backoff_max_s: exponential backoff between attempts.
        source: where it was declared (a module.yaml path, or ``"python"``), for errors.
    """

    functions: str
    url_path_template: str
    max_num_batch_requests: int = 1000
    call_timeout_s: float = 60.0
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 10.0
    write_timeout_s: float = 10.0
    max_retries: int | None = None
    backoff_initial_s: float = 0.05
    backoff_max_s: float = 2.0
    source: str = "python"

    def __post_init__(self) -> None:
        what = f"remote endpoint {self.functions!r} ({self.source})"
        _check_pattern(self.functions, what)
        url = self.url_path_template
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ConfigError(f"{what}: url_path_template must be an http(s) URL, got {url!r}")
        n = self.max_num_batch_requests
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"{what}: max_num_batch_requests must be a positive int, got {n!r}")
        r = self.max_retries
        if r is not None and (isinstance(r, bool) or not isinstance(r, int) or r < 0):
            raise ConfigError(f"{what}: max_retries must be an int >= 0 or None, got {r!r}")
        for name in ("call_timeout_s", "connect_timeout_s", "read_timeout_s", "write_timeout_s", "backoff_initial_s", "backoff_max_s"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
                raise ConfigError(f"{what}: {name} must be a positive number of seconds, got {v!r}")

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
        """The URL of function type ``typename``."""
        namespace, _, name = typename.rpartition("/")
        return self.url_path_template.replace("{function.name}", name).replace("{function.namespace}", namespace)

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
    read_timeout: timedelta | float | str = timedelta(seconds=10),
    write_timeout: timedelta | float | str = timedelta(seconds=10),
    max_retries: int | None = None,
    backoff_initial: timedelta | float | str = timedelta(milliseconds=50),
    backoff_max: timedelta | float | str = timedelta(seconds=2),
) -> RemoteEndpoint:
    """Declare that function types ``functions`` are served at ``url_path_template``.

    Durations are timedeltas, seconds, or strings such as ``"10s"``. Register the result
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
        read_timeout_s=parse_duration(read_timeout, f"{what}: read_timeout"),
        write_timeout_s=parse_duration(write_timeout, f"{what}: write_timeout"),
        max_retries=max_retries,
        backoff_initial_s=parse_duration(backoff_initial, f"{what}: backoff_initial"),
        backoff_max_s=parse_duration(backoff_max, f"{what}: backoff_max"),
    )


# -- module.yaml --------------------------------------------------------------------------

_SPEC_FIELDS = {"functions", "urlPathTemplate", "maxNumBatchRequests", "timeouts", "maxRetries", "backoff"}
_TIMEOUT_FIELDS = {"call": "call_timeout_s", "connect": "connect_timeout_s", "read": "read_timeout_s", "write": "write_timeout_s"}
_BACKOFF_FIELDS = {"initial": "backoff_initial_s", "max": "backoff_max_s"}


def _yaml() -> Any:
    try:
        import yaml
    except ImportError as exc:  # pragma: no cover - Ray depends on PyYAML
        raise ImportError("reading a StateFun module.yaml needs PyYAML: `pip install pyyaml`") from exc
    return yaml


def _endpoint_from_spec(spec: Any, where: str) -> RemoteEndpoint:
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{where}: 'spec' must be a mapping, got {spec!r}")
    unknown = sorted(set(spec) - _SPEC_FIELDS)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {unknown} in 'spec' (known: {sorted(_SPEC_FIELDS)})")
    for required in ("functions", "urlPathTemplate"):
        if required not in spec:
            raise ConfigError(f"{where}: 'spec.{required}' is missing")
    kwargs: dict[str, Any] = {"functions": spec["functions"], "url_path_template": spec["urlPathTemplate"], "source": where}
    if "maxNumBatchRequests" in spec:
        n = spec["maxNumBatchRequests"]
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"{where}: 'spec.maxNumBatchRequests' must be a positive integer, got {n!r}")
        kwargs["max_num_batch_requests"] = n
    if "maxRetries" in spec:
        r = spec["maxRetries"]
        if isinstance(r, bool) or not isinstance(r, int) or r < 0:
            raise ConfigError(f"{where}: 'spec.maxRetries' must be an integer >= 0, got {r!r}")
        kwargs["max_retries"] = r
    for group, fields in (("timeouts", _TIMEOUT_FIELDS), ("backoff", _BACKOFF_FIELDS)):
        values = spec.get(group) or {}
        if not isinstance(values, Mapping):
            raise ConfigError(f"{where}: 'spec.{group}' must be a mapping, got {values!r}")
        for key, value in values.items():
            if key not in fields:
                raise ConfigError(f"{where}: unknown field 'spec.{group}.{key}' (known: {sorted(fields)})")
            kwargs[fields[key]] = parse_duration(value, f"{where}: 'spec.{group}.{key}'")
    if not isinstance(spec["urlPathTemplate"], str) or not spec["urlPathTemplate"].startswith(("http://", "https://")):
        raise ConfigError(f"{where}: 'spec.urlPathTemplate' must be an http(s) URL, got {spec['urlPathTemplate']!r}")
    if not isinstance(spec["functions"], str):
        raise ConfigError(f"{where}: 'spec.functions' must be a typename or 'namespace/*', got {spec['functions']!r}")
    try:
        return RemoteEndpoint(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def parse_module_yaml(text: str, source: str = "<module.yaml>") -> list[RemoteEndpoint]:
    """The HTTP endpoints declared in the text of a StateFun ``module.yaml``.

    The file is a stream of YAML documents (``---``), each ``{kind: ..., spec: ...}``.
    Documents of kind ``io.statefun.endpoints.v2/http`` (or ``.v1/http``) become
    endpoints; ingress and egress documents (``.../ingress``, ``.../egress``) are skipped
    with a log message, since raystream binds ingresses and egresses in Python; any other
    kind is an error.

    Example:
        >>> eps = parse_module_yaml('''
        ... kind: io.statefun.endpoints.v2/http
        ... spec:
        ...   functions: com.example/*
        ...   urlPathTemplate: http://functions:8000/{function.name}
        ...   maxNumBatchRequests: 500
        ...   timeouts: {call: 2min, connect: 5s}
        ... ''')
        >>> eps[0].functions, eps[0].max_num_batch_requests, eps[0].call_timeout_s
        ('com.example/*', 500, 120.0)
    """
    yaml = _yaml()
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    endpoints = []
    for number, doc in enumerate(documents, 1):
        where = f"{source} (document {number})"
        if not isinstance(doc, Mapping) or "kind" not in doc:
            raise ConfigError(f"{where}: expected a mapping with 'kind' and 'spec', got {doc!r}")
        unknown = sorted(set(doc) - {"kind", "spec"})
        if unknown:
            raise ConfigError(f"{where}: unknown top-level field(s) {unknown}; expected 'kind' and 'spec'")
        kind = doc["kind"]
        if kind in ENDPOINT_KINDS:
            endpoints.append(_endpoint_from_spec(doc.get("spec"), where))
        elif isinstance(kind, str) and kind.endswith(("/ingress", "/egress")):
            log.info("%s: skipping %r; bind ingresses and egresses with StatefulFunctionsJob", where, kind)
        else:
            raise ConfigError(
                f"{where}: unsupported 'kind' {kind!r}; raystream reads endpoints of kind "
                f"{' or '.join(repr(k) for k in ENDPOINT_KINDS)}"
            )
    _check_duplicates(endpoints)
    return endpoints


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


def resolve_endpoint(endpoints: Iterable[RemoteEndpoint], typename: str) -> RemoteEndpoint | None:
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
