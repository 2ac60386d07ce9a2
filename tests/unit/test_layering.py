"""The architecture, checked: imports run one way (docs/architecture.md).

Parses every module's imports (no import is executed) and asserts

* package layers: ``engine`` <- ``checkpoint`` <- ``operators`` <- ``statefun_api`` <-
  ``raystream`` <- ``jobs``; a package imports only packages below it;
* inside ``engine``: the ground floor (contracts and plain data) imports nothing of the
  runtime, the job master and the task runtime import no Ray, and Ray is imported only by
  the Ray runtime modules;
* no import cycle between modules;
* no project import inside a function (the way cycles get dodged), except the two lazy
  imports named below with their reason.

``if TYPE_CHECKING:`` imports are annotations only and are not counted.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ["engine", "checkpoint", "operators", "statefun_api", "raystream", "jobs"]
ENGINE_RUNTIME = {"engine.task", "engine.master", "engine.ray_runtime", "engine.pool", "engine.client", "engine.snapshots",
                  "engine.executor", "engine.local_runtime"}
RAY_MODULES = {"engine.ray_runtime", "engine.pool", "engine.client", "engine.observability"}
NO_RAY = {"engine.master", "engine.task", "engine.snapshots", "engine.executor", "engine.local_runtime"} | {f"engine.{m}" for m in ("graph", "records", "keygroups")}
# lazy on purpose, not to dodge a cycle:
LAZY_ALLOWED = {
    "engine/__init__.py": "JobClient/submit need Ray; the contracts (engine.errors ...) must import without it",
    "jobs/cli.py": "the CLI imports the engine only in the commands that run a job (fast --help)",
}


def _module(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _unprefixed(target: str) -> str:
    """``raystream.engine.task`` -> ``engine.task``: the installed names of the repository's folders."""
    head, _, rest = target.partition(".")
    return rest if head == "raystream" and rest.split(".")[0] in LAYERS else target


def _targets(mod: str, node: ast.AST, is_pkg: bool) -> list[str]:
    return [_unprefixed(t) for t in _raw_targets(mod, node, is_pkg)]


def _raw_targets(mod: str, node: ast.AST, is_pkg: bool) -> list[str]:
    if isinstance(node, ast.ImportFrom):
        if node.level:
            base = mod.split(".") if is_pkg else mod.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
        else:
            target = node.module or ""
        return [target] + [f"{target}.{a.name}" for a in node.names]
    assert isinstance(node, ast.Import)
    return [a.name for a in node.names]


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                skip.update(id(n) for n in ast.walk(child))
    return skip


def _scan() -> tuple[set[str], dict[str, set[str]], list[tuple[str, int, str]], dict[str, set[str]]]:
    modules: set[str] = set()
    edges: dict[str, set[str]] = {}
    nested: list[tuple[str, int, str]] = []
    third_party: dict[str, set[str]] = {}
    # raystream/engine, raystream/operators ... link to the top-level folders: read each file once
    files = [p for pkg in LAYERS for p in (ROOT / pkg).rglob("*.py")
             if pkg != "raystream" or not any((ROOT / part).is_symlink() for part in p.relative_to(ROOT).parents if part != Path("."))]
    for path in files:
        modules.add(_module(path))
    for path in files:
        mod = _module(path)
        tree = ast.parse(path.read_text(), str(path))
        skip = _type_checking_nodes(tree)
        toplevel = {id(n) for n in tree.body}
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)) or id(node) in skip:
                continue
            targets = _targets(mod, node, path.name == "__init__.py")
            ours = [t for t in targets if t.split(".")[0] in LAYERS]
            if not ours:
                third_party.setdefault(mod, set()).update(t.split(".")[0] for t in targets[:1])
                continue
            inside_function = id(node) not in toplevel and not any(
                id(node) in {id(n) for n in ast.walk(block)} for block in tree.body if isinstance(block, (ast.If, ast.Try))
            )
            if inside_function:
                nested.append((str(path.relative_to(ROOT)), node.lineno, ours[0]))
                continue
            for t in ours:
                # ``from pkg import name`` names a module when pkg.name is one
                edges.setdefault(mod, set()).add(t if t in modules else t.rsplit(".", 1)[0] if t.rsplit(".", 1)[0] in modules else t)
    return modules, edges, nested, third_party


MODULES, EDGES, NESTED, THIRD_PARTY = _scan()


def test_packages_import_only_the_layers_below():
    bad = []
    for mod, targets in EDGES.items():
        rank = LAYERS.index(mod.split(".")[0])
        for t in targets:
            if LAYERS.index(t.split(".")[0]) > rank:
                bad.append(f"{mod} imports {t}")
    assert not bad, "imports against the layering:\n" + "\n".join(sorted(bad))


def test_engine_ground_floor_imports_no_runtime_and_ray_stays_in_the_ray_runtime():
    bad = [f"{m} imports {t}" for m, ts in EDGES.items() if m.startswith("engine") and m not in ENGINE_RUNTIME
           for t in ts if t in ENGINE_RUNTIME]
    assert not bad, "engine's ground floor imports its runtime:\n" + "\n".join(sorted(bad))
    ray_users = {m for m, libs in THIRD_PARTY.items() if "ray" in libs and m.startswith(("engine", "checkpoint", "operators", "statefun_api"))}
    assert ray_users <= RAY_MODULES, f"Ray imported outside the Ray runtime: {sorted(ray_users - RAY_MODULES)}"
    assert not (ray_users & NO_RAY)


def test_no_import_cycles_between_modules():
    graph = {m: {t for t in EDGES.get(m, ()) if t in MODULES and t != m} for m in MODULES}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_project_imports_inside_functions():
    bad = [f"{path}:{line} imports {target}" for path, line, target in NESTED
           if path.replace(os.sep, "/") not in LAZY_ALLOWED]
    assert not bad, "imports inside functions (a cycle dodged?):\n" + "\n".join(bad)


# The stateful-functions SDK surface (what a StateFun user writes functions with, and the
# request-reply handler that serves them) is pure: it never imports the runtime that runs the
# functions as an engine operator, nor anything of the engine but its error types.
STATEFUN_RUNTIME = {f"statefun_api.{m}" for m in ("dispatcher", "remote", "job", "routing", "ingress", "spill", "local",
                                                 "http_caller", "embedded_caller", "request_encoder", "state_layout",
                                                 "playground", "queued_state")}
STATEFUN_SDK_MAY_IMPORT = {"engine.errors"}


def test_statefun_sdk_surface_imports_no_runtime():
    sdk = {m for m in MODULES if m.startswith("statefun_api.") and m not in STATEFUN_RUNTIME}
    assert {"statefun_api.functions", "statefun_api.context", "statefun_api.handler", "statefun_api.types"} <= sdk
    assert STATEFUN_RUNTIME <= MODULES, f"runtime modules renamed? {sorted(STATEFUN_RUNTIME - MODULES)}"
    bad = [f"{m} imports {t}" for m in sorted(sdk) for t in sorted(EDGES.get(m, ()))
           if t in STATEFUN_RUNTIME or (not t.startswith("statefun_api") and t not in STATEFUN_SDK_MAY_IMPORT)]
    assert not bad, "the statefun SDK surface imports the runtime:\n" + "\n".join(bad)
    sdk_ray = {m for m in sdk if "ray" in THIRD_PARTY.get(m, ())}
    assert not sdk_ray, f"Ray imported by the statefun SDK surface: {sorted(sdk_ray)}"
