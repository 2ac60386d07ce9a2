"""Errors raised by the stateful-functions API.

Every error derives from :class:`engine.errors.RaystreamError`, so a job can catch one type.

Example:
    >>> from raystream.engine.errors import RaystreamError
    >>> issubclass(StatefulFunctionError, RaystreamError)
    True
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from raystream.engine.errors import RaystreamError

if TYPE_CHECKING:
    from raystream.statefun_api.address import Address

__all__ = ["StatefulFunctionError", "FunctionNotFound", "ProtocolError", "BadRequest"]


class StatefulFunctionError(RaystreamError):
    """Invoking a stateful function failed.

    Attributes:
        address: the address of the function being invoked, when known.
        message_typename: typename of the message being processed, when known.
    """

    def __init__(
        self,
        message: str,
        *,
        address: Address | None = None,
        message_typename: str | None = None,
    ) -> None:
        super().__init__(message)
        self.address = address
        self.message_typename = message_typename

    def __reduce__(self):  # keep attributes across Ray/pickle boundaries
        return (
            _rebuild,
            (type(self), self.args[0], self.address, self.message_typename),
        )


class FunctionNotFound(StatefulFunctionError, KeyError):
    """No function is registered under the typename of the target address.

    A ``KeyError`` (hence a ``LookupError``) as the official SDK's ``for_typename`` raises,
    so ported ``except KeyError:`` code still catches it; its message is not quoted.

    Example:
        >>> str(FunctionNotFound("no function is registered under 'a/b'"))
        "no function is registered under 'a/b'"
    """

    def __str__(self) -> str:
        return Exception.__str__(self)  # not KeyError's repr() of the message


class ProtocolError(StatefulFunctionError, ValueError):
    """Bytes could not be decoded as (or an object does not fit) the request-reply protocol."""


class BadRequest(ProtocolError):
    """A request-reply request is malformed: sending it again cannot succeed (HTTP 400)."""


def _rebuild(cls, message, address, message_typename):
    return cls(message, address=address, message_typename=message_typename)
