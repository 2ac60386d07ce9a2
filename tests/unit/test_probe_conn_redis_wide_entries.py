"""A Redis sink entry with more fields than one Lua call takes (against a real ``redis-server``).

The commit script appends an entry with one ``XADD`` whose arguments are the entry's fields,
and a Lua call in Redis takes about 8,000 arguments. Before, a record of 4,000 fields passed
the writer and failed the commit script halfway, after it had appended the committable's
earlier entries and before it set the marker: Redis does not undo a failed script's writes,
so every re-commit after a restart appended those entries again (a job with 3 restarts
wrote its first record 6 times, then failed). Now the writer refuses such a record, naming it
and how to pack its fields, and the script checks every entry before it writes anything.
"""

from __future__ import annotations

import pytest

from raystream.engine.errors import ConfigError, RaystreamError
from raystream.engine.keygroups import KeyGroupRange
from raystream.engine.operator import OperatorContext
from raystream.engine.records import Batch
from raystream.operators.redis_streams import (
    MAX_ENTRY_FIELDS,
    RedisStreamCommittable,
    RedisStreamSink,
)


def _ctx() -> OperatorContext:
    return OperatorContext("out", "out", "out (1/1)", 0, 1, 128, KeyGroupRange(0, 127))


def _wide(n: int) -> dict[str, int]:
    return {f"f{j}": j for j in range(n)}


def test_a_record_with_too_many_fields_fails_at_the_writer_naming_it(redis_url):
    writer = RedisStreamSink("out", redis_url).create_writer(_ctx())
    writer.write(Batch.of_records([_wide(MAX_ENTRY_FIELDS)]))  # the most there may be
    with pytest.raises(ConfigError, match=rf"entry of 4,500 fields.*at most {MAX_ENTRY_FIELDS:,}.*serializer") as info:
        writer.write(Batch.of_records([_wide(4500)]))
    assert "{'f0': 0, 'f1': 1" in str(info.value) and len(str(info.value)) < 800  # the record, cut short


@pytest.mark.parametrize("maxlen", [None, 10])
def test_an_entry_of_the_most_fields_commits(redis_url, redis_client, maxlen):
    redis_client.delete("out")
    sink = RedisStreamSink("out", redis_url, maxlen=maxlen)
    sink.create_committer().commit([RedisStreamCommittable("most", {"out": [{"a": 1}, _wide(MAX_ENTRY_FIELDS)]})])
    assert [len(fields) for _id, fields in redis_client.xrange("out")] == [1, MAX_ENTRY_FIELDS]


def test_a_committable_with_a_too_wide_entry_writes_nothing_however_often_it_comes(redis_url, redis_client):
    """A committable of a narrow entry, then one the script cannot append (made by hand, as a
    restored checkpoint of an older version could hold it): each commit fails and writes
    nothing, neither the narrow entry nor the marker."""
    redis_client.delete("out")
    sink = RedisStreamSink("out", redis_url)
    committable = RedisStreamCommittable("wide", {"out": [{"a": 1}, _wide(4500)]})
    for attempt in range(3):  # (the first commit and the re-commits of restarts)
        with pytest.raises(RaystreamError, match="'wide'.*failed") as info:
            sink.create_committer().commit([committable])
        assert redis_client.xlen("out") == 0, f"commit {attempt + 1} appended {redis_client.xlen('out')} entries"
    assert not redis_client.exists(sink.marker_key("wide"))
    assert "an entry for out has 4500 fields; a commit appends entries of at most 3900 fields" in str(info.value)
