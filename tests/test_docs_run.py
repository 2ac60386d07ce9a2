"""Docs that run: every code block of ``README.md`` and of the pages in ``docs/`` (but
``docs/statefun.md`` and the README's stateful-functions section, which
``tests/statefun/test_docs_statefun.py`` runs) is checked here as a new user would use it.

* ```` ```python ```` blocks run in order in ONE namespace per page, as a reader pastes them
  into one session, on the session's Ray, in a fresh directory (the page's relative paths
  land there). What a page takes as given is set up by ``Page.setup`` (a file the text
  names, such as ``events.parquet``); absolute paths under ``/tmp/`` are moved under the
  test's directory and the Redis URL to the test's server, nothing else in the code changes.
* What a block says it prints is checked: a ``print(...)`` whose line ends in, or is
  followed by, a comment holding a Python literal (``print(x)  # [1, 2]``) must print that
  value (compared as a value when its output is a literal too).
* A block whose first line is ``# not run: <reason>`` is only compiled (keep those few).
* ```` ```bash ```` blocks: every command must exist with the flags it is given: ``python -m
  M`` names an importable module, ``raystream ...`` parses with the CLI's own parser, its job
  file exists and the job's arguments (after ``--``) parse with the job's ``parse_args``.
  ``raystream list | status JOB | ...`` is a synopsis: each alternative is checked.
* ```` ```text ```` and unlabelled blocks (diagrams, listings) are not code; any other
  language fails the test, so a new block is never silently skipped.
* ``EXPECTED_BROKEN`` lists blocks of pages owned elsewhere that do not run as written, with
  the reason: such a block may fail and the page's other blocks run on. Not strict, so that
  the page's owner can fix it without editing this module; once it runs, its output claims
  are checked like any block's, and an entry whose block is gone fails
  ``test_marked_blocks_are_few_and_known``.

The docstring examples of the public API modules run as doctests (``DOCTEST_MODULES``).
"""

from __future__ import annotations

import ast
import contextlib
import doctest
import importlib
import importlib.util
import io
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```([\w-]*)[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)
NOT_CODE = {"text", ""}
SHELL = {"bash", "sh", "shell"}
NOT_RUN = re.compile(r"#\s*not run:\s*(\S.*)")


def _events_parquet(tmp: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    keys = ["a", "b", "a", "c"] * 5
    pq.write_table(pa.table({"key": keys, "value": list(range(20)), "ts": [i * 100 for i in range(20)],
                             "user": ["u1", "u2"] * 10}), tmp / "events.parquet")


def _book(tmp: Path) -> None:
    (tmp / "book.txt").write_text("the quick brown fox\njumps over the lazy dog\n", encoding="utf-8")


@dataclass(frozen=True)
class Page:
    """How a page is run: the sections left out (run elsewhere), the files its text takes as
    given, and Python run before its first block (names the page uses without defining)."""

    skip_sections: tuple[str, ...] = ()
    files: tuple[Callable[[Path], None], ...] = ()
    prelude: str = ""
    needs_redis: bool = False


_ENV = "import raystream as rs\nenv = rs.StreamEnvironment(parallelism=2)\n"
PAGES: dict[str, Page] = {
    "README.md": Page(skip_sections=("## Stateful functions",), files=(_book,)),
    "docs/keyed.md": Page(files=(_events_parquet,)),
    "docs/connectors.md": Page(needs_redis=True),
    # pages of other areas: run with the environment their text assumes
    "docs/state.md": Page(files=(_events_parquet,), prelude=_ENV),
    "docs/event_time.md": Page(files=(_events_parquet,), prelude=_ENV),
    "docs/fault_tolerance.md": Page(files=(_events_parquet,), prelude=_ENV),
    "docs/cli.md": Page(),
    "docs/architecture.md": Page(),
    "docs/bytewax.md": Page(),
}

# (page, a line of the block) -> why it does not run as written (it may fail; see the module doc)
EXPECTED_BROKEN: dict[tuple[str, str], str] = {
    ("docs/state.md", 'count = backend.get_state(ValueStateDescriptor("count", default=0))'):
        "'backend' and 'record' are never defined: the page does not say how to get a keyed backend",
    ("docs/event_time.md", 'late = OutputTag("late")'):
        "OutputTag is used but not imported (from raystream import OutputTag)",
    ("docs/event_time.md", "h = OperatorHarness(op, subtask_index=0, parallelism=2)"):
        "a sketch: OperatorHarness is not imported and op, records_or_arrow, new_op are never defined",
}

DOCTEST_MODULES = [
    "raystream.operators.datastream", "raystream.operators.keyed", "raystream.operators.functions",
    "raystream.operators.sources", "raystream.operators.sinks", "raystream.operators.connected",
    "raystream.engine.client", "raystream.operators.environment", "raystream.operators._environment_base",
    "raystream.operators._stream_base", "raystream.operators.windowed_stream", "raystream.operators.flink_functions",
    "raystream.operators.windows", "raystream.engine.keygroups", "raystream.operators.with_state", "raystream",
]


@dataclass(frozen=True)
class Block:
    """One fenced block: where its code starts (1-based page line), its language and text."""

    path: str
    line: int
    lang: str
    code: str

    def compiled(self, code: str | None = None):
        # pad so that tracebacks show the page's own line numbers
        # dont_inherit: the page runs as the reader's own script, not under this module's
        # ``from __future__ import annotations`` (a dataclass of the page would break)
        return compile("\n" * (self.line - 1) + (self.code if code is None else code), str(ROOT / self.path), "exec",
                       dont_inherit=True)

    @property
    def not_run_reason(self) -> str | None:
        first = self.code.lstrip().splitlines()[0] if self.code.strip() else ""
        m = NOT_RUN.match(first)
        return m.group(1) if m else None

    @property
    def expected_broken(self) -> str | None:
        for (path, line), reason in EXPECTED_BROKEN.items():
            if path == self.path and line in self.code:
                return reason
        return None


def page_blocks(path: str) -> list[Block]:
    """The fenced blocks of ``path``, without those of its ``skip_sections``."""
    text = (ROOT / path).read_text(encoding="utf-8")
    skipped = []
    for heading in PAGES[path].skip_sections:
        found = re.search(rf"^{re.escape(heading)}\s*$", text, re.M)
        assert found, f"{path}: no section {heading!r}"
        following = re.search(r"^## ", text[found.end():], re.M)
        skipped.append((found.start(), found.end() + following.start() if following else len(text)))
    blocks = []
    for m in FENCE.finditer(text):
        if any(start <= m.start() < end for start, end in skipped):
            continue
        blocks.append(Block(path, text.count("\n", 0, m.start(2)) + 1, m.group(1), m.group(2)))
    return blocks


# -- what a block says it prints ------------------------------------------------------------

def _literal(text: str) -> tuple[bool, object]:
    try:
        return True, ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return False, None


def printed_claims(code: str) -> list[tuple[int, str]] | None:
    """The values the block's ``print`` calls are said to print, in order, as (line, text);
    None when some ``print`` states none (its output is then not checked)."""
    lines = code.splitlines()
    claims = []
    calls = sorted((n for n in ast.walk(ast.parse(code)) if isinstance(n, ast.Call)
                    and isinstance(n.func, ast.Name) and n.func.id == "print"), key=lambda n: n.lineno)
    for call in calls:
        end = call.end_lineno or call.lineno
        tail = lines[end - 1][call.end_col_offset:] if call.end_col_offset is not None else ""
        comment = tail.split("#", 1)[1] if "#" in tail else None
        if comment is None and end < len(lines) and lines[end].lstrip().startswith("#"):
            comment = lines[end].lstrip()[1:]
        if comment is None or not _literal(comment)[0]:
            return None
        claims.append((end, comment.strip()))
    return claims


def check_printed(block: Block, output: str) -> None:
    claims = printed_claims(block.code)
    if not claims:
        return
    printed = output.splitlines()
    assert len(printed) == len(claims), (
        f"{block.path}:{block.line}: the block says it prints {len(claims)} line(s), it printed {printed!r}")
    for (line, claim), out in zip(claims, printed):
        ok, value = _literal(out)
        expected = _literal(claim)[1]
        assert (value == expected) if ok else (out.strip() == claim), (
            f"{block.path}:{block.line + line - 1}: the page says this prints {claim}, it printed {out}")


# -- shell blocks ---------------------------------------------------------------------------

PLACEHOLDER_JOBS = {"job.py"}  # the pages' stand-in for the reader's own job file


def check_shell_command(words: list[str], where: str) -> None:
    """``words`` is one command of a shell block: it must exist with the flags it is given."""
    from raystream.jobs.cli import _split_job_args, build_parser, load_job_module

    if not words:
        return
    if words[0] == "pip":
        assert words[1:2] == ["install"], f"{where}: pip {words[1:]}"
        return
    if words[0] == "python":
        assert words[1:2] == ["-m"] and len(words) > 2, f"{where}: only `python -m MODULE` is checked: {words}"
        module = words[2]
        assert importlib.util.find_spec(module) is not None, f"{where}: no module {module!r}"
        if module.startswith("raystream.jobs."):
            parse = getattr(importlib.import_module(module), "parse_args", None)
            if parse is not None:
                parse(words[3:])
        return
    assert words[0] == "raystream", f"{where}: unknown command {words[0]!r}"
    cli_args, job_args = _split_job_args(words[1:])
    try:
        args = build_parser().parse_args(cli_args)
    except SystemExit as exc:
        raise AssertionError(f"{where}: `{shlex.join(words)}` does not parse (see stderr)") from exc
    if args.command in ("run", "submit") and args.job not in PLACEHOLDER_JOBS:
        job = args.job if not args.job.endswith(".py") else str(ROOT / args.job)
        module = load_job_module(job)
        if hasattr(module, "parse_args"):
            module.parse_args(job_args)


def check_shell_block(block: Block) -> None:
    for offset, line in enumerate(block.code.splitlines()):
        where = f"{block.path}:{block.line + offset}"
        words = shlex.split(line, comments=True)
        for command in _split(words, "&&"):
            if command and command[0] == "raystream" and "|" in command:
                # a synopsis: `raystream list | status JOB | ...`
                first, *rest = _split(command, "|")
                for alternative in [first, *(["raystream", *alt] for alt in rest)]:
                    check_shell_command(alternative, where)
            else:
                check_shell_command(command, where)


def _split(words: list[str], sep: str) -> list[list[str]]:
    parts: list[list[str]] = [[]]
    for w in words:
        if w == sep:
            parts.append([])
        else:
            parts[-1].append(w)
    return parts


# -- running a page -------------------------------------------------------------------------

def run_page(path: str, tmp: Path, redis_url: str | None = None) -> dict:
    """Run the page's python blocks in order in one namespace, in ``tmp``; returns it."""
    page = PAGES[path]
    for make in page.files:
        make(tmp)
    namespace: dict = {"__name__": "docs_" + Path(path).stem.lower()}
    exec(page.prelude, namespace)  # noqa: S102
    for block in page_blocks(path):
        if block.lang != "python" or block.not_run_reason:
            continue
        code = block.code.replace('"/tmp/', f'"{tmp}/tmp-')
        if redis_url is not None:
            code = code.replace("redis://localhost:6379/0", redis_url)
        out = io.StringIO()
        broken = block.expected_broken
        try:
            with contextlib.redirect_stdout(out):
                exec(block.compiled(code), namespace)  # noqa: S102 - the docs are the code under test
        except Exception:
            if broken:
                continue
            raise
        check_printed(block, out.getvalue())
    return namespace


@pytest.mark.parametrize("path", sorted(PAGES))
def test_every_block_is_code_that_runs_or_is_marked(path):
    blocks = page_blocks(path)
    unknown = [(b.line, b.lang) for b in blocks if b.lang not in {"python"} | SHELL | NOT_CODE]
    assert not unknown, f"{path}: blocks (first line, language) that would not be checked: {unknown}"
    for block in blocks:
        if block.lang == "python":
            block.compiled()  # a SyntaxError names the page and line
            printed_claims(block.code)


def test_marked_blocks_are_few_and_known():
    """Blocks that are not run say why, and every EXPECTED_BROKEN entry names a block."""
    blocks = [b for path in PAGES for b in page_blocks(path) if b.lang == "python"]
    not_run = [(b.path, b.line, b.not_run_reason) for b in blocks if b.not_run_reason]
    assert len(not_run) <= 3, f"too many blocks not run: {not_run}"
    for (path, line), reason in EXPECTED_BROKEN.items():
        assert any(b.path == path and line in b.code for b in blocks), (
            f"EXPECTED_BROKEN names a block {path} no longer has ({line!r}: {reason}): remove the entry")


def test_the_block_finder_reads_the_pages_own_lines():
    for path in PAGES:
        lines = (ROOT / path).read_text(encoding="utf-8").splitlines()
        for block in page_blocks(path):
            assert lines[block.line - 2].startswith("```" + block.lang), (path, block.line)
            assert lines[block.line - 1] == block.code.splitlines()[0], (path, block.line)


def test_printed_claims_are_checked():
    """The print check itself: a claim that the output contradicts fails."""
    block = Block("x.md", 1, "python", "print(sorted([2, 1]))  # [1, 2]\nprint('a')\n# 'b'\n")
    assert printed_claims(block.code) == [(1, "[1, 2]"), (2, "'b'")]
    check_printed(Block("x.md", 1, "python", "print([1, 2])  # [1, 2]\n"), "[1, 2]\n")
    with pytest.raises(AssertionError, match="prints 'b', it printed a"):
        check_printed(block, "[1, 2]\na\n")
    assert printed_claims("print(x)  # the counts\n") is None  # not a literal: not checked


@pytest.mark.parametrize("path", sorted(p for p in PAGES if any(b.lang in SHELL for b in page_blocks(p))))
def test_shell_commands_exist_with_their_flags(path):
    for block in page_blocks(path):
        if block.lang in SHELL:
            check_shell_block(block)


def test_the_shell_check_refuses_what_does_not_exist():
    block = Block("x.md", 1, "bash", "raystream run jobs/wordcount.py --parallelism-typo 2\n")
    with pytest.raises(AssertionError, match="does not parse"):
        check_shell_block(block)
    with pytest.raises(AssertionError, match="no module"):
        check_shell_block(Block("x.md", 1, "bash", "python -m raystream.jobs.no_such_job\n"))


@pytest.mark.ray
@pytest.mark.parametrize("path", sorted(p for p in PAGES if not PAGES[p].needs_redis))
def test_page_runs(path, ray_session, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_page(path, tmp_path)


@pytest.mark.ray
@pytest.mark.parametrize("path", sorted(p for p in PAGES if PAGES[p].needs_redis))
def test_page_with_redis_runs(path, ray_session, tmp_path, monkeypatch, redis_url):
    monkeypatch.chdir(tmp_path)
    run_page(path, tmp_path, redis_url)


@pytest.mark.ray
@pytest.mark.parametrize("module", DOCTEST_MODULES)
def test_docstring_examples_run(module, ray_session, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{module}: {result.failed} docstring example(s) failed (see the output above)"


# -- the names a Flink user looks for -------------------------------------------------------

def _readme_part(start: str, end: str) -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return text[text.index(start):text.index(end)]


def _api_objects():
    import raystream as rs
    from raystream.operators.windowed_stream import WindowedStream

    env = rs.StreamEnvironment()
    stream = env.from_collection([1])
    return {"env": env, "stream": stream, "keyed": stream.key_by(lambda x: x), "window": WindowedStream,
            "sink": stream.collect(), "client": rs.JobClient, "rs": rs}


def test_the_readme_api_table_names_exist():
    """Every ``name(`` of the README's API table is a method of the object it is listed for."""
    objects = _api_objects().values()
    names = set(re.findall(r"`(?:[\w.]+\.)?(\w+)\(", _readme_part("### The API", "Flink names spelled")))
    names -= {"f"}  # generate(batch_fn=f, ...): the reader's function
    missing = sorted(n for n in names if not any(hasattr(o, n) for o in objects))
    assert not missing, f"README's API table names what raystream does not have: {missing}"


def test_flink_names_are_where_the_readme_says():
    """The README's "Flink names spelled differently here": what it says exists exists, with
    the arguments it lists, and what it says is not here is not (a new one: say so there)."""
    import inspect

    o = _api_objects()
    text = _readme_part("Flink names spelled differently here", "Records can be any")
    there = {"env": ["from_source", "from_collection", "enable_checkpointing"],
             "stream": ["rebalance", "sink_to", "set_parallelism", "get_side_output", "key_by", "flat_map", "connect",
                        "process"],
             "window": ["trigger", "allowed_lateness", "side_output_late_data", "reduce", "aggregate", "process",
                        "apply", "evictor"],
             "keyed": ["min_by", "max_by", "process"]}
    for holder, names in there.items():
        for name in names:
            assert f"{name}" in text and hasattr(o[holder], name), (holder, name)
    params = inspect.signature(o["env"].enable_checkpointing).parameters
    listed = re.search(r"enable_checkpointing\(interval_ms, (.*?)\)", text, re.S).group(1)
    for arg in re.findall(r"(\w+)=", listed):
        assert arg in params, f"enable_checkpointing has no argument {arg!r}"
    not_here = {"env": ["add_source", "from_elements", "set_parallelism", "set_max_parallelism", "get_checkpoint_config"],
                "stream": ["shuffle", "rescale", "add_sink"], "window": ["sum", "min", "max"]}
    for holder, names in not_here.items():
        for name in names:
            assert name in text, (holder, name)
            assert not hasattr(o[holder], name), f"{holder}.{name} exists now: update the README's Flink names"
