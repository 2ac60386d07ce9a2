"""Keyed state used with no current key (a KeyedProcessFunction reading its state in
``open()``) fails with a StateError that says where keyed state can be used.

The message told the user to "call backend.set_current_key(key) first", a call of the
engine's that a KeyedProcessFunction never makes; it now says that keyed state belongs to the
key of the record or timer being processed and is read and written in process_element() or
on_timer(), open() only declaring it. Both backends, every state kind. No Ray."""

from __future__ import annotations

import pytest

from raystream.checkpoint import (
    ListStateDescriptor,
    MapStateDescriptor,
    ReducingStateDescriptor,
    ValueStateDescriptor,
)
from raystream.engine.errors import StateError
from raystream.engine.keygroups import KeyGroupRange

MAXP = 128
USES = {
    "value": (ValueStateDescriptor("count", default=0), lambda s: s.update(s.value() + 1)),
    "list": (ListStateDescriptor("count"), lambda s: s.add(1)),
    "map": (MapStateDescriptor("count"), lambda s: s.put("a", 1)),
    "reducing": (ReducingStateDescriptor("count", max), lambda s: s.get()),
}


@pytest.mark.parametrize("kind", sorted(USES))
def test_state_used_with_no_current_key_says_where_to_use_it(make_backend, kind):
    b = make_backend(KeyGroupRange(0, MAXP - 1), MAXP)
    descriptor, use = USES[kind]
    state = b.get_state(descriptor)  # declaring it needs no key
    with pytest.raises(StateError) as err:
        use(state)
    message = str(err.value)
    assert "state 'count' used without a current key" in message
    assert "process_element() or on_timer()" in message and "open()" in message
    b.set_current_key("k")
    use(state)  # with a key it works
