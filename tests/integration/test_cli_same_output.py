"""`raystream run JOB` and `python -m JOB` print the same thing: the job module's report()."""

from __future__ import annotations

import raystream.jobs.wordcount as wordcount
from raystream.jobs.cli import main


def _report_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip()]


def test_run_and_python_dash_m_print_the_same_report(capsys):
    wordcount.main(["--lines", "200", "--parallelism", "2"])
    by_module = _report_lines(capsys.readouterr().out)
    assert main(["run", "jobs/wordcount.py", "--", "--lines", "200", "--parallelism", "2"]) == 0
    by_cli = _report_lines(capsys.readouterr().out)
    assert by_module and by_module == by_cli
    assert by_cli[-1].endswith("words in all")
