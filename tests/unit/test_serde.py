"""State serialization: pickle with the cloudpickle fallback, and pickles of raystream 0.1
(packages without the ``raystream.`` prefix) read by today's names."""

from __future__ import annotations

import pickle
import sys

import pytest

from raystream.engine.errors import CheckpointError
from raystream.engine.keygroups import KeyGroupRange
from raystream.engine.serde import dumps, loads


def _as_written_by_0_1(obj: object) -> bytes:
    # protocol 0 names classes as text ("c<module>\n<name>\n"), so the old module path can be spelled out
    text = pickle.dumps(obj, protocol=0)
    assert b"craystream.engine.keygroups\n" in text
    return text.replace(b"craystream.engine.", b"cengine.")


def test_round_trip_and_cloudpickle_fallback():
    assert loads(dumps({"a": [1, 2]})) == {"a": [1, 2]}
    assert loads(dumps(lambda x: x * 3))(2) == 6


def test_pickles_naming_the_old_top_level_packages_load_as_raystream_classes(monkeypatch):
    # as installed: no top-level ``engine`` (in this repository the folder itself would import)
    monkeypatch.setitem(sys.modules, "engine", None)
    old = _as_written_by_0_1({"range": KeyGroupRange(0, 7)})
    with pytest.raises(ModuleNotFoundError):
        pickle.loads(old)
    restored = loads(old)
    assert restored == {"range": KeyGroupRange(0, 7)} and type(restored["range"]) is KeyGroupRange


def test_unknown_modules_still_fail_naming_what_was_read():
    broken = pickle.dumps(KeyGroupRange(0, 1), protocol=0).replace(b"craystream.engine.keygroups", b"cnowhere.keygroups")
    with pytest.raises(CheckpointError, match="cannot deserialize state 'counts'.*nowhere"):
        loads(broken, "state 'counts'")
