"""Shopping cart: StateFun's user + inventory example, on raystream.

Ingress events (dicts) are routed to two function types:

* ``shop/inventory`` (id = item) keeps the ``stock`` (``--stock`` units at first);
  ``restock`` events add to it, a
  ``RequestItem`` from a user reserves the quantity if there is enough and answers
  ``ItemAvailability`` (in stock or not) to the user.
* ``shop/user`` (id = user) keeps the ``cart`` (item -> quantity) and the number of
  requests still ``awaiting`` an answer. ``add`` asks the item's inventory; an in-stock
  answer puts the items in the cart. ``checkout`` sends a receipt with the cart's
  content to the ``shop/receipts`` egress and empties the cart; if answers are still
  outstanding, the checkout waits for them.

Run it::

    python -m raystream.jobs.shopping_cart                   # generated shoppers, embedded local Ray
    python -m raystream.jobs.shopping_cart --users 20 --parallelism 3

Job-module convention: ``build(env, args)`` adds the job to a StreamEnvironment and
returns the stream to collect; ``main(argv)`` runs it standalone.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import raystream as rs
from raystream.jobs.args import at_least
from raystream.statefun_api import (
    BoolType,
    Context,
    IntType,
    Message,
    StatefulFunctions,
    ValueSpec,
    egress_message_builder,
    make_json_type,
    message_builder,
)
from raystream.statefun_api.job import StatefulFunctionsJob

__all__ = ["functions", "make_functions", "route", "generate_events", "build", "main", "USER", "INVENTORY", "RECEIPTS"]

USER = "shop/user"
INVENTORY = "shop/inventory"
RECEIPTS = "shop/receipts"

Event = make_json_type("shop/Event")  # ingress events: add / checkout / restock
RequestItem = make_json_type("shop/RequestItem")
ItemAvailability = make_json_type("shop/ItemAvailability")
Cart = make_json_type("shop/Cart")
Receipt = make_json_type("shop/Receipt")

def make_functions(initial_stock: int = 100) -> StatefulFunctions:
    """The shop's functions; every item starts with ``initial_stock`` units.

    Example:
        >>> sorted(make_functions(5).typenames())
        ['shop/inventory', 'shop/user']
    """
    functions = StatefulFunctions()

    @functions.bind(
        typename=USER,
        specs=[
            ValueSpec(name="cart", type=Cart),
            ValueSpec(name="awaiting", type=IntType),
            ValueSpec(name="checkout_requested", type=BoolType),
        ],
    )
    def user(context: Context, message: Message) -> None:
        """A shopper: asks the inventory for items, keeps the cart, checks out."""
        storage = context.storage
        if message.is_type(Event):
            event = message.as_type(Event)
            assert event is not None  # every message of this job carries a value
            if event["type"] == "add":
                storage.awaiting = (storage.awaiting or 0) + 1
                context.send(
                    message_builder(INVENTORY, event["item"], value={"quantity": event["quantity"]}, value_type=RequestItem)
                )
            elif event["type"] == "checkout":
                storage.checkout_requested = True
            else:
                raise ValueError(f"user {context.address.id!r}: unknown event {event!r}")
        elif message.is_type(ItemAvailability):
            answer = message.as_type(ItemAvailability)
            assert answer is not None  # every message of this job carries a value
            storage.awaiting = storage.awaiting - 1
            if answer["in_stock"]:
                cart = storage.cart or {}
                assert context.caller is not None  # the inventory function that answered
                item = context.caller.id
                cart[item] = cart.get(item, 0) + answer["quantity"]
                storage.cart = cart
        else:
            raise TypeError(f"user {context.address.id!r}: unexpected message {message!r}")
        if storage.checkout_requested and not storage.awaiting:
            receipt = {"user": context.address.id, "items": dict(sorted((storage.cart or {}).items()))}
            context.send_egress(egress_message_builder(RECEIPTS, receipt, Receipt))
            del storage.cart
            del storage.checkout_requested

    @functions.bind(typename=INVENTORY, specs=[ValueSpec(name="stock", type=IntType)])
    def inventory(context: Context, message: Message) -> None:
        """Stock of one item: restocks, and reservations requested by users."""
        stock = context.storage.stock
        if stock is None:
            stock = initial_stock
        if message.is_type(Event):  # restock from the ingress
            restock = message.as_type(Event)
            assert restock is not None  # every message of this job carries a value
            context.storage.stock = stock + restock["quantity"]
            return
        request = message.as_type(RequestItem)
        assert request is not None  # every message of this job carries a value
        quantity = request["quantity"]
        in_stock = stock >= quantity
        if in_stock:
            context.storage.stock = stock - quantity
        requester = context.caller
        assert requester is not None  # a RequestItem comes from a user function
        context.send(
            message_builder(
                requester.typename,
                requester.id,
                value={"in_stock": in_stock, "quantity": quantity},
                value_type=ItemAvailability,
            )
        )

    return functions


functions = make_functions()


def route(event: dict[str, Any]) -> Message:
    """The ingress router: restocks go to the item's inventory, the rest to the user."""
    if event["type"] == "restock":
        return message_builder(INVENTORY, event["item"], value=event, value_type=Event)
    return message_builder(USER, event["user"], value=event, value_type=Event)


def generate_events(users: int, items: int = 5, adds_per_user: int = 4) -> list[dict[str, Any]]:
    """Deterministic events: each user adds items to the cart, then checks out.

    Example:
        >>> generate_events(1, items=1, adds_per_user=1)  # doctest: +NORMALIZE_WHITESPACE
        [{'type': 'add', 'item': 'item-0', 'quantity': 1, 'user': 'user-0'},
         {'type': 'checkout', 'item': '', 'quantity': 0, 'user': 'user-0'}]
    """
    events = []
    for u in range(users):
        for a in range(adds_per_user):
            item = f"item-{(u * 3 + a) % items}"
            events.append({"type": "add", "item": item, "quantity": 1 + (u + a) % 3, "user": f"user-{u}"})
        events.append({"type": "checkout", "item": "", "quantity": 0, "user": f"user-{u}"})
    return events


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="shopping_cart", description=__doc__.splitlines()[0])
    p.add_argument("--users", type=at_least(0), default=10)
    p.add_argument("--items", type=at_least(1), default=5)
    p.add_argument("--stock", type=at_least(0), default=1000, help="initial stock per item")
    p.add_argument("--parallelism", type=at_least(1), default=2)
    return p.parse_args(argv)


def build(env: rs.StreamEnvironment, args: argparse.Namespace) -> rs.DataStream:
    """Add the shop to ``env``; returns the stream of receipts (dicts)."""
    events = generate_events(args.users, args.items)
    sf = StatefulFunctionsJob(env, make_functions(args.stock), name="shop")
    # one ingress subtask keeps each user's events (adds before checkout) in order
    sf.with_ingress(env.from_collection(events).set_parallelism(1), route)
    return sf.egress_stream(RECEIPTS, value_type=Receipt)


def report(receipts: list[dict[str, Any]], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Print each user's receipt (``python -m raystream.jobs.shopping_cart`` and ``raystream run`` alike)."""
    receipts = sorted(receipts, key=lambda r: r["user"])
    for receipt in receipts:
        items = ", ".join(f"{n} x {item}" for item, n in receipt["items"].items()) or "(empty)"
        print(f"{receipt['user']}: {items}")
    return receipts


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    env = rs.StreamEnvironment(parallelism=args.parallelism, flush_ms=5)
    return report(build(env, args).execute_and_collect("shopping_cart"), args)


if __name__ == "__main__":
    main(sys.argv[1:])
