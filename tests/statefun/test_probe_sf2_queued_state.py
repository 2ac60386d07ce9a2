"""The dispatcher's queued messages are snapshotted split by key group
(``statefun_api.queued_state``): every subtask's share, restored, holds exactly the messages
of its key groups, each address's in their order, whatever the form they were queued in
(records, Arrow batches of several schemas, empty batches)."""

from __future__ import annotations

import pytest

from raystream.engine.keygroups import KeyGroupRange, key_group_for
from raystream.engine.operator import key_group_sharer
from raystream.statefun_api import message_builder
from raystream.statefun_api.queued_state import queued_snapshot, restored_messages
from raystream.statefun_api.routing import (
    message_to_record,
    record_typed_value,
    records_to_arrow_batch,
)

MAX_PARALLELISM = 128


def _messages(n: int, start: int = 0, as_str: bool = False) -> list[tuple]:
    out = []
    for i in range(start, start + n):
        target = f"t/f{i % 3}"
        ident = f"id-{(i * 7919) % 41}-ü"
        m = message_builder(target, ident, str_value=f"v{i}") if as_str else message_builder(target, ident, int_value=i)
        out.append(message_to_record(m))
    return out


def _ranges(parallelism: int) -> list[KeyGroupRange]:
    step = MAX_PARALLELISM // parallelism
    return [KeyGroupRange(i * step, MAX_PARALLELISM - 1 if i == parallelism - 1 else (i + 1) * step - 1)
            for i in range(parallelism)]


def _by_address(records) -> dict[tuple[str, str], list]:
    out: dict[tuple[str, str], list] = {}
    for r in records:
        tv = record_typed_value(r)  # (encoded or not, as Arrow gives it back)
        out.setdefault((r[0], r[1]), []).append((tv.typename, tv.value))
    return out


@pytest.mark.parametrize("parallelism", [1, 2, 3, 7])
def test_each_share_holds_its_key_groups_messages_in_their_order(parallelism: int) -> None:
    records = _messages(300)
    batch_records = [_messages(50, 1000), [], _messages(70, 2000, as_str=True), _messages(30, 3000), _messages(1, 4000)]
    batches = [records_to_arrow_batch(b) if b else records_to_arrow_batch(_messages(1))[:0] for b in batch_records]
    state = queued_snapshot(records, batches, lambda key: key_group_for(key, MAX_PARALLELISM), MAX_PARALLELISM)
    share = key_group_sharer(state)
    expected_all = _by_address(records + [r for b in batch_records for r in b])
    seen: dict[tuple[str, str], list] = {}
    for rng in _ranges(parallelism):
        own, unfiltered = restored_messages([share(rng)])
        assert unfiltered == []
        assert all(key_group_for((r[0], r[1]), MAX_PARALLELISM) in rng for r in own)
        for address, values in _by_address(own).items():
            assert address not in seen
            seen[address] = values
    assert seen == expected_all
    assert sum(len(v) for v in seen.values()) == 300 + 151


def test_the_previous_format_comes_back_unfiltered_in_its_order() -> None:
    records = _messages(10)
    batch = records_to_arrow_batch(_messages(5, 100))
    own, unfiltered = restored_messages([{"pending": records, "queued": [batch]}, None, {}])
    assert own == []
    assert [r[:2] for r in unfiltered] == [r[:2] for r in records + _messages(5, 100)]
