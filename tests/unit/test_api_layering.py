"""The DataStream API's modules, checked from their source (no import is executed):

* the modules of ``operators`` import each other without a cycle (``if TYPE_CHECKING:``
  imports count too: the API needs none);
* the API modules import one way, each only from the API modules below it;
* no API module imports a project package inside a function (the way cycles get dodged);
* the API reaches the engine's runtime only through ``engine.client.submit`` (plus the
  handles it returns), never through the job master, the task runtime, Ray or the worker pool.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OPERATORS = ROOT / "operators"
PROJECT = {"engine", "checkpoint", "operators", "statefun_api", "jobs", "raystream"}
# bottom to top: a module may import only the API modules before it in this list
API_LAYERS = [
    ["operators._environment_base"],
    ["operators._stream_base"],
    ["operators.connected", "operators.joins", "operators.windowed_stream"],
    ["operators.datastream"],
    ["operators.environment"],
]
API = [m for layer in API_LAYERS for m in layer]
RUNTIME = ("engine.master", "engine.task", "engine.ray_runtime", "engine.pool", "engine.snapshots", "ray")
DOOR = {"engine.client": {"submit", "JobClient", "JobResult"}}


def _module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _absolute(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        # ``raystream.engine.task`` is the installed name of the folder ``engine/``
        name = node.module or ""
        return name.removeprefix("raystream.") if name.startswith("raystream.") else name
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


class _Imports:
    """The imports of one module: (target module, imported names, line, at module level)."""

    def __init__(self, path: Path, root: Path = ROOT) -> None:
        self.path = path
        self.module = _module_name(path, root)
        self.tree = ast.parse(path.read_text(), str(path))
        is_package = path.name == "__init__.py"
        nested = {id(n) for f in ast.walk(self.tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                  for n in ast.walk(f)}
        self.imports: list[tuple[str, set[str], int, bool]] = []
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    self.imports.append((alias.name, set(), node.lineno, id(node) not in nested))
            elif isinstance(node, ast.ImportFrom):
                target = _absolute(self.module, is_package, node)
                self.imports.append((target, {a.name for a in node.names}, node.lineno, id(node) not in nested))

    def module_level_targets(self, known: set[str]) -> set[str]:
        """The modules of ``known`` imported at module level (``from pkg import mod`` names mod)."""
        out = set()
        for target, names, _line, top in self.imports:
            if not top:
                continue
            if target in known:
                out.add(target)
            out.update(f"{target}.{n}" for n in names if f"{target}.{n}" in known)
        return out


FILES = {_module_name(p): _Imports(p) for p in sorted(OPERATORS.rglob("*.py"))}
MODULES = set(FILES)


def test_the_api_modules_exist():
    missing = [m for m in API if m not in FILES]
    assert not missing, f"API modules named in this test but not found: {missing}"


def _cycles(graph: dict[str, set[str]]) -> list[str]:
    done: set[str] = set()
    cycles: list[str] = []

    def visit(mod: str, stack: list[str]) -> None:
        stack.append(mod)
        for nxt in sorted(graph[mod]):
            if nxt in stack:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in done:
                visit(nxt, stack)
        stack.pop()
        done.add(mod)

    for mod in sorted(graph):
        if mod not in done:
            visit(mod, [])
    return cycles


def test_no_module_level_import_cycle_in_operators():
    cycles = _cycles({m: FILES[m].module_level_targets(MODULES) - {m} for m in MODULES})
    assert not cycles, "import cycles between operators modules:\n" + "\n".join(cycles)


@pytest.mark.parametrize("module", API)
def test_api_module_imports_only_api_modules_below_it(module):
    rank = next(i for i, layer in enumerate(API_LAYERS) if module in layer)
    below = {m for layer in API_LAYERS[:rank] for m in layer}
    imported_api = FILES[module].module_level_targets(set(API))
    assert imported_api <= below, f"{module} imports {sorted(imported_api - below)}, which are not below it"


@pytest.mark.parametrize("module", API)
def test_api_module_has_no_imports_inside_functions(module):
    nested = [f"line {line}: {target}" for target, _names, line, top in FILES[module].imports
              if not top and target.split(".")[0] in PROJECT]
    assert not nested, f"{module} imports project modules inside functions:\n" + "\n".join(nested)


@pytest.mark.parametrize("module", API)
def test_api_module_needs_no_type_checking_imports(module):
    guarded = [n.lineno for n in ast.walk(FILES[module].tree)
               if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test)]
    assert not guarded, f"{module} has `if TYPE_CHECKING:` imports (lines {guarded}): the types it names must be importable"


@pytest.mark.parametrize("module", API)
def test_api_reaches_the_runtime_only_through_submit(module):
    bad = []
    for target, names, line, _top in FILES[module].imports:
        if target in RUNTIME or target.startswith(tuple(f"{r}." for r in RUNTIME)):
            bad.append(f"line {line}: {target}")
        elif target == "engine" and names & {r.split(".")[-1] for r in RUNTIME}:
            bad.append(f"line {line}: from raystream.engine import {sorted(names)}")
        elif target in DOOR and not names <= DOOR[target]:
            bad.append(f"line {line}: {target} {sorted(names - DOOR[target])} (only {sorted(DOOR[target])})")
        elif target in DOOR and not names:
            bad.append(f"line {line}: import {target}")
    assert not bad, f"{module} reaches into the engine's runtime:\n" + "\n".join(bad)


def test_the_checker_sees_what_it_checks(tmp_path):
    """The parser counts an import inside a function as nested and ``from . import x`` as module x."""
    (tmp_path / "operators").mkdir()
    path = tmp_path / "operators" / "demo.py"
    path.write_text("from . import joins\nfrom .sinks import CollectSink\n\ndef f():\n    from raystream.engine.master import JobMaster\n")
    parsed = _Imports(path, tmp_path)
    assert parsed.module == "operators.demo"
    assert ("engine.master", {"JobMaster"}, 5, False) in parsed.imports
    assert parsed.module_level_targets({"operators.joins", "operators.sinks"}) == {"operators.joins", "operators.sinks"}
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a -> b -> c -> a"]
    assert _cycles({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []
