"""statefun_api.request_encoder: the bytes of a remote call's ToFunction equal those of the
protobuf runtime's SerializeToString() for the same request, whatever the records hold
(callers or none, encoded or decoded values, empty values, long fields, unicode), and its
caches stay bounded and never mix two values up."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from raystream.statefun_api import IntType, StringType
from raystream.statefun_api._reqreply_pb import ToFunctionPb
from raystream.statefun_api.request_encoder import _CACHE_ENTRIES, RequestEncoder
from raystream.statefun_api.routing import record_typed_value

TEXT = st.text(min_size=0, max_size=12)
NAME = st.text(min_size=1, max_size=10).filter(lambda s: "/" not in s)
BYTES = st.one_of(st.binary(max_size=8), st.binary(min_size=120, max_size=300))  # 1- and 2-byte lengths


@st.composite
def records(draw):
    caller = draw(st.one_of(st.just(("", "")), st.tuples(st.builds(lambda a, b: f"{a}/{b}", NAME, NAME), TEXT)))
    kind = draw(st.sampled_from(["bytes", "int", "str"]))
    if kind == "bytes":
        typename, value, has_value = draw(st.builds(lambda a, b: f"{a}/{b}", NAME, NAME)), draw(BYTES), draw(st.booleans())
    elif kind == "int":
        typename, value, has_value = IntType.typename, draw(st.integers(-(2**31), 2**31 - 1)), True
    else:
        typename, value, has_value = StringType.typename, draw(st.text(max_size=80)), True
    return ("t/f", "id", caller[0], caller[1], typename, value, has_value)


def reference(target, state, recs) -> bytes:
    """The same request built with the protobuf runtime (as remote.py did before)."""
    req = ToFunctionPb()
    batch = req.invocation
    batch.target.namespace, batch.target.type, batch.target.id = target
    for name, typename, has_value, value in state:
        pv = batch.state.add()
        pv.state_name = name
        tv = pv.state_value
        tv.SetInParent()
        tv.typename = typename
        if has_value:
            tv.has_value, tv.value = True, value
    for r in recs:
        inv = batch.invocations.add()
        if r[2]:
            ns, _, name = r[2].rpartition("/")
            inv.caller.namespace, inv.caller.type, inv.caller.id = ns, name, r[3]
        arg = inv.argument
        arg.SetInParent()
        value = r[5] if type(r[5]) is bytes else record_typed_value(r).value
        arg.typename = r[4]
        if r[6]:
            arg.has_value = True
        if value:
            arg.value = value
    return req.SerializeToString()


STATE = st.lists(st.tuples(NAME, st.builds(lambda a, b: f"{a}/{b}", NAME, NAME), st.booleans(), BYTES), max_size=3)


@settings(max_examples=300, deadline=None)
@given(target=st.tuples(NAME, NAME, TEXT), state=STATE, recs=st.lists(records(), max_size=8))
def test_the_request_equals_the_protobuf_runtimes_bytes(target, state, recs):
    state = [(n, t, h, v if h else b"") for n, t, h, v in state]
    enc = RequestEncoder()
    once = enc.request(target, state, recs)
    assert once == reference(target, state, recs)
    assert enc.request(target, state, recs) == once  # from the caches now
    parsed = ToFunctionPb.FromString(once).invocation
    assert len(parsed.invocations) == len(recs)


def test_equal_but_different_values_never_share_an_encoding():
    enc = RequestEncoder()
    target = ("t", "f", "1")
    as_bytes = ("t/f", "1", "", "", StringType.typename, b"1", True)
    as_str = ("t/f", "1", "", "", StringType.typename, "1", True)
    without_value = ("t/f", "1", "", "", StringType.typename, b"1", False)
    for recs in ([as_bytes, as_str, without_value], [as_str, without_value, as_bytes]):
        assert enc.request(target, [], recs) == reference(target, [], recs)


def test_the_caches_stay_bounded():
    enc = RequestEncoder()
    recs = [("t/f", "1", "c/a", str(i), IntType.typename, i, True) for i in range(3 * _CACHE_ENTRIES)]
    assert enc.request(("t", "f", "1"), [], recs) == reference(("t", "f", "1"), [], recs)
    assert len(enc._invocations) <= _CACHE_ENTRIES and len(enc._callers) <= _CACHE_ENTRIES
    big = ("t/f", "1", "", "", "x/y", b"v" * 1000, True)  # a long value is encoded, not kept
    enc.request(("t", "f", "1"), [], [big])
    assert all(len(k[2]) < 1000 for k in enc._invocations if isinstance(k[2], bytes))
