"""``raystream run JOB -- ARGS`` gives the job's own code the ``sys.argv`` that ``python JOB.py
ARGS`` gives it. Before, the job saw the raystream command's words: a ``main()``-only module
parsing ``sys.argv`` (``argparse``'s ``parse_args()`` without arguments, the usual script)
failed with ``__main__.py: error: unrecognized arguments: run job.py -- --n 5``; the job's
usage lines were headed ``__main__.py``; ``-- --help`` printed the job's help and then failed
with exit code 2 (``invalid arguments``); and a syntax error in the job file showed a frame
of the CLI. No Ray is started by these tests."""

from __future__ import annotations

import sys
import textwrap

from raystream.jobs.cli import main

SCRIPT = """
    import argparse, sys

    def main(argv=None):
        p = argparse.ArgumentParser()
        p.add_argument("--n", type=int, default=3)
        args = p.parse_args()              # as under `python script_job.py --n 5`: reads sys.argv
        print("N", args.n, "SCRIPT", sys.argv[0])

    if __name__ == "__main__":
        main()
"""

PARSED = """
    import argparse

    def parse_args(argv):
        p = argparse.ArgumentParser(description="sums of squares")
        p.add_argument("--n", type=int, default=3)
        return p.parse_args(argv)

    def build(env, args):
        raise AssertionError("build must not run")
"""


def _job(tmp_path, name: str, source: str) -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return str(path)


def test_a_main_only_job_reads_its_arguments_from_sys_argv_as_under_python(tmp_path, capsys):
    job = _job(tmp_path, "script_job.py", SCRIPT)
    argv_before = list(sys.argv)
    code = main(["run", job, "--", "--n", "5"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert f"N 5 SCRIPT {job}" in out.out, out.out + out.err
    assert sys.argv == argv_before  # (restored for the calling process)


def test_job_help_exits_0_and_usage_lines_name_the_job(tmp_path, capsys):
    job = _job(tmp_path, "parsed_job.py", PARSED)
    code = main(["run", job, "--", "--help"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert out.out.startswith("usage: parsed_job.py [-h] [--n N]") and "sums of squares" in out.out, out.out
    assert "error" not in out.err, out.err

    code = main(["run", job, "--", "--n", "many"])
    out = capsys.readouterr()
    assert code == 2
    assert "parsed_job.py: error: argument --n: invalid int value: 'many'" in out.err, out.err
    assert out.err.startswith("usage: parsed_job.py [-h]") and "__main__.py" not in out.err, out.err
    assert f"raystream: error: invalid arguments for job {job!r}" in out.err, out.err


def test_a_syntax_error_in_the_job_file_shows_the_file_not_the_cli(tmp_path, capsys):
    job = _job(tmp_path, "typo_job.py", "def build(env, args)\n    return None\n")
    assert main(["run", job]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"raystream: error: importing job file {job!r} failed:"), err
    assert 'typo_job.py", line 1' in err and "SyntaxError" in err, err
    assert "cli.py" not in err and "importlib" not in err, err
