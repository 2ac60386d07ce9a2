"""``ValueSpec``: the declaration of one persisted value of a stateful function.

Example:
    >>> from datetime import timedelta
    >>> from raystream.statefun_api.types import IntType
    >>> spec = ValueSpec("seen", IntType, expire_after_call=timedelta(days=1))
    >>> spec.expiration_mode, spec.expire_after_millis
    ('after_call', 86400000)
"""

from __future__ import annotations

import keyword
from datetime import timedelta
from typing import Literal

from raystream.statefun_api.types import Type

__all__ = ["ValueSpec", "ExpirationMode"]

ExpirationMode = Literal["none", "after_call", "after_write"]


def _millis(duration: timedelta, what: str) -> int:
    if not isinstance(duration, timedelta):
        raise TypeError(f"{what} must be a datetime.timedelta, got {duration!r}")
    millis = duration // timedelta(milliseconds=1)
    if millis <= 0:
        raise ValueError(f"{what} must be at least 1 millisecond, got {duration!r}")
    return millis


class ValueSpec:
    """Declares a persisted value: a name, a :class:`~statefun_api.types.Type` and a TTL.

    The name becomes an attribute of ``context.storage``, so it must be a lower-case
    Python identifier that is not a keyword. At most one of ``expire_after_call`` (drop the
    value if the function was not invoked for that long) and ``expire_after_write`` (drop it
    if it was not written for that long) may be given.

    Attributes:
        name: the state name.
        type: the value type.
        expiration_mode: ``"none"``, ``"after_call"`` or ``"after_write"``.
        expire_after_millis: the TTL in milliseconds (``0`` when ``"none"``).

    Example:
        >>> from raystream.statefun_api.types import StringType
        >>> ValueSpec("name", StringType)
        ValueSpec(name='name', type=<StateFun type io.statefun.types/string>)
    """

    __slots__ = ("name", "type", "expiration_mode", "expire_after_millis")

    def __init__(
        self,
        name: str,
        type: Type,  # noqa: A002 - mirrors the SDK's keyword
        expire_after_call: timedelta | None = None,
        expire_after_write: timedelta | None = None,
    ) -> None:
        if not name:
            raise ValueError("a ValueSpec name can not be missing")
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(
                f"invalid ValueSpec name {name!r}: use lower-case letters, digits and "
                f"underscores, not starting with a digit"
            )
        if keyword.iskeyword(name):
            raise ValueError(
                f"invalid ValueSpec name {name!r}: it is a Python keyword and could not be "
                f"used as context.storage.{name}"
            )
        if name != name.lower():
            raise ValueError(f"invalid ValueSpec name {name!r}: only lower-case names are allowed")
        if type is None:
            raise ValueError(f"ValueSpec {name!r}: type can not be missing")
        if not isinstance(type, Type):
            raise TypeError(f"ValueSpec {name!r}: type must be a StateFun Type, got {type!r}")
        if expire_after_call is not None and expire_after_write is not None:
            raise ValueError(
                f"ValueSpec {name!r}: set expire_after_call or expire_after_write, not both"
            )
        self.name = name
        self.type = type
        self.expiration_mode: ExpirationMode
        if expire_after_call is not None:
            self.expiration_mode = "after_call"
            self.expire_after_millis = _millis(expire_after_call, "expire_after_call")
        elif expire_after_write is not None:
            self.expiration_mode = "after_write"
            self.expire_after_millis = _millis(expire_after_write, "expire_after_write")
        else:
            self.expiration_mode = "none"
            self.expire_after_millis = 0

    # the SDK's attribute names, for code that inspects specs
    @property
    def after_call(self) -> bool:
        """Whether the value expires after a period without invocations."""
        return self.expiration_mode == "after_call"

    @property
    def after_write(self) -> bool:
        """Whether the value expires after a period without writes."""
        return self.expiration_mode == "after_write"

    @property
    def duration(self) -> int:
        """The TTL in milliseconds (``0`` when the value never expires)."""
        return self.expire_after_millis

    def __repr__(self) -> str:
        ttl = ""
        if self.expiration_mode != "none":
            ttl = f", expire_{self.expiration_mode}={self.expire_after_millis}ms"
        return f"ValueSpec(name={self.name!r}, type={self.type!r}{ttl})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ValueSpec):
            return NotImplemented
        return (self.name, self.type.typename, self.expiration_mode, self.expire_after_millis) == (
            other.name,
            other.type.typename,
            other.expiration_mode,
            other.expire_after_millis,
        )

    def __hash__(self) -> int:
        return hash((self.name, self.type.typename, self.expiration_mode))
