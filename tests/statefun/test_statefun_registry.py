"""Typenames, addresses, ValueSpec validation and the StatefulFunctions registry."""

from __future__ import annotations

import keyword
from datetime import timedelta

import pytest

from raystream.statefun_api import (
    Address,
    FunctionNotFound,
    IntType,
    StatefulFunctions,
    StringType,
    ValueSpec,
    make_typename,
    parse_typename,
)


def test_parse_typename_splits_at_last_slash() -> None:
    assert parse_typename("com.example/greeter") == ("com.example", "greeter")
    assert parse_typename("a/b/c") == ("a/b", "c")


@pytest.mark.parametrize("bad", ["", "greeter", "/greeter", "com.example/", None])
def test_parse_typename_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_typename(bad)


def test_make_typename() -> None:
    assert make_typename("ns", "f") == "ns/f"
    with pytest.raises(ValueError, match="must not contain"):
        make_typename("ns", "a/b")


def test_address() -> None:
    a = Address.of("com.example/greeter", "bob")
    assert (a.namespace, a.name, a.id, a.typename) == (
        "com.example",
        "greeter",
        "bob",
        "com.example/greeter",
    )
    assert str(a) == "com.example/greeter/bob"
    assert a == Address("com.example", "greeter", "bob")
    assert len({a, Address("com.example", "greeter", "bob")}) == 1
    with pytest.raises(ValueError, match="non-empty"):
        Address.of("a/b", "")


def test_value_spec_expiration() -> None:
    assert ValueSpec("a", IntType).expiration_mode == "none"
    call = ValueSpec("a", IntType, expire_after_call=timedelta(seconds=2))
    assert (call.expiration_mode, call.expire_after_millis, call.after_call, call.duration) == (
        "after_call",
        2000,
        True,
        2000,
    )
    write = ValueSpec("a", IntType, expire_after_write=timedelta(milliseconds=5))
    assert (write.expiration_mode, write.expire_after_millis, write.after_write) == (
        "after_write",
        5,
        True,
    )


@pytest.mark.parametrize("name", ["", "1abc", "has space", "has-dash", "Upper", "camelCase"])
def test_value_spec_rejects_bad_names(name: str) -> None:
    with pytest.raises(ValueError):
        ValueSpec(name, IntType)


@pytest.mark.parametrize("name", [k for k in keyword.kwlist if k.islower()][:5])
def test_value_spec_rejects_keywords(name: str) -> None:
    with pytest.raises(ValueError, match="keyword"):
        ValueSpec(name, IntType)


@pytest.mark.parametrize("name", ["seen", "_private", "x1", "snake_case_2"])
def test_value_spec_accepts_good_names(name: str) -> None:
    assert ValueSpec(name, IntType).name == name


def test_value_spec_other_errors() -> None:
    with pytest.raises(ValueError, match="not both"):
        ValueSpec("a", IntType, expire_after_call=timedelta(1), expire_after_write=timedelta(1))
    with pytest.raises(TypeError, match="StateFun Type"):
        ValueSpec("a", int)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="type can not be missing"):
        ValueSpec("a", None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least 1 millisecond"):
        ValueSpec("a", IntType, expire_after_call=timedelta(0))
    with pytest.raises(TypeError, match="timedelta"):
        ValueSpec("a", IntType, expire_after_write=5)  # type: ignore[arg-type]


def test_register_and_bind() -> None:
    functions = StatefulFunctions()

    @functions.bind(typename="com.example/a", specs=[ValueSpec("seen", IntType)])
    def a(context, message):
        pass

    async def b(context, message):
        pass

    functions.register("com.example/b", b)
    assert a.__name__ == "a"  # bind returns the function unchanged
    assert sorted(functions.typenames()) == ["com.example/a", "com.example/b"]
    assert "com.example/a" in functions and len(functions) == 2
    assert functions.for_typename("com.example/a").specs == (ValueSpec("seen", IntType),)
    assert not functions.for_typename("com.example/a").is_async
    assert functions.for_typename("com.example/b").is_async
    assert functions.get("x/y") is None


def test_register_errors() -> None:
    functions = StatefulFunctions()
    functions.register("com.example/a", lambda context, message: None)
    with pytest.raises(ValueError, match="already registered"):
        functions.register("com.example/a", lambda context, message: None)
    with pytest.raises(ValueError, match="namespace/name"):
        functions.register("nonamespace", lambda context, message: None)
    with pytest.raises(ValueError, match=r"must accept \(context, message\)"):
        functions.register("com.example/b", lambda context: None)
    with pytest.raises(ValueError, match="expected a callable"):
        functions.register("com.example/c", "nope")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="duplicate ValueSpec name 'x'"):
        functions.register(
            "com.example/d",
            lambda c, m: None,
            specs=[ValueSpec("x", IntType), ValueSpec("x", StringType)],
        )
    with pytest.raises(FunctionNotFound, match=r"'x/y'.*registered: com.example/a"):
        functions.for_typename("x/y")


def test_missing_specs_keep_declaration_order() -> None:
    functions = StatefulFunctions()
    specs = [ValueSpec("b", IntType), ValueSpec("a", IntType), ValueSpec("c", IntType)]
    functions.register("ns/f", lambda c, m: None, specs=specs)
    assert [s.name for s in functions.for_typename("ns/f").missing_specs({"a"})] == ["b", "c"]


def test_the_same_code_registered_again_replaces_it_as_a_rerun_notebook_cell_does() -> None:
    functions = StatefulFunctions()
    cell = "@functions.bind('com.example/greeter', specs=[ValueSpec('seen', IntType)])\ndef greeter(context, message):\n    pass\n"
    for specs in ("IntType", "StringType"):  # the cell edited (another spec type) and run again
        exec(compile(cell.replace("IntType", specs), "<cell-1>", "exec"), {"functions": functions, "ValueSpec": ValueSpec,
                                                                          "IntType": IntType, "StringType": StringType})
    assert functions.for_typename("com.example/greeter").specs == (ValueSpec("seen", StringType),)
    other = "@functions.bind('com.example/greeter')\ndef greeter(context, message):\n    pass\n"
    with pytest.raises(ValueError, match=r"already registered under 'com.example/greeter' \(greeter at <cell-1>:1\); "
                                         r"cannot register greeter at <cell-2>:1"):
        exec(compile(other, "<cell-2>", "exec"), {"functions": functions})
