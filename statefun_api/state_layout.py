"""Where the function runtime keeps its state in the engine's keyed state (per address):
one ``ValueState`` per declared value spec, the pending delayed messages and their sequence.
Shared by the dispatcher and the remote-function client (which registers specs a remote
function asks for at run time).

Example:
    >>> value_state_name("com.example/cart", "items")
    'statefun/com.example/cart/items'
"""

from __future__ import annotations

__all__ = ["DELAYED_STATE", "DELAY_SEQ_STATE", "value_state_name"]

DELAYED_STATE = "statefun.delayed"
DELAY_SEQ_STATE = "statefun.delay-seq"


def value_state_name(typename: str, spec_name: str) -> str:
    """Name of the keyed ``ValueState`` holding spec ``spec_name`` of function ``typename``."""
    return f"statefun/{typename}/{spec_name}"
