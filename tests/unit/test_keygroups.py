import os
import subprocess
import sys

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.errors import ConfigError
from engine.keygroups import (
    KeyGroupRange,
    key_group_for,
    key_groups_of_array,
    key_groups_of_keys,
    stable_hash,
    subtask_for_key_group,
)


@given(st.integers(1, 256).flatmap(lambda m: st.tuples(st.just(m), st.integers(1, m))))
def test_ranges_partition_all_key_groups(mp):
    max_p, p = mp
    seen = []
    for i in range(p):
        r = KeyGroupRange.for_subtask(i, p, max_p)
        for kg in r:
            assert subtask_for_key_group(kg, p, max_p) == i
        seen.extend(r)
    assert seen == list(range(max_p))


@given(st.lists(st.text(max_size=12), max_size=200), st.sampled_from([1, 7, 128, 4096]))
def test_vectorized_strings_match_scalar(keys, max_p):
    got = key_groups_of_array(pa.array(keys, pa.string()), max_p).tolist()
    assert got == [key_group_for(k, max_p) for k in keys]


@given(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=200), st.sampled_from([1, 128, 1000]))
def test_vectorized_ints_match_scalar(keys, max_p):
    got = key_groups_of_array(pa.array(keys, pa.int64()), max_p).tolist()
    assert got == [key_group_for(k, max_p) for k in keys]


def test_dictionary_and_large_string_arrays():
    keys = ["a", "b", "a", "c"] * 10
    expect = [key_group_for(k, 128) for k in keys]
    assert key_groups_of_array(pa.array(keys).dictionary_encode(), 128).tolist() == expect
    assert key_groups_of_array(pa.array(keys, pa.large_string()), 128).tolist() == expect
    assert key_groups_of_keys(keys, 128).tolist() == expect


def test_tuple_float_none_keys_are_stable():
    assert stable_hash((1, "a")) == stable_hash((1, "a"))
    assert stable_hash((1, "a")) != stable_hash(("a", 1))
    assert stable_hash(3.0) == stable_hash(3)
    assert stable_hash(None) == stable_hash(None)


def test_objects_without_stable_repr_are_rejected():
    with pytest.raises(ConfigError, match="deterministic"):
        stable_hash(object())


def test_same_routing_in_processes_with_different_hash_seeds():
    code = (
        "from engine.keygroups import key_group_for;"
        "print([key_group_for(k, 128) for k in ['apple', 'pear', 'k00042', 42, (1, 'x'), b'raw', 2.5]])"
    )
    outs = set()
    for seed in ("1", "2", "12345"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        outs.add(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout)
    assert len(outs) == 1
