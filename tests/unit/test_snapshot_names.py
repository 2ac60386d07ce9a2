"""Operator uids map to distinct state files: the snapshot writer never lets two uids of one
task share (and overwrite) a file, in checkpoints and in savepoints built from them."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from raystream.checkpoint import CheckpointStorage
from raystream.engine.snapshots import AsyncSnapshotWriter, state_dir_name

LOOKALIKES = ["a/b", "a_b", "a b", "a\\b", "A_b", "a_b-648fa9b31bc7ff7e", "_a_b", ".a_b", "..", "", "ä_b"]


def test_lookalike_uids_get_distinct_readable_names():
    names = [state_dir_name(uid) for uid in LOOKALIKES]
    assert len(set(names)) == len(names)
    assert len({n.casefold() for n in names}) == len(names)  # also on case-insensitive filesystems
    assert state_dir_name("a/b").startswith("a_b-") and state_dir_name("reduce-7").startswith("reduce-7-")
    assert state_dir_name("a/b") == state_dir_name("a/b")


@given(st.text(max_size=300), st.text(max_size=300))
def test_every_uid_gives_its_own_valid_state_name(uid, other):
    name = state_dir_name(uid)
    assert len(name) <= 48 + 17
    assert not name.startswith(("_", ".")) and "/" not in name and "\\" not in name
    assert name.isascii()
    assert (state_dir_name(other) == name) == (other == uid)


def _snapshot(storage, state):
    acks = []
    writer = AsyncSnapshotWriter(storage, "job", on_error=None)
    try:
        writer(1, 0, 0, state, lambda cid, v, s, handles: acks.append(handles), lambda cid, reason, *rest: acks.append(reason))
        writer.drain()
    finally:
        writer.close()
    (handles,) = acks
    assert isinstance(handles, dict), handles  # acked, not declined
    return handles


@pytest.mark.parametrize("other", ["a_b", "a b"])
def test_chained_operators_with_lookalike_uids_restore_their_own_state(tmp_path, other):
    storage = CheckpointStorage(str(tmp_path))
    state = {"a/b": {"op": b"state of a/b", "log": b"log of a/b"}, other: {"op": b"state of other", "log": b"log"}}
    handles = _snapshot(storage, state)
    assert handles["a/b"]["op"].path != handles[other]["op"].path
    storage.write_metadata("job", 1, {"handles": handles})

    restored = storage.read_metadata("job", 1)["handles"]
    for uid, entry in state.items():
        for part in ("op", "log"):
            assert storage.read_state(restored[uid][part]) == entry[part]

    # a savepoint names each file by the last two segments of its checkpoint path (as the
    # job master does): those stay distinct too
    files = {f"{h.path.rsplit('/', 2)[-2]}/{h.path.rsplit('/', 1)[-1]}": (uid, part)
             for uid, entry in restored.items() for part, h in entry.items() if part != "committables"}
    assert len(files) == 4
    where = storage.write_savepoint(str(tmp_path / "sp"), {}, {n: state[u][p] for n, (u, p) in files.items()})
    _, reader = storage.read_savepoint(where)
    assert {files[n]: reader.read(n) for n in reader.names()} == {(u, p): state[u][p] for u, p in files.values()}
