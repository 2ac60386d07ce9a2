"""Docs that run: every code block of ``docs/statefun.md`` and of the stateful-functions
section of ``README.md`` is executed here, so the documentation cannot drift from the code.

* ```` ```python ```` blocks run in order in ONE namespace per page, as a reader pastes them
  into one session: a later block may use what an earlier one defined (the page's
  ``functions``), but nothing that the page never defines. Values the text states are
  ``assert`` statements in the blocks, so a wrong claim fails here. The namespace's
  ``__name__`` is not ``"__main__"``, so a block's ``if __name__ == "__main__":`` server
  start is skipped, as on import.
* ```` ```yaml ```` blocks are ``module.yaml`` documents: raystream must accept them.
* ```` ```text ```` blocks (API signature listings) and unlabelled blocks (diagrams) are not
  code; any other language fails the test, so a new block is never silently skipped.

Pages run on the session's Ray (``ray_session``): one block of each executes a job on it.
Tracebacks point at the page's own line numbers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from raystream.statefun_api.endpoints import parse_module_yaml

ROOT = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^```([\w-]*)[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)
NOT_CODE = {"text", ""}
# page -> the heading of the section that is checked (None: the whole page)
PAGES = {"docs/statefun.md": None, "README.md": "## Stateful functions"}


@dataclass(frozen=True)
class Block:
    """One fenced block: where it starts (1-based line of its first code line), its language
    and its text."""

    path: str
    line: int
    lang: str
    code: str

    def compiled(self):
        # pad so that tracebacks show the page's own line numbers
        return compile("\n" * (self.line - 1) + self.code, str(ROOT / self.path), "exec")


def page_blocks(path: str) -> list[Block]:
    """The fenced blocks of ``path`` (of its ``PAGES[path]`` section only, if one is named)."""
    text = (ROOT / path).read_text(encoding="utf-8")
    start, end = 0, len(text)
    heading = PAGES[path]
    if heading is not None:
        found = re.search(rf"^{re.escape(heading)}\s*$", text, re.M)
        assert found, f"{path}: no section {heading!r}"
        start = found.start()
        following = re.search(r"^## ", text[found.end():], re.M)
        end = found.end() + following.start() if following else len(text)
    blocks = []
    for m in FENCE.finditer(text, start, end):
        first_code_line = text.count("\n", 0, m.start(2)) + 1
        blocks.append(Block(path, first_code_line, m.group(1), m.group(2)))
    return blocks


def run_page(path: str) -> dict:
    """Execute the page's python blocks in order in one namespace; returns the namespace."""
    namespace: dict = {"__name__": "docs_" + Path(path).stem.lower()}
    for block in page_blocks(path):
        if block.lang == "python":
            exec(block.compiled(), namespace)  # noqa: S102 - the docs are the code under test
    return namespace


@pytest.mark.parametrize("path", sorted(PAGES))
def test_every_block_is_code_that_runs_or_is_marked_as_no_code(path):
    blocks = page_blocks(path)
    assert any(b.lang == "python" for b in blocks), f"{path}: no python block found: is the fence pattern wrong?"
    unknown = [(b.line, b.lang) for b in blocks if b.lang not in {"python", "yaml"} | NOT_CODE]
    assert not unknown, f"{path}: blocks (first line, language) that would not be checked: {unknown}"
    for block in blocks:
        if block.lang == "python":
            block.compiled()  # a SyntaxError names the page and line


def test_the_block_finder_reads_the_pages_own_lines():
    """The line numbers in tracebacks are the page's: the line before a block is its fence."""
    for path in PAGES:
        lines = (ROOT / path).read_text(encoding="utf-8").splitlines()
        for block in page_blocks(path):
            assert lines[block.line - 2].startswith("```" + block.lang), (path, block.line)
            assert lines[block.line - 1] == block.code.splitlines()[0], (path, block.line)


def test_yaml_blocks_are_module_yaml_that_raystream_accepts():
    yaml_blocks = [b for path in PAGES for b in page_blocks(path) if b.lang == "yaml"]
    assert yaml_blocks, "docs/statefun.md shows a module.yaml"
    for block in yaml_blocks:
        endpoints = parse_module_yaml(block.code, source=f"{block.path}:{block.line}")
        assert endpoints, f"{block.path}:{block.line}: the module.yaml declares no endpoint"


@pytest.mark.ray
def test_docs_statefun_runs(ray_session):
    pytest.importorskip("statefun")  # one block serves the official SDK's functions
    pytest.importorskip("aiohttp")
    namespace = run_page("docs/statefun.md")
    # the page's last function set is what its server block serves
    assert "example/person" in namespace["functions"]
    assert namespace["app"].router is not None


@pytest.mark.ray
def test_readme_stateful_functions_section_runs(ray_session):
    namespace = run_page("README.md")
    assert "greets" in namespace
