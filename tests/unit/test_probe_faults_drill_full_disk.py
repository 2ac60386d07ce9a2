"""The drill's ``--full-disk``: every seed's plan also fills the disk of one checkpoint.

Its rules fail the state files of ``chk-<k>`` and the shared files first uploaded for ``k``
(the RocksDB backend's SST files and deltas) with ENOSPC after a few bytes; the plan is
otherwise the seed's plan without it (the CI seeds of ``tests/integration/test_drill.py`` keep
their faults).
"""

from __future__ import annotations

import errno

import pytest

from benchmarks.drill import DISK_FAULTS, FULL_AFTER_BYTES, plan_seed
from raystream.checkpoint.faults import InjectedFault, faulty_filesystem


@pytest.mark.parametrize("seed", range(12))
def test_a_full_disk_plan_is_the_seeds_plan_plus_the_full_disk(seed):
    plain, full = plan_seed(seed), plan_seed(seed, full_disk=True)
    assert full.faults[:-1] == plain.faults
    assert (full.sink, full.parallelism, full.timeout_ms) == (plain.sink, plain.parallelism, plain.timeout_ms)
    fault = full.faults[-1]
    assert fault.kind in DISK_FAULTS and fault == plan_seed(seed, kill_master=False, full_disk=True).faults[-1]


def test_the_full_disk_fills_the_state_and_the_shared_files_of_one_checkpoint(tmp_path):
    fault = plan_seed(5, full_disk=True).faults[-1]
    k = int(fault.detail.split()[0].removeprefix("chk-"))
    fs = faulty_filesystem(rules=fault.rules)
    base = tmp_path / "job"
    hit = [str(base / f"chk-{k}" / "op-x" / "0-0-keyed"), str(base / "shared" / f"{k}-0123456789abcdef-000009.sst")]
    spared = [str(base / f"chk-{k + 1}" / "op-x" / "0-0-keyed"), str(base / "shared" / f"{k + 1}-0123456789abcdef-1.sst"),
              str(base / "shared" / f"1{k}-0123456789abcdef-1.sst")]
    for path in hit + spared:
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        out = fs.open_output_stream(path)
        try:
            out.write(b"x" * (FULL_AFTER_BYTES + 1))
            failed = None
        except InjectedFault as exc:
            failed = exc
        out.close()
        if path in hit:
            assert failed is not None and failed.errno == errno.ENOSPC, path
            assert len(open(path, "rb").read()) == FULL_AFTER_BYTES  # (the partial file stays)
        else:
            assert failed is None, path
