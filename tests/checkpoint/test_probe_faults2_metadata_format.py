"""A savepoint whose metadata this release cannot read is refused naming the path and the remedy.

``from_savepoint=`` a directory whose ``_metadata`` is of another metadata format (another
raystream release), or holds no checkpoint metadata at all, fails the job at once (no restart)
with a ``CheckpointError`` that names the path, what was found and what to do. Before, the first
was ``unsupported checkpoint metadata format 2`` (no path, no remedy) and the second a bare
``TypeError`` from inside the job master (on Ray, a traceback of ``JobMasterActor.run()``).
"""

from __future__ import annotations

import pytest

import raystream as rs
from raystream.checkpoint import CheckpointStorage
from raystream.checkpoint.coordinator import METADATA_FORMAT
from raystream.engine.config import JobConfig
from raystream.engine.errors import CheckpointError
from raystream.engine.local_runtime import run_in_process

METADATA = {"job_id": "old", "checkpoint_id": 7, "max_parallelism": 128, "operators": {}, "carried_committables": {}}


@pytest.mark.parametrize("metadata, found", [
    ({**METADATA, "format": METADATA_FORMAT + 1},
     f"its metadata is of format {METADATA_FORMAT + 1} and this raystream release reads format {METADATA_FORMAT}: "
     "it was written by another release; restore it with the release that wrote it"),
    (["not", "metadata"], "the metadata holds no checkpoint (a list): it was written by another raystream release"),
    ({"format": METADATA_FORMAT}, "the metadata holds no checkpoint (a dict)"),
])
def test_a_savepoint_of_another_format_is_refused_naming_the_path_and_the_remedy(tmp_path, metadata, found):
    path = CheckpointStorage(str(tmp_path)).write_savepoint(str(tmp_path / "sp"), metadata, {})
    env = rs.StreamEnvironment(parallelism=1)
    env.enable_checkpointing(50, checkpoint_dir=str(tmp_path / "chk"))
    env.set_restart_strategy(rs.RestartStrategy.fixed_delay(3, 0))
    env.generate(lambda i: {"k": i % 3}, count=10).uid("src").key_by("k").sum("k").uid("s").collect()
    masters: list = []
    config = JobConfig(name="restore", checkpoint=env.checkpoint_config, from_savepoint=path,
                       restart=env.restart_strategy)
    with pytest.raises(CheckpointError) as err:
        run_in_process(env.get_job_graph(), config, on_start=lambda m, _r: masters.append(m), timeout_s=60)
    assert str(err.value).startswith(f"cannot restore {path!r}: {found}"), str(err.value)
    assert "or start the job without it" in str(err.value)
    assert masters[0].restarts == 0


@pytest.mark.parametrize("content", [b"hello world", b"hello world, this is not a checkpoint"])
def test_a_savepoint_raystream_did_not_write_names_the_remedy(tmp_path, content):
    (tmp_path / "sp").mkdir()
    (tmp_path / "sp" / "_metadata").write_bytes(content)
    env = rs.StreamEnvironment(parallelism=1)
    env.from_collection([1, 2]).collect()
    with pytest.raises(CheckpointError, match=r"_metadata.*a file raystream did not write.*restore from the directory "
                                              r"of a savepoint or of a chk-<n> that raystream wrote"):
        env.execute("not-ours", from_savepoint=str(tmp_path / "sp"))
