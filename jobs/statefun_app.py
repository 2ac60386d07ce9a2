"""Run a StateFun application from its module.yaml, as StateFun's own runtime does.

The module.yaml's HTTP endpoints are called as remote functions, its playground ingress and
egress (``io.statefun.playground.v1/ingress|egress``) serve HTTP; ``--functions FILE`` adds
embedded functions: the ``functions`` (a ``raystream.statefun_api.StatefulFunctions``) of a
Python file or module, e.g. a StateFun ``functions.py`` with ``from statefun import *``
changed to ``from raystream.statefun_api import *``. The file imports the modules next to it (as
``python functions.py`` does), which go to the workers with it.

Run it (it runs until cancelled, e.g. with Ctrl-C)::

    python functions.py &                                             # the playground's SDK server
    raystream run raystream.jobs.statefun_app -- module.yaml              # remote functions
    raystream run raystream.jobs.statefun_app -- module.yaml --functions functions.py   # embedded
    raystream run raystream.jobs.statefun_app --checkpoint-dir /tmp/chk -- module.yaml  # exactly once

Kafka and Kinesis ingress documents need a DataStream for their topics: write a job module
calling ``StatefulFunctionsJob.with_module_yaml(path, ingresses={...})`` for those.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import cloudpickle

import raystream as rs
from raystream.engine.errors import ConfigError
from raystream.statefun_api import StatefulFunctions
from raystream.statefun_api.job import StatefulFunctionsJob
from raystream.statefun_api.playground import PLAYGROUND_INGRESS_KIND

JOB_NAME = "statefun-app"


def parse_args(argv: list[str]) -> argparse.Namespace:
    """``MODULE_YAML [--functions FILE_OR_MODULE] [--name NAME]``."""
    p = argparse.ArgumentParser(prog="raystream run raystream.jobs.statefun_app --",
                                description=__doc__.splitlines()[0])
    p.add_argument("module_yaml", help="the StateFun module.yaml (endpoints, playground ingress and egress)")
    p.add_argument("--functions", metavar="FILE_OR_MODULE",
                   help="a Python file or module whose `functions` (raystream's StatefulFunctions) run embedded")
    p.add_argument("--name", default=JOB_NAME, help="the function runtime's operator name")
    return p.parse_args(argv)


def _import_file(path: Path) -> ModuleType:
    """Import the Python file ``path`` as ``python FILE`` runs it: its directory first on
    ``sys.path`` while it loads, so that it imports the modules next to it; the file and the
    modules it imported from its directory (not installed packages) are shipped to the workers
    by value, since their processes cannot import them by name."""
    directory = path.resolve().parent
    name = f"raystream_functions_{path.stem}"
    import_spec = importlib.util.spec_from_file_location(name, path.resolve())
    assert import_spec is not None and import_spec.loader is not None  # (a .py file)
    module = importlib.util.module_from_spec(import_spec)
    before = set(sys.modules)
    sys.modules[name] = module
    sys.path.insert(0, str(directory))
    try:
        import_spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(directory))
    cloudpickle.register_pickle_by_value(module)
    for new in sorted(set(sys.modules) - before - {name}):
        file = getattr(sys.modules[new], "__file__", None)
        # a module or package found in the file's directory (a package by value takes its submodules)
        if "." not in new and file is not None and Path(file).resolve() in (
            directory / f"{new}.py", directory / new / "__init__.py"
        ):
            cloudpickle.register_pickle_by_value(sys.modules[new])
    return module


def load_functions(spec: str) -> StatefulFunctions:
    """The ``functions`` of a Python file or an importable module. A file imports the modules
    next to it (as ``python FILE`` would), and they go to the workers by value with it.

    Raises:
        ConfigError: the file is missing or fails to import, has no ``functions``, or its
            ``functions`` are not raystream's (e.g. the official SDK's: serve that file and
            reach it through the module.yaml's endpoint instead).
    """
    path = Path(spec).expanduser()
    try:
        if spec.endswith(".py") or path.is_file():
            if not path.is_file():
                raise ConfigError(f"--functions: no file {spec!r}")
            module = _import_file(path)
        else:
            module = importlib.import_module(spec)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - the user's file: named in the error
        raise ConfigError(f"--functions: importing {spec!r} failed: {type(exc).__name__}: {exc}") from exc
    functions = getattr(module, "functions", None)
    if isinstance(functions, StatefulFunctions):
        return functions
    if type(functions).__module__.split(".")[0] == "statefun":
        raise ConfigError(
            f"--functions: the `functions` of {spec!r} are the official StateFun SDK's (`from statefun import *`): "
            "serve the file (e.g. `python functions.py`) and point the module.yaml's endpoint at it, or change the "
            "import to `from raystream.statefun_api import *` to embed them"
        )
    raise ConfigError(f"--functions: {spec!r} has no `functions` = raystream.statefun_api.StatefulFunctions(), "
                      f"got {functions!r}")


def build(env: rs.StreamEnvironment, args: argparse.Namespace) -> None:
    """The function runtime of ``args.module_yaml`` (and ``--functions``) in ``env``."""
    functions = load_functions(args.functions) if args.functions else StatefulFunctions()
    sf = StatefulFunctionsJob(env, functions, name=args.name).with_module_yaml(args.module_yaml)
    if sf.ingress_count == 0:
        raise ConfigError(
            f"{args.module_yaml}: no {PLAYGROUND_INGRESS_KIND} document, so nothing would feed the functions; "
            "Kafka and Kinesis ingresses need a DataStream per topic: write a job module calling "
            "StatefulFunctionsJob.with_module_yaml(path, ingresses={topic: stream})"
        )


def main(argv: list[str] | None = None) -> None:
    """Standalone: ``python -m raystream.jobs.statefun_app module.yaml [--functions FILE]``."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    env = rs.StreamEnvironment()
    build(env, args)
    env.execute(JOB_NAME)


if __name__ == "__main__":
    main()
