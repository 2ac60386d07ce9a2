"""``state_backend``: the tests whose state goes through the keyed state backend (process
functions' keyed state and timers, the record-API reduce) run on both backends: the heap
one and RocksDB (where timers and reduce values live in the backend, not the operator)."""

from __future__ import annotations

import pytest

from raystream.checkpoint.backends import HeapStateBackend


@pytest.fixture(params=["heap", "rocksdb"])
def state_backend(request, tmp_path):
    if request.param == "heap":
        return HeapStateBackend()
    pytest.importorskip("rocksdict")
    from raystream.checkpoint.backends import RocksDBStateBackend

    return RocksDBStateBackend(str(tmp_path / "rocksdb"), cache_size=1024)
