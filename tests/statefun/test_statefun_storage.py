"""context.storage: attribute access, dirty tracking, deletion and error messages."""

from __future__ import annotations

import pickle

import pytest

from raystream.statefun_api import IntType, StringType, TypedValue, ValueSpec, make_json_type
from raystream.statefun_api.storage import make_storage, storage_mutations

SPECS = [
    ValueSpec("seen", IntType),
    ValueSpec("name", StringType),
    ValueSpec("profile", make_json_type("com.example/Profile")),
]
SEEN_3 = bytes.fromhex("0d03000000")


def storage(values=None):
    return make_storage("com.example/user", SPECS, values or {})


def test_reads_stored_values_and_absent_ones() -> None:
    s = storage({"seen": SEEN_3, "name": None})
    assert s.seen == 3
    assert s.name is None
    assert s.profile is None
    assert storage_mutations(s) == {}  # reading does not dirty


def test_only_assigned_or_deleted_values_are_reported() -> None:
    s = storage({"seen": SEEN_3, "name": bytes.fromhex("0a03616e6e")})
    s.seen += 1
    del s.name
    assert s.seen == 4
    assert s.name is None
    assert storage_mutations(s) == {"seen": bytes.fromhex("0d04000000"), "name": None}


def test_assigning_the_same_value_still_counts() -> None:
    s = storage({"seen": SEEN_3})
    s.seen = 3  # refreshes an expire_after_write TTL, so it is reported
    assert storage_mutations(s) == {"seen": SEEN_3}


def test_delete_then_set_reports_the_last_value() -> None:
    s = storage({"seen": SEEN_3})
    del s.seen
    s.seen = 0
    assert storage_mutations(s) == {"seen": b""}  # 0 is proto3's default: empty bytes
    assert s.seen == 0


def test_json_values_are_deserialized_on_every_read() -> None:
    s = storage()
    s.profile = {"tags": []}
    s.profile["tags"].append("lost")  # a fresh copy: in-place changes are not stored
    assert s.profile == {"tags": []}
    profile = s.profile
    profile["tags"].append("kept")
    s.profile = profile
    assert s.profile == {"tags": ["kept"]}


def test_typed_values_are_accepted_and_checked() -> None:
    s = storage({"seen": TypedValue("io.statefun.types/int", True, SEEN_3), "name": TypedValue()})
    assert s.seen == 3 and s.name is None
    with pytest.raises(TypeError, match=r"'seen'.*'com.example/user'.*'io.statefun.types/string'"):
        storage({"seen": TypedValue("io.statefun.types/string", True, b"\n\x01x")})


def test_undeclared_names_are_ignored_in_input() -> None:
    assert storage({"old_spec": b"123"}).seen is None


def test_reading_undeclared_attribute_names_function_and_attribute() -> None:
    s = storage()
    with pytest.raises(
        AttributeError, match=r"'visits' is not a declared ValueSpec of function 'com.example/user'"
    ):
        s.visits  # noqa: B018
    with pytest.raises(AttributeError, match="'visits'"):
        s.visits = 1
    with pytest.raises(AttributeError, match="'visits'"):
        del s.visits
    assert getattr(s, "visits", "default") == "default"
    assert not hasattr(s, "visits")


def test_wrong_type_names_spec_and_expected_type() -> None:
    s = storage()
    with pytest.raises(
        TypeError, match=r"'abc'.*state 'seen'.*'com.example/user'.*'io.statefun.types/int'"
    ):
        s.seen = "abc"
    with pytest.raises(ValueError, match=r"state 'seen'.*'io.statefun.types/int'"):
        s.seen = 2**40
    with pytest.raises(TypeError, match=r"state 'profile'.*'com.example/Profile'"):
        s.profile = object()
    assert storage_mutations(s) == {}  # failed assignments change nothing


def test_none_is_not_a_value() -> None:
    with pytest.raises(ValueError, match=r"del context.storage.seen"):
        storage().seen = None


def test_corrupt_stored_bytes_name_the_spec() -> None:
    s = storage({"name": bytes.fromhex("0a01ff")})
    with pytest.raises(ValueError, match=r"state 'name'.*cannot deserialize"):
        s.name  # noqa: B018


def test_bad_stored_value_type() -> None:
    with pytest.raises(TypeError, match="bytes, a TypedValue or None"):
        storage({"seen": 3})


def test_dir_and_pickle() -> None:
    s = storage()
    assert dir(s) == ["name", "profile", "seen"]
    with pytest.raises(TypeError, match="can not be pickled"):
        pickle.dumps(s)


def test_spec_names_cannot_clash_with_internals() -> None:
    s = make_storage("a/b", [ValueSpec("_cells", IntType), ValueSpec("_typename", IntType)], {})
    s._cells = 1
    s._typename = 2
    assert (s._cells, s._typename) == (1, 2)
    assert set(storage_mutations(s)) == {"_cells", "_typename"}


def test_reused_storage_reads_each_address_value_whatever_form_it_is_held_in() -> None:
    """The dispatcher's reusable storage (StorageSlots) reads a value held decoded without a
    call and a value held serialized (e.g. restored from a snapshot) by decoding it: a value
    of the previous address must never show through, nor a JSON object be shared between
    reads."""
    from raystream.statefun_api.storage import StorageSlots

    profile = make_json_type("com.example/Profile")
    specs = (ValueSpec("seen", IntType), ValueSpec("profile", profile))
    seen: dict = {0: {"a": ("io.statefun.types/int", 5), "b": TypedValue("io.statefun.types/int", True, bytes.fromhex("0d07000000"))}}
    profiles: dict = {0: {"a": TypedValue(profile.typename, True, b'{"tags": ["x"]}')}}
    slots = StorageSlots("com.example/user", specs, [None, None])
    slots.bind_tables([seen, profiles], set())
    for key, expected_seen, expected_profile in [
        ("a", 5, {"tags": ["x"]}), ("b", 7, None), ("c", None, None), ("b", 7, None), ("a", 5, {"tags": ["x"]})
    ]:
        s = slots.load_at(0, key)
        assert (s.seen, s.seen, s.profile) == (expected_seen, expected_seen, expected_profile), key
        if expected_profile is not None:
            assert s.profile is not s.profile  # deserialized on every read
    s = slots.load_at(0, "b")
    s.seen += 1
    slots.store_at(0, "b")
    assert seen[0]["b"] == ("io.statefun.types/int", 8)
    s = slots.load_at(0, "c")
    assert s.seen is None
    s.seen = 1
    del s.seen
    assert s.seen is None
    slots.store_at(0, "c")
    assert "c" not in seen[0]
