"""A job module whose ``build()`` raises, or has the wrong signature, is a setup error of
``raystream run``: exit code 2 and one ``raystream: error:`` line naming the job, the
function and the exception, then only the job's own traceback lines (none of the CLI's).
No Ray is started for it."""

from __future__ import annotations

import textwrap

from raystream.jobs.cli import main


def _run(tmp_path, name: str, source: str, capsys) -> tuple[int, str]:
    job = tmp_path / name
    job.write_text(textwrap.dedent(source))
    code = main(["run", str(job)])
    return code, capsys.readouterr().err


def test_an_exception_in_build_is_one_error_line_then_the_jobs_own_frames(tmp_path, capsys):
    code, err = _run(tmp_path, "raises_in_build.py", """
        def helper():
            raise ValueError("boom in build")
        def build(env, args):
            helper()
    """, capsys)
    assert code == 2, err
    first, *rest = err.splitlines()
    assert first.startswith("raystream: error: build(env, args) of job "), err
    assert "raises_in_build.py" in first and "raised ValueError: boom in build" in first, err
    tail = "\n".join(rest)
    assert 'raises_in_build.py", line 5, in build' in tail and 'line 3, in helper' in tail, err
    assert "cli.py" not in err and "Traceback (most recent call last)" not in err, err


def test_a_build_with_the_wrong_signature_says_what_it_must_take(tmp_path, capsys):
    code, err = _run(tmp_path, "build_one_arg.py", """
        def build(env):
            return env.generate(3)
    """, capsys)
    assert code == 2, err
    assert err.startswith("raystream: error: build() of job ") and "build_one_arg.py" in err, err
    assert "must take (env, args)" in err and "build(env)" in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_an_exception_in_parse_args_is_a_setup_error_too(tmp_path, capsys):
    code, err = _run(tmp_path, "bad_parse.py", """
        def parse_args(argv):
            return int("x")
        def build(env, args):
            return None
    """, capsys)
    assert code == 2, err
    assert err.startswith("raystream: error: parse_args(argv) of job ") and "ValueError: invalid literal" in err, err
    assert "cli.py" not in err, err
