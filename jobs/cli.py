"""The ``raystream`` command line: run job modules locally or on a Ray cluster, and manage
running jobs (list, status, logs, cancel, savepoints).

Usage::

    raystream run JOB [--parallelism N] [--address auto|HOST:PORT|ray://HOST:10001]
                      [--checkpoint-dir URI] [--from-savepoint PATH] [-- JOB ARGS...]
    raystream submit JOB --address http://HEAD:8265 [--working-dir DIR] [--runtime-env JSON]
                      [--no-wait] [run options] [-- JOB ARGS...]
    raystream list                    [--address A]
    raystream status JOB              [--address A]
    raystream logs JOB                --address http://HEAD:8265 [--follow]
    raystream cancel JOB              [--address A]
    raystream savepoint JOB PATH      [--address A]
    raystream stop JOB --savepoint PATH [--address A]

``JOB`` for ``run``/``submit`` is a Python file (``jobs/wordcount.py``) or an importable
module name (``raystream.jobs.wordcount``). For the other commands it is a raystream job id (shown by
``list``, e.g. ``wordcount-1a2b3c4d``) or a Ray submission id (``raysubmit_...``).

``--address`` of the management commands is a Ray address (``auto``, ``HOST:6379``,
``ray://HOST:10001``; default ``$RAY_ADDRESS`` or ``auto``), or the dashboard's
``http://HEAD:8265``: then the command runs on the cluster as a short Ray job.

**Job-module convention** (see docs/cli.md): a module defines

* ``build(env, args) -> DataStream | None`` (required for ``run``'s job options): adds the
  job to the given :class:`~operators.StreamEnvironment`. A returned stream is collected and
  printed (or handed to ``report(records, args)`` when the module defines it); ``None``
  means the job ends in its own sinks.
* ``parse_args(argv) -> args`` (optional): turns the job arguments after ``--`` into the
  ``args`` given to ``build``; without it ``args`` is the list of strings.
* ``JOB_NAME = "..."`` (optional): the job's name (default: the module's file stem).
* ``main(argv)`` (optional): the standalone entry (``python JOB.py``); used by ``run`` when
  there is no ``build``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import inspect
import json
import os
import shlex
import socket
import sys
import threading
import time
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterator, Sequence

from raystream.engine.errors import ConfigError, JobCancelled, JobFailed, RaystreamError

__all__ = ["main", "load_job_module", "ship_local_modules", "JobModule", "CliError"]

EXIT_OK, EXIT_JOB_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class CliError(ConfigError):
    """A command cannot run: missing file, module without entry point, unreachable address..."""


# ============================================================================ job modules
class JobModule:
    """A loaded job module and its entry points (see the module docstring for the convention).

    Example:
        >>> jm = load_job_module("raystream.jobs.wordcount")      # doctest: +SKIP
        >>> jm.name, jm.has_build                       # doctest: +SKIP
        ('wordcount', True)
    """

    def __init__(self, module: ModuleType, name: str, source: str) -> None:
        self.module = module
        self.name = name
        self.source = source
        #: the directory of a job loaded from a file (its modules travel by value), else None
        self.directory: Path | None = None
        build = getattr(module, "build", None)
        main = getattr(module, "main", None)
        self.build: Callable[..., Any] | None = build if callable(build) else None
        self.main: Callable[..., Any] | None = main if callable(main) else None
        if self.build is None and self.main is None:
            raise CliError(
                f"job module {source!r} has no entry point: define build(env, args) returning the "
                "stream to collect (or None), or main(argv); see docs/cli.md"
            )

    @property
    def has_build(self) -> bool:
        return self.build is not None

    @property
    def job_name(self) -> str:
        return str(getattr(self.module, "JOB_NAME", None) or self.name)

    def parse_args(self, argv: list[str]) -> Any:
        """The job's ``args``: ``parse_args(argv)`` when the module has one, else ``argv``."""
        parse = getattr(self.module, "parse_args", None)
        if not callable(parse):
            return list(argv)
        try:
            return self.call("parse_args(argv)", parse, list(argv))
        except SystemExit as exc:  # argparse already printed its message (or the help asked for)
            if exc.code in (None, 0):  # `-- --help`: the job's help is printed, nothing went wrong
                raise
            raise CliError(f"invalid arguments for job {self.source!r}: {argv!r}") from exc

    def call_build(self, env: Any, args: Any) -> Any:
        """``build(env, args)``; a build that cannot take those arguments, or that raises (other
        than a raystream ``ConfigError``, itself a setup error), is a :class:`CliError`."""
        assert self.build is not None
        try:
            inspect.signature(self.build).bind(env, args)
        except TypeError:
            raise CliError(
                f"build() of job {self.source!r} must take (env, args); it is defined as "
                f"build{inspect.signature(self.build)}"
            ) from None
        except ValueError:  # no signature to read (a builtin or C callable): just call it
            pass
        return self.call("build(env, args)", self.build, env, args)

    def call(self, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        """Call the job's ``fn``; an exception it raises becomes a :class:`CliError` naming the
        job, ``what`` and the exception, followed by the job's own traceback frames (not the
        CLI's). raystream's own errors (``ConfigError``...) and ``SystemExit`` pass through."""
        try:
            return fn(*args)
        except RaystreamError:
            raise
        except Exception as exc:
            frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename != __file__]
            where = "".join(traceback.format_list(frames)).rstrip()
            raise CliError(
                f"{what} of job {self.source!r} raised {type(exc).__name__}: {exc}"
                + (f"\n{where}" if where else "")
            ) from exc


def _is_path(spec: str) -> bool:
    return spec.endswith(".py") or os.sep in spec or "/" in spec or Path(spec).is_file()


def load_job_module(spec: str) -> JobModule:
    """Import a job module from a file path (``jobs/wordcount.py``) or a module name.

    A module loaded from a file has its functions shipped to Ray workers by value, so the
    file does not need to be importable on the cluster.

    Raises:
        CliError: the file or module does not exist, fails to import, or has no entry point.
    """
    import cloudpickle

    if _is_path(spec):
        path = Path(spec).expanduser()
        if not path.is_file():
            hint = f" (current directory: {os.getcwd()!r})" if not path.is_absolute() else ""
            raise CliError(f"job file {spec!r} does not exist{hint}")
        if path.suffix != ".py":
            raise CliError(f"job file {spec!r} is not a Python file (.py)")
        path = path.resolve()
        mod_name = f"raystream_job_{path.stem}"
        import_spec = importlib.util.spec_from_file_location(mod_name, path)
        if import_spec is None or import_spec.loader is None:
            raise CliError(f"cannot load job file {spec!r}")
        module = importlib.util.module_from_spec(import_spec)
        sys.modules[mod_name] = module
        if str(path.parent) not in sys.path:
            sys.path.insert(0, str(path.parent))  # sibling helper modules import as in `python JOB.py`
        try:
            import_spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(mod_name, None)
            raise CliError(f"importing job file {spec!r} failed:\n{_user_traceback(exc)}") from exc
        cloudpickle.register_pickle_by_value(module)
        jm = JobModule(module, path.stem, spec)
        jm.directory = path.parent
        ship_local_modules(path.parent)
        return jm
    try:
        module = importlib.import_module(spec)
    except ModuleNotFoundError as exc:
        if exc.name and spec.startswith(exc.name):
            raise CliError(f"no job file or module {spec!r}: pass a path to a .py file or an importable module") from exc
        raise CliError(f"importing job module {spec!r} failed:\n{_user_traceback(exc)}") from exc
    except Exception as exc:
        raise CliError(f"importing job module {spec!r} failed:\n{_user_traceback(exc)}") from exc
    return JobModule(module, spec.rsplit(".", 1)[-1], spec)


def ship_local_modules(directory: Path) -> list[str]:
    """Have the modules imported from ``directory`` (a job file's own: ``from helpers import
    parse`` next to it) pickled by value, as the job file is, so that they need not be
    importable where the job runs: ``raystream run jobs/job.py`` then works as ``python
    jobs/job.py`` does, for which Ray puts the script's directory on its workers' path. Returns
    the top-level names newly shipped. A module of an installed distribution (raystream itself
    in a checkout, say) is left to be imported by reference.

    Example:
        >>> ship_local_modules(Path("/nonexistent"))
        []
    """
    import importlib.metadata

    import cloudpickle

    root = os.path.realpath(directory) + os.sep
    registered = cloudpickle.list_registry_pickle_by_value()
    local = []
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if "." in name or name in registered or not file or not os.path.realpath(file).startswith(root):
            continue
        local.append((name, module))
    if not local:
        return []
    installed = importlib.metadata.packages_distributions()
    shipped = []
    for name, module in local:
        if name not in installed:
            cloudpickle.register_pickle_by_value(module)
            shipped.append(name)
    return shipped


def _user_traceback(exc: BaseException) -> str:
    """The traceback without the importlib frames."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if "importlib" not in f.filename and f.filename != __file__]
    text = "".join(traceback.format_list(frames)) + "".join(traceback.format_exception_only(type(exc), exc))
    return text.rstrip()


# ============================================================================ addresses
def _check_reachable(address: str | None) -> None:
    """Fail fast (seconds, not minutes) when ``HOST:PORT`` / ``ray://HOST:PORT`` does not answer."""
    if not address or address in ("auto", "local"):
        return
    target = address.split("://", 1)[-1].split("/", 1)[0]
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise CliError(f"bad Ray address {address!r}: use auto, HOST:PORT, ray://HOST:10001 or http://HOST:8265")
    try:
        with socket.create_connection((host, int(port)), timeout=3):
            pass
    except OSError as exc:
        raise CliError(
            f"cannot reach the Ray cluster at {address!r} ({exc}); is it running? "
            "(`ray start --head` starts one; `ray status` checks it)"
        ) from exc


def _connect(address: str | None) -> None:
    """Connect this process to Ray as a driver (``None``: ``$RAY_ADDRESS`` or ``auto``)."""
    import ray

    from raystream.engine.ray_runtime import check_same_cluster, ensure_ray

    if ray.is_initialized():
        try:
            check_same_cluster(address)
        except RaystreamError as exc:
            raise CliError(str(exc)) from exc
        return
    address = address or os.environ.get("RAY_ADDRESS") or "auto"
    _check_reachable(address)
    try:
        ensure_ray(address, log_to_driver=False)
    except RaystreamError as exc:
        raise CliError(f"{exc}; or pass another --address (auto, HOST:PORT or http://HEAD:8265)") from exc
    except Exception as exc:  # ray.init raises several types for a bad address
        raise CliError(f"cannot connect to the Ray cluster at {address!r}: {type(exc).__name__}: {exc}") from exc


def _is_http(address: str | None) -> bool:
    return bool(address) and address.lower().startswith(("http://", "https://"))  # type: ignore[union-attr]


def _check_dashboard_address(address: str) -> None:
    """``run --address http://...``: a setup error saying to use the GCS address or ``submit``."""
    from raystream.engine.ray_runtime import refuse_dashboard_address

    try:
        refuse_dashboard_address(address)
    except ConfigError as exc:
        raise CliError(f"run --address: {exc}") from None


def _dashboard_address(args: argparse.Namespace) -> str | None:
    """The address of ``submit`` and ``logs``: ``--address``, ``$RAY_API_SERVER_ADDRESS``, or
    ``$RAY_ADDRESS`` when it is an HTTP address (as ``ray job submit`` reads it)."""
    ray_address = os.environ.get("RAY_ADDRESS")
    return args.address or os.environ.get("RAY_API_SERVER_ADDRESS") or (ray_address if _is_http(ray_address) else None)


def _submission_client(address: str) -> Any:
    from ray.job_submission import JobSubmissionClient

    from raystream.engine.ray_runtime import auth_hint, is_auth_error, prepare_cluster_auth

    prepare_cluster_auth()
    try:
        return JobSubmissionClient(address)
    except Exception as exc:  # ConnectionError, RuntimeError, ValueError depending on the failure
        if is_auth_error(exc):
            raise CliError(f"the Ray cluster at {address!r} refused this client: authentication failed; "
                           f"{auth_hint(address)}") from None
        raise CliError(
            f"cannot reach the Ray Job Submission API at {address!r} ({type(exc).__name__}: {exc}); "
            "is the head running with its dashboard (`ray start --head --dashboard-host 0.0.0.0`)?"
        ) from exc


# ============================================================================ run
def _execute_options(args: argparse.Namespace) -> list[str]:
    """The run options of ``args`` as command-line words (forwarded by ``submit``)."""
    out: list[str] = []
    if args.parallelism is not None:
        out += ["--parallelism", str(args.parallelism)]
    if args.checkpoint_dir:
        out += ["--checkpoint-dir", args.checkpoint_dir, "--checkpoint-interval", str(args.checkpoint_interval)]
    if args.from_savepoint:
        out += ["--from-savepoint", args.from_savepoint]
    if args.name:
        out += ["--name", args.name]
    if args.limit is not None:
        out += ["--limit", str(args.limit)]
    return out


def _enable_checkpointing(env: Any, uri: str, interval_ms: int) -> None:
    method = getattr(env, "enable_checkpointing", None)
    if method is None:
        raise CliError("--checkpoint-dir needs StreamEnvironment.enable_checkpointing(), which this raystream lacks")
    params = inspect.signature(method).parameters
    if "checkpoint_dir" not in params:
        raise CliError("this raystream's enable_checkpointing() takes no checkpoint_dir; --checkpoint-dir is unsupported")
    method(interval_ms, checkpoint_dir=uri)


def _submit(env: Any, name: str, from_savepoint: str | None) -> Any:
    if from_savepoint is None:
        return env.execute_async(name)
    if "from_savepoint" not in inspect.signature(env.execute_async).parameters:
        raise CliError("--from-savepoint needs execute_async(..., from_savepoint=), which this raystream lacks")
    return env.execute_async(name, from_savepoint=from_savepoint)


def _print_records(records: list, limit: int | None) -> None:
    shown = records if not limit else records[:limit]
    for r in shown:
        print(r)
    if len(shown) < len(records):
        print(f"... {len(records) - len(shown)} more records (--limit 0 prints all)", file=sys.stderr)


@contextlib.contextmanager
def _job_argv(job: str, job_args: Sequence[str]) -> Iterator[None]:
    """``sys.argv`` as ``python JOB.py ARGS`` (or ``python -m JOB ARGS``) gives it to the job's
    own code, while that code runs: a module that reads ``sys.argv`` (``argparse``'s
    ``parse_args()`` without arguments, at import or in ``main``) gets its job arguments, and
    ``argparse`` names the job in its usage line, not the raystream command's words.

    Example:
        >>> with _job_argv("jobs/top.py", ["--n", "5"]):
        ...     sys.argv
        ['jobs/top.py', '--n', '5']
    """
    saved = sys.argv
    sys.argv = [job, *job_args]
    try:
        yield
    finally:
        sys.argv = saved


def cmd_run(args: argparse.Namespace) -> int:
    with _job_argv(args.job, args.job_args):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    jm = load_job_module(args.job)
    job_args = jm.parse_args(args.job_args)
    if args.from_savepoint:  # a setup error: exit 2 before Ray starts, and create nothing
        from raystream.checkpoint.storage import check_savepoint

        try:
            check_savepoint(args.from_savepoint)
        except RaystreamError as exc:
            raise CliError(f"--from-savepoint: {exc}") from None
    if args.address:
        _check_dashboard_address(args.address)
        _check_reachable(args.address)
    if not jm.has_build:
        given = [o for o, v in (("--parallelism", args.parallelism), ("--checkpoint-dir", args.checkpoint_dir),
                                ("--from-savepoint", args.from_savepoint)) if v is not None]
        if given:
            raise CliError(f"job module {args.job!r} has only main(argv); {', '.join(given)} need build(env, args)")
        if args.address:
            os.environ["RAYSTREAM_ADDRESS"] = args.address
        if args.progress:
            os.environ["RAYSTREAM_PROGRESS"] = "1"
        assert jm.main is not None
        jm.main(list(args.job_args))
        return EXIT_OK

    import raystream as rs
    from raystream.operators.sinks import collected_records

    parallelism = args.parallelism
    if parallelism is None:
        from_args = getattr(job_args, "parallelism", None)
        parallelism = from_args if isinstance(from_args, int) and from_args > 0 else 1
    env = rs.StreamEnvironment(parallelism=parallelism, address=args.address)
    if args.checkpoint_dir:
        _enable_checkpointing(env, args.checkpoint_dir, args.checkpoint_interval)
    stream = jm.call_build(env, job_args)
    if jm.directory is not None:  # (modules of its directory that build() imported)
        ship_local_modules(jm.directory)
    sink_uid = None
    if stream is not None:
        if not isinstance(stream, rs.DataStream):
            raise CliError(f"build() of {args.job!r} must return a DataStream or None, got {type(stream).__name__}")
        sink_uid = stream.collect().node.stable_uid(env.graph)
    name = args.name or jm.job_name
    t0 = time.monotonic()
    try:
        client = _submit(env, name, args.from_savepoint)
    except RaystreamError as exc:
        raise CliError(str(exc)) from exc
    job_id = client.job_id
    _info(f"job {name!r} started as {job_id} in {time.monotonic() - t0:.1f}s (raystream status {job_id})")
    try:
        result = client.wait(progress=args.progress)
    except KeyboardInterrupt:
        _info(f"interrupted: cancelling job {job_id}")
        client.cancel()
        with contextlib.suppress(BaseException):
            client.wait(timeout=10)
        return EXIT_INTERRUPTED
    except JobCancelled as exc:
        _info(f"job {job_id} was cancelled: {exc}")
        return EXIT_JOB_FAILED
    except JobFailed as exc:
        _info(f"job {job_id} failed: {exc}")
        if exc.cause:
            print(exc.cause, file=sys.stderr)
        return EXIT_JOB_FAILED
    extra = f", savepoint {result.savepoint}" if getattr(result, "savepoint", None) else ""
    if sink_uid is not None:
        records = collected_records(result.sink_results.get(sink_uid, []))
        report = getattr(jm.module, "report", None)
        if callable(report):
            try:
                jm.call("report(records, args)", report, records, job_args)
            except (CliError, RaystreamError) as exc:  # the job's own code failed after the job ended
                _info(f"job {job_id} finished in {result.duration_s:.1f}s{extra}, but {exc}")
                return EXIT_JOB_FAILED
        else:
            _print_records(records, args.limit)
    _info(f"job {job_id} finished in {result.duration_s:.1f}s{extra}")
    return EXIT_OK


def _info(msg: str) -> None:
    print(f"raystream: {msg}", file=sys.stderr, flush=True)


# ============================================================================ submit / logs
def _runtime_env(args: argparse.Namespace) -> dict:
    env: dict = {}
    if args.runtime_env:
        text = args.runtime_env
        if Path(text).is_file():
            text = Path(text).read_text()
        try:
            env = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CliError(f"--runtime-env must be JSON or a JSON file, got {args.runtime_env!r}: {exc}") from exc
        if not isinstance(env, dict):
            raise CliError(f"--runtime-env must be a JSON object, got {env!r}")
    return env


def _check_syntax(path: Path, spec: str) -> None:
    """A job file that is not valid Python fails ``submit`` before anything is uploaded (on the
    cluster its import failed only after the upload and the runtime env's setup, and the error
    named the file by its path in the cluster's temp dir). Only the syntax is checked: the
    job's imports may exist on the cluster alone."""
    try:
        compile(path.read_bytes(), str(path), "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as exc:  # (ValueError: null bytes in the source)
        detail = "".join(traceback.format_exception_only(type(exc), exc)).rstrip()
        raise CliError(f"job file {spec!r} is not valid Python; nothing was submitted:\n{detail}") from None


def build_entrypoint(args: argparse.Namespace) -> tuple[str, dict]:
    """The cluster-side command (``python -m raystream.jobs.cli run ... --address auto``) and runtime env."""
    runtime_env = _runtime_env(args)
    job = args.job
    working_dir = args.working_dir
    if _is_path(job):
        path = Path(job).expanduser()
        if not path.is_file():
            raise CliError(f"job file {job!r} does not exist (current directory: {os.getcwd()!r})")
        _check_syntax(path, job)
        base = Path(working_dir or runtime_env.get("working_dir") or path.parent).resolve()
        try:
            job = path.resolve().relative_to(base).as_posix()
        except ValueError as exc:
            raise CliError(f"job file {args.job!r} is outside the working dir {str(base)!r}; pass --working-dir") from exc
        working_dir = str(base)
    if working_dir:
        if not Path(working_dir).is_dir():
            raise CliError(f"--working-dir {working_dir!r} is not a directory")
        runtime_env.setdefault("working_dir", str(Path(working_dir).resolve()))
    words = ["python", "-m", "raystream.jobs.cli", "run", job, "--address", "auto", *_execute_options(args)]
    if args.job_args:
        words += ["--", *_travelling_args(args.job_args, runtime_env.get("working_dir"))]
    return shlex.join(words), runtime_env


def _travelling_args(job_args: list[str], working_dir: str | None) -> list[str]:
    """Job arguments naming local files or folders, rewritten relative to the working dir that
    Ray uploads (the job runs there on the cluster); one outside it fails before submission."""
    out = []
    for arg in job_args:
        path = Path(arg).expanduser()
        if arg.startswith("-") or "://" in arg or not path.exists():
            out.append(arg)
            continue
        resolved = path.resolve()
        base = Path(working_dir).resolve() if working_dir else None
        if base is not None and (resolved == base or base in resolved.parents):
            out.append(resolved.relative_to(base).as_posix() or ".")
            continue
        where = f"the working dir {str(base)!r}" if base is not None else "no working dir"
        raise CliError(
            f"job argument {arg!r} is a local path ({str(resolved)!r}) outside {where}, so it would not travel "
            "with the job; pass --working-dir with a folder holding the job and its files (e.g. --working-dir .)"
        )
    return out


def cmd_submit(args: argparse.Namespace) -> int:
    address = _dashboard_address(args)
    if not _is_http(address):
        raise CliError(f"submit needs the dashboard address, e.g. --address http://HEAD:8265 (got {address!r})")
    entrypoint, runtime_env = build_entrypoint(args)
    client = _submission_client(address)  # type: ignore[arg-type]
    try:
        sid = client.submit_job(
            entrypoint=entrypoint,
            runtime_env=runtime_env or None,
            submission_id=args.submission_id,
            metadata={"raystream_job": args.name or Path(args.job).stem.rsplit(".", 1)[-1]},
        )
    except Exception as exc:
        raise CliError(f"submitting {args.job!r} to {address!r} failed: {exc}") from exc
    _info(f"submitted {args.job!r} as Ray job {sid} (raystream logs {sid} --address {address})")
    if args.no_wait:
        print(sid)
        return EXIT_OK
    status = _follow_logs(client, sid)
    _info(f"Ray job {sid} {status}")
    return EXIT_OK if status == "SUCCEEDED" else EXIT_JOB_FAILED


_TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


def _follow_logs(client: Any, sid: str, out: Any = None) -> str:
    """Print a submission's logs as they grow until it ends; returns its final status."""
    out = out or sys.stdout
    printed = 0
    while True:
        status = str(client.get_job_status(sid).value)
        logs = client.get_job_logs(sid)
        if len(logs) > printed:
            out.write(logs[printed:])
            out.flush()
            printed = len(logs)
        if status in _TERMINAL:
            return status
        time.sleep(0.5)


def _find_submission(client: Any, job: str) -> str | None:
    """The submission id for a submission id or a raystream job id (via its master actor)."""
    try:
        client.get_job_info(job)
        return job
    except Exception:  # not a submission id
        pass
    # A job master serves the jobs of one driver in turn, so the job id is not in any actor
    # name: find the running submission whose driver announced it ("started as <job id>").
    for info in client.list_jobs():
        if info.submission_id and str(info.status.value) == "RUNNING" and not (info.metadata or {}).get("raystream_relay"):
            try:
                if f"started as {job} " in client.get_job_logs(info.submission_id):
                    return info.submission_id
            except Exception:  # noqa: BLE001 - a submission that ended meanwhile
                continue
    return None


def cmd_logs(args: argparse.Namespace) -> int:
    address = _dashboard_address(args)
    if not _is_http(address):
        raise CliError(f"logs needs the dashboard address, e.g. --address http://HEAD:8265 (got {address!r})")
    client = _submission_client(address)  # type: ignore[arg-type]
    sid = _find_submission(client, args.job)
    if sid is None:
        raise CliError(f"no Ray job or running raystream job {args.job!r} at {address!r}; `raystream list` shows them")
    if args.follow:
        status = _follow_logs(client, sid)
        return EXIT_OK if status == "SUCCEEDED" else EXIT_JOB_FAILED
    sys.stdout.write(client.get_job_logs(sid))
    return EXIT_OK


# ============================================================================ management
def _relay(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Run this management command on the cluster as a short Ray job (for http:// addresses)."""
    client = _submission_client(args.address)
    words = ["python", "-m", "raystream.jobs.cli", *argv, "--address", "auto"]
    try:
        sid = client.submit_job(entrypoint=shlex.join(words), metadata={"raystream_relay": "1"})
    except Exception as exc:  # noqa: BLE001 - the Job Submission API refused: say why, no traceback
        raise CliError(f"the Ray cluster at {args.address!r} could not run `raystream {' '.join(argv)}` as a Ray "
                       f"job: {type(exc).__name__}: {exc}") from None
    status = _follow_logs(client, sid, _StripRayLines(sys.stdout))
    return EXIT_OK if status == "SUCCEEDED" else EXIT_JOB_FAILED


class _StripRayLines:
    """Drops Ray's job-supervisor lines from relayed output."""

    def __init__(self, out: Any) -> None:
        self.out = out

    def write(self, text: str) -> None:
        keep = [ln for ln in text.splitlines(True)
                if "job_manager.py" not in ln and not ln.startswith("Running entrypoint for job")]
        self.out.write("".join(keep))

    def flush(self) -> None:
        self.out.flush()


def _running_jobs() -> dict[str, Any]:
    """``{job id: attached JobClient}`` for every raystream job running on the cluster."""
    from raystream.engine.client import JobClient

    return JobClient.list_running()


def _master(job: str) -> Any:
    """An attached :class:`JobClient` for running job ``job``."""
    from raystream.engine.client import JobClient

    try:
        return JobClient.attach(job)
    except RaystreamError as exc:
        raise CliError(str(exc)) from None


def _call(client: Any, method: str, *a: Any, timeout: float = 30.0) -> Any:
    """Call a JobClient method, waiting at most ``timeout`` seconds for it; raystream errors
    become CLI errors, and a call that does not return in time a RaystreamError (exit 1)
    saying what may still happen (the job keeps running; a savepoint may still be written)."""
    outcome: dict[str, Any] = {}

    def call() -> None:
        try:
            outcome["value"] = getattr(client, method)(*a)
        except BaseException as exc:  # noqa: BLE001 - handed to the calling thread
            outcome["error"] = exc

    # (a daemon thread: a master that never answers must not keep the command from exiting)
    worker = threading.Thread(target=call, name=f"raystream-cli-{method}", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        job = getattr(client, "name", None) or "?"
        if "savepoint" in method:
            raise RaystreamError(f"{method} of job {job!r} did not complete within {timeout:g} s (--timeout); "
                                 f"it may still complete: pass a larger --timeout to wait longer")
        raise RaystreamError(f"{method} of job {job!r} did not answer within {timeout:g} s; "
                             f"its job master may be busy or stuck")
    error = outcome.get("error")
    if isinstance(error, RaystreamError):
        raise CliError(f"{method} failed: {error}") from None
    if error is not None:
        raise error
    return outcome.get("value")


def cmd_list(args: argparse.Namespace) -> int:
    if _is_http(args.address):
        client = _submission_client(args.address)
        # (Ray also lists every driver that connected directly, as a job of type DRIVER without a
        # submission id: not a submission, and no id that `logs` or `cancel` could use)
        jobs = [j for j in client.list_jobs()
                if j.submission_id and not (j.metadata or {}).get("raystream_relay")]
        print(f"{'SUBMISSION ID':<32} {'STATUS':<10} ENTRYPOINT")
        for j in sorted(jobs, key=lambda j: j.start_time or 0):
            print(f"{j.submission_id:<32} {str(j.status.value):<10} {j.entrypoint}")
        print()
        return _relay(args, ["list"])
    _connect(args.address)
    rows = []
    for job_id, master in sorted(_running_jobs().items()):
        try:
            info = _call(master, "info", timeout=10)
        except RaystreamError:  # (CliError too)
            continue  # ended between the listing and the call, or stopped answering as list_running() skips it
        if info.get("job_id") != job_id:
            continue  # that master has moved on to another job
        rows.append((job_id, info.get("name", ""), info.get("status", "?"), info.get("restarts", 0),
                     time.time() - (info.get("started") or time.time())))
    print(f"{'JOB ID':<32} {'NAME':<20} {'STATUS':<10} {'RESTARTS':>8} {'UPTIME':>8}")
    for job_id, name, status, restarts, up in rows:
        print(f"{job_id:<32} {name:<20} {status:<10} {restarts:>8} {up:>7.0f}s")
    if not rows:
        print("(no running raystream jobs)")
    return EXIT_OK


def checkpoint_summary(stats: dict | None) -> str:
    """One line on a job's checkpoints, e.g. ``12 completed, 1 aborted; last: #13 completed in
    0.21 s (524 B); in progress: none``.

    Example:
        >>> checkpoint_summary({"completed": 2, "aborted": 0, "in_progress": None,
        ...     "last": {"id": 2, "status": "COMPLETED", "duration_s": 0.5, "bytes": 2048}})
        '2 completed, 0 aborted; last: #2 completed in 0.50 s (2.0 KiB); in progress: none'
    """
    if not stats:
        return "off"
    out = f"{stats.get('completed', 0)} completed, {stats.get('aborted', 0)} aborted"
    last = stats.get("last")
    if last:
        if last.get("status") == "COMPLETED":
            out += f"; last: #{last['id']} completed in {last.get('duration_s', 0):.2f} s ({_size(last.get('bytes', 0))})"
        else:
            out += f"; last: #{last['id']} aborted ({last.get('reason', '?')})"
    progress = stats.get("in_progress")
    out += f"; in progress: {'#' + str(progress) if progress else 'none'}"
    return out


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def cmd_status(args: argparse.Namespace) -> int:
    if _is_http(args.address):
        client = _submission_client(args.address)
        if args.job.startswith("raysubmit_") or _submission_exists(client, args.job):
            info = client.get_job_info(args.job)
            print(f"Ray job {args.job}: {info.status.value}  {info.message or ''}".rstrip())
            print(f"entrypoint: {info.entrypoint}")
            return EXIT_OK
        return _relay(args, ["status", args.job])
    from raystream.engine.observability import operator_table

    _connect(args.address)
    master = _master(args.job)
    info = _call(master, "info")
    first = _call(master, "metrics")
    t0 = time.monotonic()
    time.sleep(args.interval)  # two samples: rates over the interval
    metrics = _call(master, "metrics")
    print(f"job {info.get('job_id')} ({info.get('name')}): {info.get('status')}, "
          f"restarts {info.get('restarts', 0)}, up {time.time() - (info.get('started') or time.time()):.0f}s")
    if info.get("error"):
        print(f"error: {info['error']}")
    print(f"checkpoints: {checkpoint_summary(info.get('checkpoints'))}")
    order = {name: i for i, name in enumerate(info.get("operators") or [])}
    rows = sorted(operator_table(metrics, first, time.monotonic() - t0), key=lambda r: order.get(r["operator"], len(order)))
    print(f"{'OPERATOR':<28} {'SUBTASKS':>8} {'RECORDS IN':>12} {'IN/S':>10} {'RECORDS OUT':>12} {'OUT/S':>10} "
          f"{'BYTES OUT':>12} {'BACKPRESSURE':>12}")
    for r in rows:
        rate_in = f"{r['in_per_s']:.0f}" if r.get("in_per_s") is not None else "-"
        rate_out = f"{r['out_per_s']:.0f}" if r.get("out_per_s") is not None else "-"
        print(f"{r['operator'][:28]:<28} {r['subtasks']:>8} {r['records_in']:>12} {rate_in:>10} {r['records_out']:>12} "
              f"{rate_out:>10} {_size(r['bytes_out']):>12} {r['backpressure_s']:>11.2f}s")
    if args.verbose and info.get("graph"):
        print(info["graph"])
    return EXIT_OK


def _submission_exists(client: Any, sid: str) -> bool:
    try:
        client.get_job_info(sid)
        return True
    except Exception:
        return False


def cmd_cancel(args: argparse.Namespace) -> int:
    if _is_http(args.address):
        client = _submission_client(args.address)
        if _submission_exists(client, args.job):
            client.stop_job(args.job)
            _info(f"stopping Ray job {args.job}")
            return EXIT_OK
        return _relay(args, ["cancel", args.job])
    _connect(args.address)
    _call(_master(args.job), "cancel")
    _info(f"cancelled job {args.job}")
    return EXIT_OK


def cmd_savepoint(args: argparse.Namespace) -> int:
    if _is_http(args.address):
        return _relay(args, ["savepoint", args.job, args.path])
    _connect(args.address)
    written = _call(_master(args.job), "savepoint", args.path, timeout=args.timeout)
    print(written)
    return EXIT_OK


def cmd_stop(args: argparse.Namespace) -> int:
    if not args.savepoint:
        raise CliError("stop needs --savepoint PATH (use `raystream cancel` to stop without one)")
    if _is_http(args.address):
        return _relay(args, ["stop", args.job, "--savepoint", args.savepoint])
    _connect(args.address)
    written = _call(_master(args.job), "stop_with_savepoint", args.savepoint, timeout=args.timeout)
    print(written)
    return EXIT_OK


# ============================================================================ parser
def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("job", help="job file (path/to/job.py) or module name (raystream.jobs.wordcount)")
    p.add_argument("--parallelism", "-p", type=int, help="default parallelism (default: the job's args.parallelism or 1)")
    p.add_argument("--checkpoint-dir", help="enable checkpointing into this directory or URI (s3://...)")
    p.add_argument("--checkpoint-interval", type=int, default=10_000, metavar="MS", help="checkpoint interval (ms)")
    p.add_argument("--from-savepoint", metavar="PATH", help="start from a savepoint")
    p.add_argument("--name", help="job name (default: the module's JOB_NAME or file stem)")
    p.add_argument("--limit", type=int, help="print at most N collected records (0: all; default 100)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``raystream`` command."""
    parser = argparse.ArgumentParser(prog="raystream", description="Run and manage raystream jobs.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run a job module (embedded local Ray unless --address)")
    _add_run_options(p)
    p.add_argument("--address", help="Ray to use: auto, HOST:PORT or ray://HOST:10001 (default: embedded local Ray)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="live progress line on stderr (default: when stderr is a terminal)")
    p.set_defaults(fn=cmd_run)

    p = sub.add_parser("submit", help="submit a job module to a cluster through Ray's Job Submission API")
    _add_run_options(p)
    p.add_argument("--address", help="dashboard address http://HEAD:8265 (default: $RAY_API_SERVER_ADDRESS, or an http:// $RAY_ADDRESS)")
    p.add_argument("--working-dir", help="directory uploaded with the job (default: the job file's directory)")
    p.add_argument("--runtime-env", help="Ray runtime env as JSON or a JSON file")
    p.add_argument("--submission-id", help="Ray submission id (default: generated)")
    p.add_argument("--no-wait", action="store_true", help="print the submission id and return")
    p.set_defaults(fn=cmd_submit)

    address_help = "Ray address (auto, HOST:PORT, ray://...) or dashboard http://HEAD:8265 (default: $RAY_ADDRESS or auto)"
    p = sub.add_parser("list", help="list running raystream jobs")
    p.add_argument("--address", help=address_help)
    p.set_defaults(fn=cmd_list)

    p = sub.add_parser("status", help="status and per-operator metrics of a job")
    p.add_argument("job")
    p.add_argument("--address", help=address_help)
    p.add_argument("--verbose", "-v", action="store_true", help="also print the job graph")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between the two samples the rates come from")
    p.set_defaults(fn=cmd_status)

    p = sub.add_parser("logs", help="driver logs of a submitted job")
    p.add_argument("job", help="Ray submission id or raystream job id")
    p.add_argument("--address", help="dashboard address http://HEAD:8265")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing until the job ends")
    p.set_defaults(fn=cmd_logs)

    p = sub.add_parser("cancel", help="cancel a running job")
    p.add_argument("job")
    p.add_argument("--address", help=address_help)
    p.set_defaults(fn=cmd_cancel)

    p = sub.add_parser("savepoint", help="take a savepoint of a running job")
    p.add_argument("job")
    p.add_argument("path", help="savepoint directory or URI")
    p.add_argument("--address", help=address_help)
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the savepoint")
    p.set_defaults(fn=cmd_savepoint)

    p = sub.add_parser("stop", help="take a savepoint, then stop the job")
    p.add_argument("job")
    p.add_argument("--savepoint", metavar="PATH", help="savepoint directory or URI (required)")
    p.add_argument("--address", help=address_help)
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the savepoint")
    p.set_defaults(fn=cmd_stop)
    return parser


#: the commands that manage running jobs (their ``--address`` defaults to ``$RAY_ADDRESS``)
_MANAGEMENT = ("list", "status", "cancel", "savepoint", "stop")


def _split_job_args(argv: list[str]) -> tuple[list[str], list[str]]:
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    return argv, []


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``raystream`` command; returns the exit code.

    Exit codes: 0 success, 1 the job failed or was cancelled, 2 a usage or setup error
    (printed as one ``raystream: error: ...`` message, no traceback), 130 interrupted.

    Example:
        >>> main(["run", "jobs/wordcount.py", "--parallelism", "2", "--", "--lines", "100"])  # doctest: +SKIP
        0
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    own, job_args = _split_job_args(argv)
    args = build_parser().parse_args(own)
    args.job_args = job_args
    if getattr(args, "limit", None) is None and args.command == "run":
        args.limit = 100
    if getattr(args, "progress", False) is None:
        args.progress = sys.stderr.isatty()
    if args.command in _MANAGEMENT and not args.address and _is_http(os.environ.get("RAY_ADDRESS")):
        args.address = os.environ["RAY_ADDRESS"]  # (as --address: through the Job Submission API)
    ray_module = sys.modules.get("ray")
    connected_before = ray_module is not None and ray_module.is_initialized()
    try:
        return int(args.fn(args) or 0)
    except CliError as exc:
        print(f"raystream: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ConfigError as exc:  # a setting or a job graph that is wrong (e.g. --parallelism 0): a setup error
        print(f"raystream: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except RaystreamError as exc:
        print(f"raystream: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_JOB_FAILED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except SystemExit as exc:  # the job's own code exited (its argparse printed --help, or an error)
        if exc.code in (None, 0):
            return EXIT_OK
        raise
    except BrokenPipeError:  # `raystream status JOB | head`: the reader left, nothing is wrong
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return EXIT_OK
    finally:
        if not connected_before:  # (called in a process already connected, e.g. a notebook: keep it)
            _shutdown_ray()


def _shutdown_ray() -> None:
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        with contextlib.suppress(Exception):
            ray.shutdown()


if __name__ == "__main__":
    sys.exit(main())
