"""Issue 13: a message between embedded functions is never encoded to TypedValue bytes, nor
is a built-in value in state or on its way to an egress read as decoded Python values:
encoding happens only at boundaries (remote calls, snapshots, egress serialisation). A
chain of embedded functions passes each built-in type (int, long, float, double, str,
bool) on, stores it, and emits it to egresses, in process at parallelism 1 and 2 (the
second through the feedback edge between subtasks, shipped as Arrow as a channel ships it:
one batch per value kind, typed columns); no built-in serializer runs.

The one exception is ``FloatType`` (float32): a Python float is not held decoded as it,
since the value the receiver reads is the float32-rounded one (``0.1`` arrives as
``0.10000000149011612``, as on StateFun); it is encoded where it is built, as before."""

from __future__ import annotations

from typing import Any

import pytest

from raystream.statefun_api import (
    BoolType,
    DoubleType,
    FloatType,
    IntType,
    LongType,
    StatefulFunctions,
    StringType,
    ValueSpec,
    egress_message_builder,
    message_builder,
)
from raystream.statefun_api import types as types_module
from raystream.statefun_api.local import LocalDispatchers

OUT = "test/out"
KINDS = [
    ("int_value", IntType, 7),
    ("long_value", LongType, 1 << 40),
    ("float_value", FloatType, 0.5),
    ("double_value", DoubleType, 2.25),
    ("str_value", StringType, "v"),
    ("bool_value", BoolType, True),
]


def _functions() -> StatefulFunctions:
    functions = StatefulFunctions()
    specs = [ValueSpec(f"v{i}", tpe) for i, (_kw, tpe, _v) in enumerate(KINDS)]

    @functions.bind("test/hop", specs=specs)
    def hop(context: Any, message: Any) -> None:
        step = int(context.address.id.split("-")[1])
        keyword, tpe, _value = KINDS[step]
        value = message.as_type(tpe)
        setattr(context.storage, f"v{step}", value)
        context.send_egress(egress_message_builder(OUT, f"{context.address.id}={value!r}", StringType))
        if step + 1 < len(KINDS):
            key = context.address.id.split("-")[0]
            nxt_keyword, _t, nxt_value = KINDS[step + 1]
            context.send(message_builder("test/hop", f"{key}-{step + 1}", **{nxt_keyword: nxt_value}))

    return functions


@pytest.mark.parametrize("parallelism", [1, 2])
def test_built_in_values_between_embedded_functions_are_never_encoded(monkeypatch, parallelism: int) -> None:
    calls: list[str] = []
    for cls in (types_module._WrapperSerializer, types_module._FixedSerializer, types_module._StringSerializer):
        original = cls.__dict__["serialize"]

        def serialize(self: Any, value: Any, _original: Any = original, _cls: Any = cls) -> bytes:
            if self is not FloatType.serializer():  # (float32: see the module docstring)
                calls.append(f"{_cls.__name__}.serialize({value!r})")
            return _original(self, value)  # type: ignore[no-any-return]

        monkeypatch.setattr(cls, "serialize", serialize)
    run = LocalDispatchers(_functions(), parallelism=parallelism, egresses=[OUT])
    keys = [f"k{i}" for i in range(40)]
    run.send(*[message_builder("test/hop", f"{k}-0", int_value=KINDS[0][2]) for k in keys])
    out = run.egress(OUT)
    expected = sorted(f"{k}-{step}={value!r}" for k in keys for step, (_kw, _t, value) in enumerate(KINDS))
    assert sorted(out) == expected
    assert calls == [], f"built-in values were encoded between embedded functions: {calls[:5]}"
