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


def test_an_address_of_another_cluster_is_refused_in_a_connected_process(capsys):
    """Ray keeps one cluster connection per process: with the session's Ray connected, an
    explicit HOST:PORT of another cluster is an error naming both, never a silent use of the
    connected one (it listed the connected cluster's jobs)."""
    import socket

    import pytest

    from raystream.engine.errors import ConfigError
    from raystream.engine.ray_runtime import ensure_ray

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["list", "--address", f"127.0.0.1:{port}"]) == 2
    err = capsys.readouterr().err
    assert "already connected to" in err and f"127.0.0.1:{port}" in err
    with pytest.raises(ConfigError, match="already connected to"):
        ensure_ray(f"127.0.0.1:{port}")
    ensure_ray("auto")  # the connected cluster itself is fine
    assert main(["list"]) == 0


def test_run_ships_the_modules_next_to_the_job_file(tmp_path, capsys):
    """A job file importing a helper module next to it runs under ``raystream run`` from any
    directory (the workers have neither the directory nor the module: it travels by value;
    it failed with ModuleNotFoundError in the task executors)."""
    import sys
    import uuid

    import cloudpickle

    helper = f"helpers_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{helper}.py").write_text("def shout(w):\n    return w.upper()\n")
    job = tmp_path / "shout_job.py"
    job.write_text(f"from {helper} import shout\n\ndef build(env, args):\n"
                   "    return env.from_collection(['a', 'b', 'c']).map(shout)\n")
    try:
        assert main(["run", str(job), "--parallelism", "2"]) == 0
    finally:
        if helper in sys.modules:
            cloudpickle.unregister_pickle_by_value(sys.modules.pop(helper))
        if str(tmp_path) in sys.path:
            sys.path.remove(str(tmp_path))
    assert sorted(_report_lines(capsys.readouterr().out)) == ["A", "B", "C"]


def test_a_report_that_raises_is_one_line_naming_the_job_then_its_own_frames(tmp_path, capsys):
    """The job ran; the module's ``report()`` failed on its records. That is exit code 1 and a
    ``raystream:`` line saying the job finished but naming the function and the exception,
    then only the job file's traceback lines (it was a bare traceback through the CLI)."""
    job = tmp_path / "bad_report.py"
    job.write_text("def build(env, args):\n"
                   "    return env.from_collection([1, 2, 3])\n"
                   "\n"
                   "def report(records, args):\n"
                   "    total = sum(records)\n"
                   "    print('total', total / (total - 6))\n")
    assert main(["run", str(job)]) == 1
    err = capsys.readouterr().err
    last = [ln for ln in err.splitlines() if ln.startswith("raystream: job ")][-1]
    assert " finished in " in last and ", but report(records, args) of job " in last, err
    assert "bad_report.py" in last and "raised ZeroDivisionError: division by zero" in last, err
    assert 'bad_report.py", line 6, in report' in err, err
    assert "cli.py" not in err and "Traceback (most recent call last)" not in err, err
