"""``read_text`` over files that change after the job was built: a file deleted, truncated
(a log rotated with ``copytruncate``) or replaced by a directory fails naming the file, never
hangs (no Ray).

Before, a file truncated after planning made the reader spin forever in ``poll_next`` (an
empty read at a position before the split's end advanced nothing: the task hung at 100%
CPU), and a file deleted before planning failed with ``TypeError: '>' not supported between
instances of 'int' and 'NoneType'``."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from raystream.engine.connectors import END_OF_INPUT
from raystream.engine.errors import ConfigError
from raystream.operators.sources import TextSource
from tests.waiting import wait_for


def read_all(reader) -> list:
    out: list = []
    for _ in range(10_000):  # (a reader that makes no progress fails here instead of hanging)
        b = reader.poll_next()
        if b is END_OF_INPUT:
            return out
        out.extend(b.records())
    raise AssertionError("the reader made no progress")


def read_all_in_a_thread(reader) -> list:
    """:func:`read_all` on a daemon thread: a reader spinning inside ``poll_next`` fails the
    test (after the wait's timeout) instead of hanging it."""
    result: dict = {}

    def run() -> None:
        try:
            result["out"] = read_all(reader)
        except BaseException as exc:  # noqa: BLE001 (handed to the test's thread)
            result["error"] = exc

    threading.Thread(target=run, daemon=True).start()
    wait_for(lambda: result, "the reader returns or raises", timeout_s=30)
    if "error" in result:
        raise result["error"]
    return result["out"]


def lines(n: int) -> str:
    return "".join(f"line {i}\n" for i in range(n))


@pytest.mark.parametrize("split_bytes", [16 << 20, 1000])
def test_a_file_truncated_after_planning_fails_naming_it(tmp_path: Path, split_bytes):
    path = tmp_path / "app.log"
    path.write_text(lines(1000))
    source = TextSource(str(path), split_bytes=split_bytes)
    reader = source.create_reader(None)
    reader.add_splits(source.create_splits(1))
    path.write_text("short\n")
    with pytest.raises(ValueError, match=rf"read_text: {path} ends at byte \d+, but it had at least \d+ bytes "
                                         "when the job was planned: it was truncated or replaced"):
        read_all_in_a_thread(reader)


def test_a_file_deleted_before_planning_fails_naming_it(tmp_path: Path):
    for name in ("a.txt", "b.txt"):
        (tmp_path / name).write_text(lines(3))
    source = TextSource(str(tmp_path))
    (tmp_path / "b.txt").unlink()
    with pytest.raises(ConfigError, match=rf"input file '{tmp_path / 'b.txt'}' no longer exists"):
        source.create_splits(2)


def test_a_file_replaced_by_a_directory_before_planning_fails_naming_it(tmp_path: Path):
    (tmp_path / "a.txt").write_text(lines(3))
    source = TextSource(str(tmp_path / "a.txt"))
    (tmp_path / "a.txt").unlink()
    (tmp_path / "a.txt").mkdir()
    with pytest.raises(ConfigError, match="is now a directory"):
        source.create_splits(1)


def test_a_file_deleted_after_planning_fails_naming_it(tmp_path: Path):
    for name in ("a.txt", "b.txt"):
        (tmp_path / name).write_text(lines(3))
    source = TextSource(str(tmp_path))
    reader = source.create_reader(None)
    reader.add_splits(source.create_splits(1))
    (tmp_path / "b.txt").unlink()
    with pytest.raises(FileNotFoundError, match=rf"input file {tmp_path / 'b.txt'} no longer exists"):
        read_all(reader)


def test_files_left_alone_read_as_before(tmp_path: Path):
    (tmp_path / "a.txt").write_text(lines(200))
    (tmp_path / "empty.txt").write_text("")
    source = TextSource(str(tmp_path), split_bytes=500)
    reader = source.create_reader(None)
    reader.add_splits(source.create_splits(2))
    assert read_all(reader) == [f"line {i}" for i in range(200)]
