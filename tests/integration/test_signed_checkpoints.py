"""Signed checkpoints on a real local Ray: the secret given to ``enable_checkpointing`` signs
the files the tasks and the job master write, and a savepoint restores only with it."""

import pytest

import raystream as rs
from raystream.checkpoint.format import SIGNATURE_FIELD, read_blob_header
from tests.waiting import wait_for


def _job(tmp_path, secret, count):
    env = rs.StreamEnvironment(parallelism=2)
    env.enable_checkpointing(100, checkpoint_dir=str(tmp_path / "chk"), secret=secret)
    (
        env.generate(lambda i: i, count=count, rate=20_000).uid("source")
        .key_by(lambda x: x % 3).reduce(lambda a, b: a + b).uid("sum")
        .collect()
    )
    return env


def test_savepoint_restores_only_with_its_secret(tmp_path):
    # (a restored generator split keeps its own end, as Flink's restored splits do: the
    # restored job reads the rest of the 100,000, ~5 s at 20,000/s at most)
    client = _job(tmp_path, "s3cret", 100_000).execute_async("signed")
    wait_for(lambda: (client.metrics().get("operators", {}).get("reduce", {}).get("records_in", 0) or 0) > 1000,
             "the job summed 1,000 records")
    sp = client.stop_with_savepoint(str(tmp_path / "sp"))
    client.wait()
    files = [p for p in (tmp_path / "sp").rglob("*") if p.is_file()]
    assert any(p.name.endswith("-keyed") for p in files)
    for f in files:
        assert SIGNATURE_FIELD in read_blob_header(f.read_bytes()).extra, f

    with pytest.raises(rs.CheckpointError, match="signed with another secret"):
        _job(tmp_path, "other secret", 10).execute("wrong secret", from_savepoint=sp)
    result = _job(tmp_path, "s3cret", 10).execute("right secret", from_savepoint=sp)
    assert result.savepoint is None
