"""``context.storage``: attribute access to a function's declared state, with dirty tracking.

Each declared :class:`~statefun_api.spec.ValueSpec` becomes an attribute. Reading
deserializes the stored bytes (``None`` if there is no value); assigning serializes right
away, so a value of the wrong type fails at the assignment; ``del`` removes the value.
Only values that were assigned or deleted are reported back as mutations; an assignment
counts even if the bytes are unchanged (it refreshes an ``expire_after_write`` TTL).

Values are deserialized on every read, as in the SDK: mutate a copy and assign it back
(``cart = storage.cart; cart.append(x); storage.cart = cart``). Values of the built-in
immutable types (int, long, double, string, bool) are decoded once and kept, so a batch of
messages to one address does not re-decode what it just wrote.

Example:
    >>> from raystream.statefun_api.spec import ValueSpec
    >>> from raystream.statefun_api.types import IntType
    >>> storage = make_storage("com.example/counter", [ValueSpec("seen", IntType)], {})
    >>> storage.seen is None
    True
    >>> storage.seen = 1
    >>> storage_mutations(storage)
    {'seen': b'\\r\\x01\\x00\\x00\\x00'}
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from raystream.statefun_api.spec import ValueSpec
from raystream.statefun_api.types import (
    BoolType,
    DoubleType,
    IntType,
    LongType,
    StringType,
    TypedValue,
)

__all__ = ["AddressScopedStorage", "StateValue", "make_storage", "storage_mutations"]

StateValue = bytes | TypedValue | None
"""A stored state value: bytes of the spec's type, a TypedValue (checked), or absent."""


_UNSET: Any = object()
# built-in types whose decoded values are immutable, with the Python type that round-trips
# exactly (a value of that exact type is cached as assigned; others are decoded on read)
_CACHEABLE: dict[Any, type] = {IntType: int, LongType: int, DoubleType: float, StringType: str, BoolType: bool}


class _Cell:
    __slots__ = ("spec", "typename", "value", "dirty", "obj", "_exact")

    def __init__(self, spec: ValueSpec, typename: str, value: StateValue) -> None:
        self.spec = spec
        self.typename = typename
        if isinstance(value, TypedValue):
            value = self._unwrap(value)
        elif value is not None and not isinstance(value, bytes):
            if not isinstance(value, (bytearray, memoryview)):
                raise TypeError(
                    f"state {spec.name!r} of function {typename!r}: a stored value must be "
                    f"bytes, a TypedValue or None, got {value!r}"
                )
            value = bytes(value)
        self.value: bytes | None = value
        self.dirty = False
        self.obj: Any = _UNSET  # the decoded value, for cacheable built-in types
        self._exact = _CACHEABLE.get(spec.type)

    def _unwrap(self, tv: TypedValue) -> bytes | None:
        if not tv.has_value:
            return None
        if tv.typename != self.spec.type.typename:
            raise TypeError(
                f"state {self.spec.name!r} of function {self.typename!r} is declared as "
                f"{self.spec.type.typename!r} but the stored value has type {tv.typename!r}"
            )
        return tv.value

    def get(self) -> Any:
        if self.obj is not _UNSET:
            return self.obj
        if self.value is None:
            return None
        try:
            obj = self.spec.type.serializer().deserialize(self.value)
            if self._exact is not None:
                self.obj = obj
            return obj
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"state {self.spec.name!r} of function {self.typename!r}: cannot deserialize "
                f"the stored bytes as {self.spec.type.typename!r}: {exc}"
            ) from exc

    def set(self, value: Any) -> None:
        if value is None:
            raise ValueError(
                f"cannot set state {self.spec.name!r} of function {self.typename!r} to None; "
                f"use `del context.storage.{self.spec.name}` to remove it"
            )
        try:
            data = self.spec.type.serializer().serialize(value)
        except (TypeError, ValueError, OverflowError) as exc:
            error = TypeError if isinstance(exc, TypeError) else ValueError
            raise error(
                f"cannot store {value!r} in state {self.spec.name!r} of function "
                f"{self.typename!r}: expected a value of type {self.spec.type.typename!r} ({exc})"
            ) from exc
        self.value = data if type(data) is bytes else bytes(data)
        self.dirty = True
        self.obj = value if value and type(value) is self._exact else _UNSET  # not 0/-0.0/''

    def delete(self) -> None:
        self.value = None
        self.dirty = True
        self.obj = _UNSET


class AddressScopedStorage:
    """The state of one function address, one attribute per declared ValueSpec.

    Example:
        >>> from raystream.statefun_api.spec import ValueSpec
        >>> from raystream.statefun_api.types import StringType
        >>> s = make_storage("a/b", [ValueSpec("name", StringType)], {"name": b"\\n\\x01x"})
        >>> s.name
        'x'
        >>> del s.name
        >>> storage_mutations(s)
        {'name': None}
    """

    __slots__ = ("__cells", "__typename")

    def __init__(self, typename: str, cells: dict[str, _Cell]) -> None:
        object.__setattr__(self, "_AddressScopedStorage__typename", typename)
        object.__setattr__(self, "_AddressScopedStorage__cells", cells)

    def __cell(self, name: str) -> _Cell:
        cell = self.__cells.get(name)
        if cell is None:
            declared = ", ".join(sorted(self.__cells)) or "none"
            raise AttributeError(
                f"{name!r} is not a declared ValueSpec of function {self.__typename!r} "
                f"(declared: {declared}); add ValueSpec({name!r}, ...) to its specs"
            )
        return cell

    def __getattr__(self, name: str) -> Any:
        cell = self.__cells.get(name)
        if cell is None:
            if name.startswith("__") and name.endswith("__"):
                raise AttributeError(name)
            cell = self.__cell(name)
        return cell.get()

    def __setattr__(self, name: str, value: Any) -> None:
        cell = self.__cells.get(name)
        (cell if cell is not None else self.__cell(name)).set(value)

    def __delattr__(self, name: str) -> None:
        self.__cell(name).delete()

    def __dir__(self) -> Iterable[str]:
        return sorted(self.__cells)

    def __repr__(self) -> str:
        return f"<storage of {self.__typename} with {sorted(self.__cells)}>"

    def __reduce__(self):
        raise TypeError("context.storage can not be pickled; copy the values you need")


def make_storage(
    typename: str, specs: Iterable[ValueSpec], values: Mapping[str, StateValue]
) -> AddressScopedStorage:
    """Create the storage for a function from its specs and its stored values.

    Values for names that are not declared are ignored (e.g. left over from an older
    version of the function); declared names without a value read as ``None``.
    """
    cells = {spec.name: _Cell(spec, typename, values.get(spec.name)) for spec in specs}
    return AddressScopedStorage(typename, cells)


def storage_mutations(storage: AddressScopedStorage) -> dict[str, bytes | None]:
    """The values assigned (bytes) or deleted (``None``) since the storage was created."""
    cells: dict[str, _Cell] = object.__getattribute__(storage, "_AddressScopedStorage__cells")
    return {name: cell.value for name, cell in cells.items() if cell.dirty}
