"""Encoding the ``ToFunction`` requests of remote calls straight from message records.

A request is one ``InvocationBatchRequest``: the target address, the address's persisted
values and one ``Invocation`` (caller, argument) per message. Building it as protobuf
message objects cost ~1.5 us a message (an ``add()`` and five attribute writes on the upb
classes, plus a ``TypedValue`` object to serialize a decoded value), half of the client's
time on a batched workload. Here each invocation's bytes are made once per distinct
(typename, value, caller) and kept in a bounded cache, so the usual message (the same
small value, an ingress or a few callers) costs one dict lookup; the request is then one
``b"".join``. The bytes are those of ``ToFunction.SerializeToString()`` (fields in
number order, proto3 defaults skipped, an argument always present), which the tests check
against the protobuf runtime.

Example:
    >>> from raystream.statefun_api._reqreply_pb import ToFunctionPb
    >>> enc = RequestEncoder()
    >>> record = ("demo/greeter", "ann", "", "", "io.statefun.types/string", b"\\n\\x02hi", True)
    >>> body = enc.request(("demo", "greeter", "ann"), [], [record])
    >>> ToFunctionPb.FromString(body).invocation.invocations[0].argument.typename
    'io.statefun.types/string'
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from raystream.statefun_api._protowire import encode_varint
from raystream.statefun_api.routing import (
    CALLER_ID,
    CALLER_TYPENAME,
    HAS_VALUE,
    VALUE,
    VALUE_TYPENAME,
    MessageRecord,
    record_typed_value,
)

__all__ = ["RequestEncoder", "StateEntry"]

#: a persisted value sent with a request: (state name, typename, has value, value bytes)
StateEntry = tuple[str, str, bool, bytes]

_CACHE_ENTRIES = 4096  # distinct invocations (or caller addresses) kept; cleared when full
_CACHED_VALUE = 64  # values up to this many bytes (or decoded values of these types) are cached
_CACHED_TYPES = (bytes, str, int, bool)  # (not float: 0.0 == -0.0 would share one encoding)


def _field(tag: bytes, data: bytes) -> bytes:
    """A length-delimited field: ``tag``, the length, ``data``."""
    n = len(data)
    return tag + (bytes((n,)) if n < 0x80 else encode_varint(n)) + data


def _string(tag: bytes, text: str) -> bytes:
    return _field(tag, text.encode("utf-8")) if text else b""


def _typed_value(typename: str, has_value: bool, value: bytes) -> bytes:
    """``TypedValue`` (typename = 1, has_value = 2, value = 3)."""
    return _string(b"\x0a", typename) + (b"\x10\x01" if has_value else b"") + (_field(b"\x1a", value) if value else b"")


def _address(namespace: str, name: str, id_: str) -> bytes:
    """``Address`` (namespace = 1, type = 2, id = 3)."""
    return _string(b"\x0a", namespace) + _string(b"\x12", name) + _string(b"\x1a", id_)


class RequestEncoder:
    """Encodes ``ToFunction`` requests; one per :class:`~statefun_api.remote.RemoteFunctions`
    (its caches are not shared between threads).

    Args:
        address_of: the caller address ``(namespace, name, id)`` of a record's
            ``(caller typename, caller id)`` (the dispatcher's address cache); by default
            the typename is split at its last ``/``.
    """

    def __init__(self, address_of: Callable[[tuple[str, str]], Any] | None = None) -> None:
        self._address_of = address_of
        self._invocations: dict[tuple[Any, ...], bytes] = {}  # (typename, has_value, value, caller...) -> field 3
        self._callers: dict[tuple[str, str], bytes] = {}  # (typename, id) -> Invocation.caller field
        self._types: dict[tuple[str, str], bytes] = {}  # (namespace, name) -> the Address fields before the id

    def request(self, target: tuple[str, str, str], state: Sequence[StateEntry], records: Sequence[MessageRecord]) -> bytes:
        """The encoded ``ToFunction`` invoking ``target`` (namespace, name, id) once per
        record of ``records``, with ``state`` attached."""
        namespace, name, id_ = target
        prefix = self._types.get((namespace, name))
        if prefix is None:
            if len(self._types) >= _CACHE_ENTRIES:
                self._types.clear()
            prefix = self._types[(namespace, name)] = _string(b"\x0a", namespace) + _string(b"\x12", name)
        parts = [_field(b"\x0a", prefix + _string(b"\x1a", id_))]  # InvocationBatchRequest.target = 1
        for name, typename, has_value, value in state:  # .state = 2: PersistedValue(name = 1, value = 2)
            parts.append(_field(b"\x12", _string(b"\x0a", name) + _field(b"\x12", _typed_value(typename, has_value, value))))
        cache = self._invocations
        for r in records:  # .invocations = 3
            value = r[VALUE]
            key = (r[VALUE_TYPENAME], r[HAS_VALUE], value, r[CALLER_TYPENAME], r[CALLER_ID])
            try:
                parts.append(cache[key])
                continue
            except KeyError:
                pass
            except TypeError:  # an unhashable value: encode, do not cache
                parts.append(self._invocation(r))
                continue
            encoded = self._invocation(r)
            if type(value) in _CACHED_TYPES and (type(value) not in (bytes, str) or len(value) <= _CACHED_VALUE):
                if len(cache) >= _CACHE_ENTRIES:
                    cache.clear()
                cache[key] = encoded
            parts.append(encoded)
        batch = b"".join(parts)
        return _field(b"\xa2\x06", batch)  # ToFunction.invocation = 100

    def fitting(self, target: tuple[str, str, str], state: Sequence[StateEntry], records: Sequence[MessageRecord], limit: int) -> int:
        """How many of ``records``, from the first, make a :meth:`request` shorter than
        ``limit`` bytes (at least one): for an endpoint that refused larger requests.

        Example:
            >>> r = ("demo/greeter", "ann", "", "", "io.statefun.types/string", b"\\n\\x02hi", True)
            >>> enc = RequestEncoder()
            >>> full = len(enc.request(("demo", "greeter", "ann"), [], [r] * 3))
            >>> enc.fitting(("demo", "greeter", "ann"), [], [r] * 3, full), enc.fitting(("demo", "greeter", "ann"), [], [r] * 3, full + 1)
            (2, 3)
        """
        batch = len(_field(b"\x0a", _address(*target)))  # the InvocationBatchRequest, as request() builds it
        for name, typename, has_value, value in state:
            batch += len(_field(b"\x12", _string(b"\x0a", name) + _field(b"\x12", _typed_value(typename, has_value, value))))
        for i, r in enumerate(records):
            batch += len(self._invocation(r))
            if 2 + len(encode_varint(batch)) + batch >= limit:  # (ToFunction.invocation's tag, length, the batch)
                return max(i, 1)
        return len(records)

    def _invocation(self, r: MessageRecord) -> bytes:
        """One ``invocations`` field: Invocation(caller = 1, argument = 2)."""
        value = r[VALUE]
        if type(value) is not bytes:
            value = record_typed_value(r).value
        argument = _field(b"\x12", _typed_value(r[VALUE_TYPENAME], bool(r[HAS_VALUE]), value))
        caller = self._caller(r[CALLER_TYPENAME], r[CALLER_ID]) if r[CALLER_TYPENAME] else b""
        return _field(b"\x1a", caller + argument)

    def _caller(self, typename: str, id_: str) -> bytes:
        key = (typename, id_)
        encoded = self._callers.get(key)
        if encoded is None:
            if self._address_of is not None:
                a = self._address_of(key)
                address = _address(a.namespace, a.name, a.id)
            else:
                namespace, _, name = typename.rpartition("/")
                address = _address(namespace, name, id_)
            encoded = _field(b"\x0a", address)
            if len(self._callers) >= _CACHE_ENTRIES:
                self._callers.clear()
            self._callers[key] = encoded
        return encoded
