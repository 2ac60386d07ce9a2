"""Greeter: StateFun's classic first example, on raystream.

Names arrive on an ingress; the ``example/person`` function of each name counts its
visits and asks the ``example/greeter`` function (another address, so possibly another
task) to greet it; the greeter picks a greeting by visit count and sends it to the
``example/greets`` egress.

Run it::

    python -m raystream.jobs.greeter                         # generated visits, embedded local Ray
    python -m raystream.jobs.greeter ann bob ann --parallelism 1

Job-module convention: ``build(env, args)`` adds the job to a StreamEnvironment and
returns the stream to collect; ``main(argv)`` runs it standalone.
"""

from __future__ import annotations

import argparse
import sys

import raystream as rs
from raystream.jobs.args import at_least
from raystream.statefun_api import (
    Context,
    IntType,
    Message,
    StatefulFunctions,
    StringType,
    ValueSpec,
    egress_message_builder,
    make_json_type,
    message_builder,
)
from raystream.statefun_api.address import id_problem
from raystream.statefun_api.job import StatefulFunctionsJob

__all__ = ["functions", "greeting", "build", "main", "route", "GREETS", "PERSON", "GREETER"]

PERSON = "example/person"
GREETER = "example/greeter"
GREETS = "example/greets"
Visit = make_json_type("example/Visit")

functions = StatefulFunctions()


@functions.bind(typename=PERSON, specs=[ValueSpec(name="visits", type=IntType)])
def person(context: Context, message: Message) -> None:
    """Counts the visits of ``context.address.id`` and asks the greeter to greet them."""
    visits = (context.storage.visits or 0) + 1
    context.storage.visits = visits
    name = context.address.id
    context.send(message_builder(GREETER, name, value={"name": name, "visits": visits}, value_type=Visit))


@functions.bind(typename=GREETER)
def greeter(context: Context, message: Message) -> None:
    """Sends a greeting for a visit to the ``example/greets`` egress."""
    visit = message.as_type(Visit)
    assert visit is not None  # the person function always sends a value
    context.send_egress(egress_message_builder(GREETS, greeting(visit["name"], visit["visits"]), StringType))


def greeting(name: str, visits: int) -> str:
    """The greeting for the ``visits``-th visit of ``name``.

    Example:
        >>> greeting("ann", 1), greeting("ann", 3)
        ('Hello ann! Nice to meet you.', 'Hello again ann, visit #3.')
    """
    if visits == 1:
        return f"Hello {name}! Nice to meet you."
    if visits == 2:
        return f"Hello {name}, good to see you again."
    return f"Hello again {name}, visit #{visits}."


def route(name: str) -> Message:
    """The ingress router: a name is a visit of that person."""
    return message_builder(PERSON, name, str_value=name)


def visitor(text: str) -> str:
    """An argparse type: a visitor's name, which is the ``example/person`` function's id (a
    name it cannot be is a usage error naming it, not a failed job)."""
    problem = id_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(f"a visitor's name is a function id: {problem}")
    return text


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="greeter", description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*", type=visitor, help="visitors, in order (default: generated visits)")
    p.add_argument("--visits", type=at_least(0), default=1000, help="generated visits when no names are given")
    p.add_argument("--people", type=at_least(1), default=50, help="distinct generated visitors")
    p.add_argument("--parallelism", type=at_least(1), default=2)
    return p.parse_args(argv)


def build(env: rs.StreamEnvironment, args: argparse.Namespace) -> rs.DataStream:
    """Add the greeter to ``env``; returns the stream of greetings."""
    names = args.names or [f"person-{(i * 7) % args.people}" for i in range(args.visits)]
    sf = StatefulFunctionsJob(env, functions, name="greeter")
    # one ingress subtask keeps every person's visits in order
    sf.with_ingress(env.from_collection(names).set_parallelism(1), route)
    return sf.egress_stream(GREETS)


def report(greetings: list[str], args: argparse.Namespace) -> list[str]:
    """Print the first greetings (``python -m raystream.jobs.greeter`` and ``raystream run`` alike)."""
    for line in greetings[:20]:
        print(line)
    if len(greetings) > 20:
        print(f"... {len(greetings)} greetings in all")
    return greetings


def main(argv: list[str] | None = None) -> list[str]:
    args = parse_args(argv)
    env = rs.StreamEnvironment(parallelism=args.parallelism, flush_ms=5)
    return report(build(env, args).execute_and_collect("greeter"), args)


if __name__ == "__main__":
    main(sys.argv[1:])
