"""docs/bytewax.md runs as tests/test_docs_run.py runs every page: its ``python`` blocks in
order in one namespace on the session's Ray (what a block says it prints is checked), its
``bash`` commands parsed by the CLI's own parser. The page is added to that module's
``PAGES`` here, for these tests only (``tests/test_docs_run.py`` belongs to another area: once
its ``PAGES`` lists the page, this file can go).
"""

from __future__ import annotations

import pytest

from tests import test_docs_run as docs

PAGE = "docs/bytewax.md"


@pytest.fixture
def page(monkeypatch):
    monkeypatch.setitem(docs.PAGES, PAGE, docs.PAGES.get(PAGE, docs.Page()))
    return PAGE


def test_every_block_is_python_or_bash_and_compiles(page):
    docs.test_every_block_is_code_that_runs_or_is_marked(page)
    langs = {b.lang for b in docs.page_blocks(page)}
    assert langs == {"python", "bash"}, langs
    assert not [b for b in docs.page_blocks(page) if b.lang == "python" and b.not_run_reason]


def test_shell_commands_exist_with_their_flags(page):
    for block in docs.page_blocks(page):
        if block.lang in docs.SHELL:
            docs.check_shell_block(block)


def test_every_print_states_what_it_prints(page):
    """Each python block's prints are checked against what they print (a block whose print
    states no literal would be run unchecked)."""
    for block in docs.page_blocks(page):
        if block.lang == "python" and "print(" in block.code:
            assert docs.printed_claims(block.code), f"{page}:{block.line}: a print without a stated literal"


def test_page_runs(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    docs.run_page(page, tmp_path)
