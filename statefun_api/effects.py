"""What one invocation of a stateful function produced.

The invocation core (:mod:`statefun_api.invocation`) returns an :class:`InvocationResult`;
the engine applies it: state mutations to the address's keyed state, outgoing messages to
the feedback edge, delayed messages and cancellations to its timers (in
:attr:`InvocationResult.delayed_actions` order), egress messages to the egress sinks.

Example:
    >>> r = InvocationResult()
    >>> r.state_mutations, r.outgoing, r.delayed, r.cancellations, r.egress
    ({}, [], [], [], [])
"""

from __future__ import annotations

from dataclasses import dataclass

from raystream.statefun_api.address import Address
from raystream.statefun_api.messages import EgressMessage, Message

__all__ = [
    "OutgoingMessage",
    "DelayedMessage",
    "DelayedCancellation",
    "InvocationResult",
]


@dataclass(frozen=True)
class OutgoingMessage:
    """A message sent with ``context.send``: deliver ``message`` to ``target``.

    Attributes:
        target: the address the message goes to.
        message: the message (its target is ``target``).
        caller: the address of the sending function (becomes ``context.caller``).
    """

    target: Address
    message: Message
    caller: Address


@dataclass(frozen=True)
class DelayedMessage:
    """A message sent with ``context.send_after``.

    Attributes:
        delay_ms: the delay in milliseconds (``>= 0``).
        target: the address the message goes to.
        message: the message.
        cancellation_token: the token that can cancel it (``""`` for none).
        caller: the address of the sending function.
    """

    delay_ms: int
    target: Address
    message: Message
    cancellation_token: str
    caller: Address


@dataclass(frozen=True)
class DelayedCancellation:
    """A ``context.cancel_delayed_message(token)`` call."""

    cancellation_token: str


class InvocationResult:
    """The effects of running a batch of messages through one function address.

    Attributes:
        state_mutations: state name -> new serialized value, or ``None`` if deleted. Only
            values that were assigned or deleted appear.
        outgoing: messages to other (or the same) function addresses, in send order.
        delayed_actions: delayed messages and cancellations in call order; apply them in
            this order (a cancellation only affects messages registered before it).
        egress: messages to egresses, in send order.
    """

    __slots__ = ("state_mutations", "outgoing", "delayed_actions", "egress")

    def __init__(
        self,
        state_mutations: dict[str, bytes | None] | None = None,
        outgoing: list[OutgoingMessage] | None = None,
        delayed_actions: list[DelayedMessage | DelayedCancellation] | None = None,
        egress: list[EgressMessage] | None = None,
    ) -> None:
        self.state_mutations = {} if state_mutations is None else state_mutations
        self.outgoing = [] if outgoing is None else outgoing
        self.delayed_actions = [] if delayed_actions is None else delayed_actions
        self.egress = [] if egress is None else egress

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, InvocationResult):
            return NotImplemented
        return (self.state_mutations, self.outgoing, self.delayed_actions, self.egress) == (
            other.state_mutations,
            other.outgoing,
            other.delayed_actions,
            other.egress,
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"InvocationResult(state_mutations={self.state_mutations!r}, outgoing={self.outgoing!r}, "
            f"delayed_actions={self.delayed_actions!r}, egress={self.egress!r})"
        )

    @property
    def delayed(self) -> list[DelayedMessage]:
        """The delayed messages, in call order."""
        return [a for a in self.delayed_actions if isinstance(a, DelayedMessage)]

    @property
    def cancellations(self) -> list[str]:
        """The cancellation tokens passed to ``cancel_delayed_message``, in call order."""
        return [
            a.cancellation_token for a in self.delayed_actions if isinstance(a, DelayedCancellation)
        ]
