"""The greeter example refuses visitor names that cannot be function ids as usage errors.

``python -m raystream.jobs.greeter Bob ""`` used to build and start the job, which failed in
its router with a traceback (``JobFailed: operator 'greeter-router' ... target_id must be a
non-empty string, got ''``); a name that is the function id is checked as an argument now,
like the counts (``tests/statefun/test_probe_sf_example_args.py``).
"""

from __future__ import annotations

import pytest

from raystream.jobs import greeter


@pytest.mark.parametrize(("argv", "message"), [
    (["Bob", ""], "argument names: a visitor's name is a function id: a function id must be a non-empty string, got ''"),
    (["x\udcff"], "a function id must be valid Unicode, got 'x\\udcff'"),  # (argv bytes that are not UTF-8)
])
def test_a_name_that_cannot_be_a_function_id_is_a_usage_error(argv, message, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        greeter.parse_args(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_names_that_are_ids_still_parse() -> None:
    assert greeter.parse_args(["Zoë", "渡辺", "a/b", "Zoë"]).names == ["Zoë", "渡辺", "a/b", "Zoë"]
