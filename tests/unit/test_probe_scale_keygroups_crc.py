"""Key groups of string columns whose values all have one byte length (keys such as
``k00042``): hashed from an (n, length) view of the values' bytes, equal to
:func:`key_group_for` of each value, also for a slice of a column and for binary and large
types; columns of mixed lengths keep their own path."""

from __future__ import annotations

import random

import pyarrow as pa
import pytest

from raystream.engine.keygroups import key_group_for, key_groups_of_array

ALPHABET = "ak0Zé€\U0001f600"


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("arrow_type", [pa.string(), pa.large_string(), pa.binary(), pa.large_binary()], ids=str)
def test_one_length_columns_hash_as_key_group_for(seed, arrow_type):
    rnd = random.Random(seed)
    for _ in range(60):
        length = rnd.randint(1, 12)
        values = ["".join(rnd.choice(ALPHABET) for _ in range(length)) for _ in range(rnd.randint(1, 80))]
        same_bytes = [v for v in values if len(v.encode()) == len(values[0].encode())]
        for vals in (same_bytes, values):  # one byte length, and mixed
            raw = [v.encode() if pa.types.is_binary(arrow_type) or pa.types.is_large_binary(arrow_type) else v
                   for v in vals]
            column = pa.array(["pad", *raw, "tail"] if isinstance(raw[0], str) else [b"pad", *raw, b"tail"],
                              arrow_type)
            for col in (column.slice(1, len(raw)), pa.array(raw, arrow_type)):
                want = [key_group_for(k, 128) for k in raw]
                assert key_groups_of_array(col, 128).tolist() == want, (vals, arrow_type)
