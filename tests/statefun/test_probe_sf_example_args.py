"""The example jobs refuse counts they cannot run with as usage errors.

``python -m raystream.jobs.greeter --people 0`` and ``python -m raystream.jobs.shopping_cart
--items 0`` used to start building the job and fail with a bare ``ZeroDivisionError``
traceback from the event generator.
"""

from __future__ import annotations

import pytest

from raystream.jobs import greeter, shopping_cart


@pytest.mark.parametrize(("module", "argv", "message"), [
    (greeter, ["--people", "0"], "argument --people: must be at least 1, got 0"),
    (greeter, ["--visits", "-1"], "argument --visits: must be at least 0, got -1"),
    (greeter, ["--parallelism", "0"], "argument --parallelism: must be at least 1, got 0"),
    (shopping_cart, ["--items", "0"], "argument --items: must be at least 1, got 0"),
    (shopping_cart, ["--stock", "-1"], "argument --stock: must be at least 0, got -1"),
    (shopping_cart, ["--users", "many"], "argument --users: expected an integer, got 'many'"),
])
def test_a_count_the_job_cannot_run_with_is_a_usage_error(module, argv, message, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        module.parse_args(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_the_edges_that_can_run_still_parse() -> None:
    assert greeter.parse_args(["--visits", "0", "--people", "1"]).people == 1
    args = shopping_cart.parse_args(["--users", "0", "--stock", "0", "--items", "1"])
    assert (args.users, args.stock, args.items) == (0, 0, 1)
    assert shopping_cart.generate_events(args.users, args.items) == []
