"""RocksDB's MANIFEST (its log of changes to the set of SST files) goes inline into every
checkpoint of the RocksDB backend; it grew by ~190 bytes every materialization for as long as
the job ran (RocksDB starts a new one only past 1 GiB by default): 10 keys, 300 materialized
checkpoints, a 57 kB MANIFEST in the last one. Now it is bounded. No Ray."""

from __future__ import annotations

import pytest

pytest.importorskip("rocksdict")

from raystream.checkpoint import RocksDBKeyedStateBackend, RocksDBStateBackend, ValueStateDescriptor  # noqa: E402
from raystream.checkpoint.rocksdb_files import RocksDBSnapshot, parse_manifest  # noqa: E402
from raystream.engine.keygroups import KeyGroupRange  # noqa: E402

MAXP = 128


def test_the_rocksdb_manifest_in_a_checkpoint_stays_bounded_over_hundreds_of_materializations(tmp_path):
    b = RocksDBKeyedStateBackend(KeyGroupRange(0, MAXP - 1), MAXP, local_dir=str(tmp_path / "local"),
                                 changelog_bytes=0)  # (every snapshot materializes: flush, new MANIFEST entries)
    sb = RocksDBStateBackend()
    try:
        v = b.get_state(ValueStateDescriptor("v"))
        manifests = []
        for cid in range(1, 301):
            for k in range(10):
                b.set_current_key(k)
                v.update(cid)
            snap = b.snapshot(cid)
            assert isinstance(snap, RocksDBSnapshot)
            source = parse_manifest(sb.serialize_snapshot(snap))
            manifests.append(sum(n for name, (_, n) in source.private.items() if name.startswith("MANIFEST")))
            snap.done()
        assert max(manifests[150:]) < 40_000, manifests[-10:]  # (32 KiB, then a new one of the live files)
        r = RocksDBKeyedStateBackend(KeyGroupRange(0, MAXP - 1), MAXP, local_dir=str(tmp_path / "local"))
        try:
            r.restore([sb.deserialize_snapshot(sb.serialize_snapshot(b.snapshot(301)), r.key_group_range)])
            rv = r.get_state(ValueStateDescriptor("v"))
            got = {}
            for k in range(10):
                r.set_current_key(k)
                got[k] = rv.value()
            assert got == dict.fromkeys(range(10), 300)
        finally:
            r.close()
    finally:
        b.close()
