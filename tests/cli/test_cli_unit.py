"""The raystream CLI without Ray: job-module loading, argument handling, submit entrypoints, errors."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap
import types
import uuid
from pathlib import Path

import pytest

from raystream.jobs import cli
from raystream.jobs.cli import CliError, build_entrypoint, load_job_module, main

ROOT = Path(__file__).resolve().parents[2]


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def test_load_job_module_from_file_and_module_name(tmp_path):
    job = write(tmp_path / "myjob.py", """
        JOB_NAME = "my-job"
        def parse_args(argv):
            return {"argv": argv}
        def build(env, args):
            return None
    """)
    jm = load_job_module(str(job))
    assert jm.has_build and jm.job_name == "my-job" and jm.name == "myjob"
    assert jm.parse_args(["--x", "1"]) == {"argv": ["--x", "1"]}
    wc = load_job_module("raystream.jobs.wordcount")
    assert wc.has_build and wc.job_name == "wordcount"
    assert wc.parse_args(["--lines", "5"]).lines == 5


def test_job_args_without_parse_args_are_the_raw_list(tmp_path):
    jm = load_job_module(str(write(tmp_path / "j.py", "def build(env, args):\n    return None\n")))
    assert jm.parse_args(["a", "--b"]) == ["a", "--b"]


def test_functions_of_a_job_file_pickle_by_value(tmp_path):
    import cloudpickle

    jm = load_job_module(str(write(tmp_path / "byvalue.py", "def build(env, args):\n    return None\n")))
    blob = cloudpickle.dumps(jm.build)
    del sys.modules[jm.module.__name__]  # a worker does not have the module
    assert callable(cloudpickle.loads(blob))


def test_modules_next_to_a_job_file_are_shipped_by_value(tmp_path):
    """``raystream run jobs/job.py`` works as ``python jobs/job.py``: the modules the job file
    imports from its own directory (a module, a package, one imported only by ``build``)
    travel by value, as the file does; installed distributions (raystream) do not."""
    import cloudpickle

    tag = uuid.uuid4().hex[:8]
    write(tmp_path / f"helpers_{tag}.py", "def shout(w):\n    return w.upper()\n")
    (tmp_path / f"pkg_{tag}").mkdir()
    write(tmp_path / f"pkg_{tag}" / "__init__.py", "def twice(x):\n    return 2 * x\n")
    write(tmp_path / f"late_{tag}.py", "def late(x):\n    return -x\n")
    job = write(tmp_path / f"job_{tag}.py", f"""
        from helpers_{tag} import shout
        from pkg_{tag} import twice
        def build(env, args):
            import late_{tag}
            return None
    """)
    names = [f"helpers_{tag}", f"pkg_{tag}", f"late_{tag}"]
    try:
        jm = load_job_module(str(job))
        assert {names[0], names[1]} <= cloudpickle.list_registry_pickle_by_value()
        jm.build(None, None)
        assert cli.ship_local_modules(jm.directory) == [names[2]]
        blob = cloudpickle.dumps([jm.module.shout, jm.module.twice, sys.modules[names[2]].late])
        sys.path.remove(str(tmp_path))  # a worker has neither the directory nor the modules
        for name in names:
            del sys.modules[name]
        shout, twice, late = cloudpickle.loads(blob)
        assert (shout("a"), twice(2), late(3)) == ("A", 4, -3)
        shipped = cli.ship_local_modules(ROOT)  # (a checkout: raystream is an installed distribution)
        for name in shipped:
            cloudpickle.unregister_pickle_by_value(sys.modules[name])
        assert "raystream" not in shipped
    finally:
        for name in names:
            if name in cloudpickle.list_registry_pickle_by_value():
                cloudpickle.unregister_pickle_by_value(sys.modules.get(name) or types.ModuleType(name))
            sys.modules.pop(name, None)
        if str(tmp_path) in sys.path:
            sys.path.remove(str(tmp_path))


@pytest.mark.parametrize(
    "spec, message",
    [
        ("missing_job.py", "job file 'missing_job.py' does not exist"),
        ("no_such_pkg.no_such_module", "no job file or module 'no_such_pkg.no_such_module'"),
    ],
)
def test_missing_job_is_a_clear_error(spec, message):
    with pytest.raises(CliError, match=message.replace(".", r"\.")):
        load_job_module(spec)


def test_module_without_entry_point(tmp_path):
    with pytest.raises(CliError, match=r"has no entry point: define build\(env, args\)"):
        load_job_module(str(write(tmp_path / "empty.py", "X = 1\n")))


def test_import_error_in_job_file_shows_the_user_frame(tmp_path):
    job = write(tmp_path / "broken.py", "def f():\n    return 1 / 0\nf()\n")
    with pytest.raises(CliError) as err:
        load_job_module(str(job))
    text = str(err.value)
    assert "importing job file" in text and "broken.py" in text and "ZeroDivisionError" in text
    assert "importlib" not in text


def test_main_prints_one_error_line_and_exit_code_2(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope.py")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("raystream: error: job file") and "Traceback" not in err


def test_a_bad_setting_or_job_graph_is_a_setup_error_with_exit_code_2(tmp_path, capsys):
    assert main(["run", "jobs/wordcount.py", "--parallelism", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("raystream: error: ConfigError: parallelism must be a positive int") and "Traceback" not in err
    job = tmp_path / "bad_graph.py"
    job.write_text("def build(env, args):\n    return env.from_collection([1]).key_by(lambda x: x).aggregate(total=('v', 'sum'))\n")
    assert main(["run", str(job)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("raystream: error: GraphError: aggregate() needs key_by(<column name>)") and "Traceback" not in err


def test_unreachable_addresses_fail_fast():
    import socket
    import subprocess
    import sys

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    def cli(*args: str) -> subprocess.CompletedProcess:  # a fresh process, as a user's shell runs it
        return subprocess.run([sys.executable, "-m", "raystream.jobs.cli", *args], capture_output=True, text=True,
                              timeout=120)

    done = cli("list", "--address", f"127.0.0.1:{port}")
    assert done.returncode == 2 and "cannot reach the Ray cluster at" in done.stderr, done.stderr
    done = cli("status", "x", "--address", f"http://127.0.0.1:{port}")
    assert done.returncode == 2 and "cannot reach the Ray Job Submission API" in done.stderr, done.stderr
    done = cli("list", "--address", "nonsense")
    assert done.returncode == 2 and "bad Ray address 'nonsense'" in done.stderr, done.stderr


def test_submit_needs_an_http_address(capsys, monkeypatch):
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS", raising=False)
    assert main(["submit", "jobs/wordcount.py", "--address", "auto"]) == 2
    assert "submit needs the dashboard address" in capsys.readouterr().err


def test_stop_needs_a_savepoint_path(capsys):
    assert main(["stop", "job-1"]) == 2
    assert "stop needs --savepoint PATH" in capsys.readouterr().err


def _submit_args(**kw) -> argparse.Namespace:
    parser = cli.build_parser()
    words = ["submit", kw.pop("job"), *kw.pop("extra", [])]
    args = parser.parse_args(words)
    args.job_args = kw.pop("job_args", [])
    return args


def test_submit_entrypoint_is_relative_to_the_working_dir(tmp_path):
    (tmp_path / "pkg").mkdir()
    job = write(tmp_path / "pkg" / "j.py", "def build(env, args):\n    return None\n")
    args = _submit_args(job=str(job), extra=["--working-dir", str(tmp_path), "-p", "3",
                                             "--runtime-env", json.dumps({"env_vars": {"A": "1"}})],
                        job_args=["--n", "5 6"])
    entry, renv = build_entrypoint(args)
    assert entry == "python -m raystream.jobs.cli run pkg/j.py --address auto --parallelism 3 -- --n '5 6'"
    assert renv == {"env_vars": {"A": "1"}, "working_dir": str(tmp_path.resolve())}


def test_submit_defaults_working_dir_to_the_job_directory(tmp_path):
    job = write(tmp_path / "j.py", "def build(env, args):\n    return None\n")
    entry, renv = build_entrypoint(_submit_args(job=str(job)))
    assert entry == "python -m raystream.jobs.cli run j.py --address auto"
    assert renv["working_dir"] == str(tmp_path.resolve())


def test_submit_of_a_module_name_uploads_nothing():
    entry, renv = build_entrypoint(_submit_args(job="raystream.jobs.wordcount", job_args=["--lines", "10"]))
    assert entry == "python -m raystream.jobs.cli run raystream.jobs.wordcount --address auto -- --lines 10"
    assert renv == {}


def test_submit_errors(tmp_path):
    job = write(tmp_path / "j.py", "def build(env, args):\n    return None\n")
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(CliError, match="is outside the working dir"):
        build_entrypoint(_submit_args(job=str(job), extra=["--working-dir", str(other)]))
    with pytest.raises(CliError, match="--runtime-env must be JSON"):
        build_entrypoint(_submit_args(job=str(job), extra=["--runtime-env", "{nope"]))
    with pytest.raises(CliError, match="does not exist"):
        build_entrypoint(_submit_args(job=str(tmp_path / "gone.py")))


def test_python_dash_m_jobs_cli_and_console_script_help():
    for cmd in ([sys.executable, "-m", "raystream.jobs.cli", "--help"], [sys.executable, "-m", "jobs", "--help"]):
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        for word in ("run", "submit", "list", "status", "logs", "cancel", "savepoint", "stop"):
            assert word in out.stdout


def test_from_savepoint_to_a_wrong_path_is_a_setup_error_before_ray_starts(tmp_path, capsys):
    import ray

    connected = ray.is_initialized()
    missing = tmp_path / "no-such-savepoint"
    a_file = tmp_path / "a-file"
    a_file.write_text("not a savepoint")
    empty = tmp_path / "empty"
    empty.mkdir()
    for path, words in ((missing, "does not exist"), (a_file, "is a file"), (empty, "has no _metadata")):
        assert main(["run", "jobs/wordcount.py", "--from-savepoint", str(path)]) == 2
        err = capsys.readouterr().err
        assert "--from-savepoint" in err and words in err and "Traceback" not in err, err
    assert not missing.exists()  # nothing was created
    assert ray.is_initialized() == connected  # the CLI did not start (or stop) Ray for it


def test_a_closed_pipe_ends_quietly(monkeypatch, capsys):
    """`raystream status JOB | head`: the reader leaving is not an error."""
    import raystream.jobs.cli as cli

    def closed(args):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(cli, "cmd_list", closed)
    monkeypatch.setattr(cli.os, "dup2", lambda *a: None)  # keep pytest's stdout
    assert cli.main(["list"]) == 0
    assert "Traceback" not in capsys.readouterr().err


def test_checkpoint_summary_is_one_readable_line():
    from raystream.jobs.cli import checkpoint_summary

    line = checkpoint_summary({"completed": 12, "aborted": 1, "in_progress": 14,
                               "last": {"id": 13, "status": "COMPLETED", "duration_s": 0.21, "bytes": 3 * 1024 * 1024}})
    assert line == "12 completed, 1 aborted; last: #13 completed in 0.21 s (3.0 MiB); in progress: #14"
    assert checkpoint_summary(None) == "off"


def test_files_named_in_job_args_travel_with_the_job_or_fail_before_submission(tmp_path, monkeypatch):
    (tmp_path / "jobs").mkdir()
    job = write(tmp_path / "jobs" / "count.py", "def build(env, args):\n    return None\n")
    book = write(tmp_path / "book.txt", "to be or not to be\n")
    monkeypatch.chdir(tmp_path)
    # the job's folder travels by default: a file beside it is outside, said before submitting
    with pytest.raises(CliError, match="--working-dir") as err:
        build_entrypoint(_submit_args(job="jobs/count.py", job_args=["book.txt"]))
    assert "book.txt" in str(err.value)
    # with the folder holding both, the argument is rewritten relative to what travels
    entry, renv = build_entrypoint(_submit_args(job="jobs/count.py", extra=["--working-dir", "."],
                                                job_args=["book.txt", "--top", "3"]))
    assert entry == "python -m raystream.jobs.cli run jobs/count.py --address auto -- book.txt --top 3"
    assert renv["working_dir"] == str(tmp_path.resolve()) and book.exists() and job.exists()
