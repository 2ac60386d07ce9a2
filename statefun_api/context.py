"""``Context``: what a stateful function sees of the world while it handles a message.

Example:
    >>> from raystream.statefun_api.testing import run_function
    >>> from raystream.statefun_api import StatefulFunctions, message_builder
    >>> functions = StatefulFunctions()
    >>> @functions.bind("com.example/ping")
    ... def ping(context, message):
    ...     context.send(message_builder("com.example/pong", context.address.id, int_value=1))
    >>> run = run_function(functions, "com.example/ping", "1", [message_builder("com.example/ping", "1", int_value=0)])
    >>> [m.target.typename for m in run.sent]
    ['com.example/pong']
"""

from __future__ import annotations

from datetime import timedelta

from raystream.statefun_api.address import Address
from raystream.statefun_api.effects import (
    DelayedCancellation,
    DelayedMessage,
    InvocationResult,
    OutgoingMessage,
)
from raystream.statefun_api.messages import EgressMessage, Message
from raystream.statefun_api.storage import AddressScopedStorage

__all__ = ["Context"]


class Context:
    """The function's address, the current caller, its storage, and ways to send messages.

    One Context serves a whole batch of messages to one address: ``caller`` changes per
    message, ``storage`` carries over (a later message sees the writes of an earlier one).
    Contexts are created by the invocation core, not by user code.
    """

    __slots__ = ("_address", "_caller", "_storage", "_result")

    def __init__(
        self, address: Address, storage: AddressScopedStorage, result: InvocationResult
    ) -> None:
        self._address = address
        self._caller: Address | None = None
        self._storage = storage
        self._result = result

    @property
    def address(self) -> Address:
        """The address of the function being invoked (``.typename``, ``.id``, ...)."""
        return self._address

    @property
    def caller(self) -> Address | None:
        """The address of the function that sent the current message; ``None`` for ingress."""
        return self._caller

    @property
    def storage(self) -> AddressScopedStorage:
        """This address's state: one attribute per declared ValueSpec.

        Example:
            ``context.storage.seen = (context.storage.seen or 0) + 1``
        """
        return self._storage

    def send(self, message: Message) -> None:
        """Send ``message`` to the function named by its target.

        Example:
            ``context.send(message_builder("com.example/f", "id-1", str_value="hi"))``
        """
        _check_message(message, "send")
        self._result.outgoing.append(OutgoingMessage(message.target, message, self._address))

    def send_after(
        self, duration: timedelta, message: Message, cancellation_token: str = ""
    ) -> None:
        """Send ``message`` after ``duration``; a non-empty token allows cancelling it.

        The delay is truncated to whole milliseconds.

        Example:
            ``context.send_after(timedelta(minutes=5), reminder, cancellation_token="r-1")``
        """
        _check_message(message, "send_after")
        if not isinstance(duration, timedelta):
            raise TypeError(f"send_after: duration must be a datetime.timedelta, got {duration!r}")
        if duration < timedelta(0):
            raise ValueError(f"send_after: duration must not be negative, got {duration!r}")
        if cancellation_token is None:
            cancellation_token = ""
        if not isinstance(cancellation_token, str):
            raise TypeError(
                f"send_after: cancellation_token must be a str, got {cancellation_token!r}"
            )
        delay_ms = duration // timedelta(milliseconds=1)
        self._result.delayed_actions.append(
            DelayedMessage(delay_ms, message.target, message, cancellation_token, self._address)
        )

    def cancel_delayed_message(self, cancellation_token: str) -> None:
        """Cancel the delayed message sent with ``cancellation_token`` (best effort).

        A message already delivered is not affected; an unknown token is a no-op.

        Example:
            ``context.cancel_delayed_message("r-1")``
        """
        if not isinstance(cancellation_token, str) or not cancellation_token:
            raise ValueError(
                f"cancel_delayed_message: the token must be a non-empty str, "
                f"got {cancellation_token!r}"
            )
        self._result.delayed_actions.append(DelayedCancellation(cancellation_token))

    def send_egress(self, message: EgressMessage) -> None:
        """Send ``message`` to the egress named by its typename.

        Example:
            ``context.send_egress(egress_message_builder("com.example/out", "x", StringType))``
        """
        if not isinstance(message, EgressMessage):
            raise TypeError(
                f"send_egress expects an EgressMessage (see egress_message_builder), "
                f"got {message!r}"
            )
        self._result.egress.append(message)

    def __repr__(self) -> str:
        return f"<Context of {self._address} caller={self._caller}>"


def _check_message(message: object, method: str) -> None:
    if not isinstance(message, Message):
        hint = " (use send_egress for EgressMessage)" if isinstance(message, EgressMessage) else ""
        raise TypeError(f"{method} expects a Message (see message_builder), got {message!r}{hint}")
