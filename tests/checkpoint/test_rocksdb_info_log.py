"""RocksDB's info log (``LOG`` in the database directory) is bounded.

Every flush (each checkpoint of the RocksDB backend flushes) appends a few KB of statistics
to ``LOG``, which never rolled over: 300 flushes left a 1.9 MB file, and a job checkpointing
every 100 ms grew it by megabytes an hour on every task. It now rolls at
``LOG_FILE_BYTES`` with ``LOG_FILES_KEPT`` old files kept."""

from __future__ import annotations

import os

import pytest

rocksdict = pytest.importorskip("rocksdict")

from raystream.checkpoint.rocksdb_files import LOG_FILES_KEPT, open_db  # noqa: E402


def info_logs(path: str) -> dict[str, int]:
    return {f: os.path.getsize(os.path.join(path, f)) for f in os.listdir(path) if f.startswith("LOG")}


def test_the_info_log_rolls_over_and_keeps_a_bounded_number_of_files(tmp_path):
    limit = 32 << 10
    db = open_db(rocksdict, str(tmp_path), write_buffer_bytes=1 << 20, block_cache_bytes=1 << 20, log_file_bytes=limit)
    try:
        for i in range(400):  # each flush logs a few KB: ~2 MB without a limit
            db[b"k%d" % i] = b"v"
            db.flush()
        logs = info_logs(str(tmp_path))
    finally:
        db.close()
    assert len(logs) <= LOG_FILES_KEPT + 1, logs
    # (a file rolls once it passes the limit: at most one flush's lines beyond it)
    assert sum(logs.values()) <= (LOG_FILES_KEPT + 1) * (limit + (16 << 10)), logs
