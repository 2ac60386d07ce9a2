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

import operator
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
    holds_decoded,
)

__all__ = [
    "AddressScopedStorage",
    "StateValue",
    "make_storage",
    "storage_mutations",
    "storage_changes",
    "dirty_values",
    "storage_class",
    "load_storage",
    "StorageSlots",
    "ValueSpec",  # (re-exported as the SDK's `from statefun.storage import *` gives it)
]

StateValue = bytes | TypedValue | None
"""A stored state value: bytes of the spec's type, a TypedValue (checked), or absent."""


class _Cell:
    """One declared value: its current :class:`TypedValue` (``None``: no value), the
    decoded object, and whether it was written.

    ``obj`` is the value a read returns without a call: ``None`` when there is no value,
    the decoded object of a built-in immutable type once known; it is *unset* (reading
    the slot raises AttributeError) while the value is only held serialized, and always
    for the other types (deserialized on every read, as in the SDK). The storage classes
    read it in C (``operator.attrgetter``) and fall back to :meth:`get` when it is unset.

    An assignment of a valid built-in immutable value only keeps the object (``tv`` is
    ``_STALE``); its TypedValue is made once, when the changes are collected."""

    __slots__ = ("spec", "typename", "tv", "dirty", "obj", "_exact", "_lo", "_hi")

    def __init__(self, spec: ValueSpec, typename: str, value: StateValue) -> None:
        self.spec = spec
        self.typename = typename
        if isinstance(value, TypedValue):
            if value.has_value and value.typename != spec.type.typename:
                raise TypeError(
                    f"state {spec.name!r} of function {typename!r} is declared as "
                    f"{spec.type.typename!r} but the stored value has type {value.typename!r}"
                )
            tv: Any = value if value.has_value else None
        elif value is None:
            tv = None
        else:
            if not isinstance(value, (bytes, bytearray, memoryview)):
                raise TypeError(
                    f"state {spec.name!r} of function {typename!r}: a stored value must be "
                    f"bytes, a TypedValue or None, got {value!r}"
                )
            tv = TypedValue(spec.type.typename, True, bytes(value))
        self.tv = tv
        self.dirty = False
        ranges: tuple[Any, Any, Any] = _RANGES.get(spec.type, (None, None, None))
        self._exact, self._lo, self._hi = ranges
        if tv is None:
            self.obj: Any = None
        elif tv._type is spec.type:  # (a built-in value held decoded)
            self.obj = tv._obj

    def typed_value(self) -> TypedValue | None:
        """The current value as a TypedValue (``None``: no value)."""
        tv = self.tv
        if tv is _STALE:
            tv = self.tv = TypedValue.of(self.spec.type, self.obj)
        return tv  # type: ignore[no-any-return]

    @property
    def value(self) -> bytes | None:
        """The serialized value (``None``: no value)."""
        tv = self.typed_value()
        return None if tv is None else tv.value

    def get(self) -> Any:
        try:
            return self.obj
        except AttributeError:  # held serialized (or not a cacheable type)
            pass
        tv = self.tv
        try:
            obj = self.spec.type.serializer().deserialize(tv.value)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"state {self.spec.name!r} of function {self.typename!r}: cannot deserialize "
                f"the stored bytes as {self.spec.type.typename!r}: {exc}"
            ) from exc
        if self._exact is not None:
            self.obj = obj
        return obj

    def set(self, value: Any) -> None:
        if type(value) is self._exact:
            lo = self._lo
            if (value <= self._hi and value >= lo) if lo is not None else holds_decoded(self.spec.type, value):
                self.obj = value  # kept decoded; a TypedValue is made when the changes are read
                self.tv = _STALE
                self.dirty = True
                return
        if value is None:
            raise ValueError(
                f"cannot set state {self.spec.name!r} of function {self.typename!r} to None; "
                f"use `del context.storage.{self.spec.name}` to remove it"
            )
        tpe = self.spec.type
        try:
            data = tpe.serializer().serialize(value)
        except (TypeError, ValueError, OverflowError) as exc:
            error = TypeError if isinstance(exc, TypeError) else ValueError
            raise error(
                f"cannot store {value!r} in state {self.spec.name!r} of function "
                f"{self.typename!r}: expected a value of type {tpe.typename!r} ({exc})"
            ) from exc
        self.tv = TypedValue(tpe.typename, True, data if type(data) is bytes else bytes(data))
        self.dirty = True
        _forget(self)

    def delete(self) -> None:
        self.tv = None
        self.dirty = True
        self.obj = None


def _forget(cell: _Cell) -> None:
    """Unset ``cell.obj`` (the value is held serialized only)."""
    try:
        del cell.obj
    except AttributeError:
        pass


_STALE: Any = object()
#: built-in immutable types: exact Python type and the range checked on assignment
#: (no range: :func:`holds_decoded` decides)
_RANGES: dict[Any, tuple[type, Any, Any]] = {
    IntType: (int, -(1 << 31), (1 << 31) - 1),
    LongType: (int, -(1 << 63), (1 << 63) - 1),
    DoubleType: (float, None, None),
    StringType: (str, None, None),
    BoolType: (bool, None, None),
}


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
    #: the declared names whose cells a :func:`storage_class` keeps in slots, in order
    _cell_names: tuple[str, ...] = ()

    def __init__(self, typename: str, cells: dict[str, _Cell]) -> None:
        object.__setattr__(self, "_AddressScopedStorage__typename", typename)
        object.__setattr__(self, "_AddressScopedStorage__cells", cells)
        _install_cells(self, cells)

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
        if cell is None:
            cell = self.__cell(name)
        elif type(value) is cell._exact and cell._lo is not None and cell._lo <= value <= cell._hi:
            cell.obj = value  # an int/long in range: kept decoded (as _Cell.set does)
            cell.tv = _STALE
            cell.dirty = True
            return
        cell.set(value)

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
    specs = tuple(specs)
    cells = {spec.name: _Cell(spec, typename, values.get(spec.name)) for spec in specs}
    return storage_class(specs)(typename, cells)


def storage_mutations(storage: AddressScopedStorage) -> dict[str, bytes | None]:
    """The values assigned (bytes) or deleted (``None``) since the storage was created."""
    cells: dict[str, _Cell] = object.__getattribute__(storage, "_AddressScopedStorage__cells")
    return {name: cell.value for name, cell in cells.items() if cell.dirty}


def storage_changes(storage: AddressScopedStorage) -> list[tuple[str, TypedValue | None]]:
    """Like :func:`storage_mutations`, as ``(name, TypedValue or None)`` pairs: values of
    built-in types stay decoded (the engine's dispatcher keeps them so in keyed state).

    Example:
        >>> from raystream.statefun_api.spec import ValueSpec
        >>> s = make_storage("a/b", [ValueSpec("n", IntType)], {})
        >>> s.n = 3
        >>> [(name, tv.decoded(IntType)) for name, tv in storage_changes(s)]
        [('n', 3)]
    """
    cells: dict[str, _Cell] = object.__getattribute__(storage, "_AddressScopedStorage__cells")
    return [(name, cell.typed_value()) for name, cell in cells.items() if cell.dirty]


def dirty_values(storage: AddressScopedStorage) -> list[tuple[str, Any]]:
    """The values assigned or deleted, as the engine's dispatcher keeps them in keyed state:
    ``(name, value)`` where value is ``(typename, decoded object)`` for a valid value of a
    built-in immutable type (int, long, double, string, bool: no TypedValue is made), else
    a :class:`TypedValue`; ``None``: deleted. :func:`load_storage` reads both forms back.

    Example:
        >>> from raystream.statefun_api.spec import ValueSpec
        >>> s = make_storage("a/b", [ValueSpec("n", IntType), ValueSpec("m", IntType)], {"m": b"\\r\\x01\\x00\\x00\\x00"})
        >>> s.n = 3
        >>> del s.m
        >>> dirty_values(s)
        [('n', ('io.statefun.types/int', 3)), ('m', None)]
    """
    cells: dict[str, _Cell] = _getattribute(storage, "_AddressScopedStorage__cells")
    return [
        (name, (cell.spec.type.typename, cell.obj) if cell.tv is _STALE else cell.tv)
        for name, cell in cells.items()
        if cell.dirty
    ]


_getattribute = object.__getattribute__


def load_storage(
    cls: type[AddressScopedStorage], typename: str, values: list[tuple[ValueSpec, Any]]
) -> AddressScopedStorage:
    """The storage of one address from ``(spec, stored value)`` pairs, with the class from
    :func:`storage_class` (the engine's dispatcher, once per invocation). A stored value is
    ``None`` (no value), a :class:`TypedValue`, or ``(typename, decoded object)`` of a
    built-in immutable type as :func:`dirty_values` gives it."""
    cells = {}
    for spec, tv in values:
        if type(tv) is tuple:  # kept decoded by the dispatcher
            if tv[0] != spec.type.typename:
                raise TypeError(
                    f"state {spec.name!r} of function {typename!r} is declared as "
                    f"{spec.type.typename!r} but the stored value has type {tv[0]!r}"
                )
            rng = _RANGES.get(spec.type, _NO_RANGE)
            cell = _new_cell(_Cell)
            cell.spec = spec
            cell.typename = typename
            cell.dirty = False
            cell._exact, cell._lo, cell._hi = rng
            cell.tv = _STALE
            cell.obj = tv[1]
        elif tv is None or tv.typename == spec.type.typename:
            cell = _new_cell(_Cell)  # the checks of _Cell.__init__ hold: set the slots directly
            cell.spec = spec
            cell.typename = typename
            cell.dirty = False
            cell._exact, cell._lo, cell._hi = _RANGES.get(spec.type, _NO_RANGE)
            if tv is None or not tv.has_value:
                cell.tv = None
                cell.obj = None
            else:
                cell.tv = tv
                if tv._type is spec.type:
                    cell.obj = tv._obj
        else:
            cell = _Cell(spec, typename, tv)
        cells[spec.name] = cell
    storage = _new_cell(cls)
    _setattr(storage, "_AddressScopedStorage__typename", typename)
    _setattr(storage, "_AddressScopedStorage__cells", cells)
    _install_cells(storage, cells)
    return storage


def _install_cells(storage: AddressScopedStorage, cells: dict[str, _Cell]) -> None:
    """Put the cells of the names a :func:`storage_class` reads through slots in them."""
    for slot, name in zip(_CELL_SLOTS, type(storage)._cell_names):
        _setattr(storage, slot, cells[name])


_new_cell = object.__new__
_setattr = object.__setattr__
_NO_RANGE: tuple[Any, Any, Any] = (None, None, None)


def storage_class(specs: tuple[ValueSpec, ...]) -> type[AddressScopedStorage]:
    """A subclass of :class:`AddressScopedStorage` with a property per spec name that reads
    the value held decoded without a Python call (``storage.name`` is ``operator.attrgetter``
    of the name's cell, kept in a slot, and the cell's ``obj``); a value held serialized
    falls back to ``__getattr__``, which decodes it (cached per tuple of spec names).

    Example:
        >>> from raystream.statefun_api.spec import ValueSpec
        >>> cls = storage_class((ValueSpec("n", IntType),))
        >>> s = cls("a/b", {"n": _Cell(ValueSpec("n", IntType), "a/b", b"\\r\\x05\\x00\\x00\\x00")})
        >>> s.n, s.n  # decoded at the first read, then read from the cell
        (5, 5)
    """
    names = tuple(spec.name for spec in specs)
    cls = _CLASSES.get(names)
    if cls is None:
        read = tuple(name for name in names if not name.startswith("_"))[: len(_CELL_SLOTS)]
        ns: dict[str, Any] = {"__slots__": _CELL_SLOTS[: len(read)], "_cell_names": read}
        for slot, name in zip(_CELL_SLOTS, read):
            ns[name] = property(operator.attrgetter(f"{slot}.obj"), doc=f"The declared value {name!r}.")
        cls = type("AddressScopedStorage", (AddressScopedStorage,), ns)
        if len(_CLASSES) < 1024:
            _CLASSES[names] = cls
    return cls


_CLASSES: dict[tuple[str, ...], type[AddressScopedStorage]] = {}
#: the slots of a storage class that hold the cells of its declared names
_CELL_SLOTS = tuple(f"_AddressScopedStorage__c{i}" for i in range(64))


class StorageSlots:
    """One reusable :class:`AddressScopedStorage` of a function type, bound to one state
    handle per declared spec: what the engine's dispatcher loads and stores per invocation.

    :meth:`load` fills the storage's cells from ``handle.value()`` of each handle (the keyed
    state of the current address; ``None``, a :class:`TypedValue` or ``(typename, decoded
    object)`` as :meth:`changes` gives it), :meth:`changes` returns ``(handle, new value)``
    for the values the function assigned or deleted (``None``: deleted). Reusing the cells
    saves creating a storage per invocation; the caller must stop reusing it (make a new
    one) once a function keeps a reference to the storage (:attr:`storage`).

    Example:
        >>> from raystream.statefun_api.spec import ValueSpec
        >>> class Handle:
        ...     def __init__(self, v): self.v = v
        ...     def value(self): return self.v
        >>> h = Handle(("io.statefun.types/int", 41))
        >>> slots = StorageSlots("a/counter", (ValueSpec("n", IntType),), [h])
        >>> s = slots.load()
        >>> s.n += 1
        >>> [(handle is h, value) for handle, value in slots.changes()]
        [(True, ('io.statefun.types/int', 42))]
    """

    __slots__ = ("storage", "handles", "direct", "_slots", "_typename", "_tables", "_touched")

    def __init__(self, typename: str, specs: tuple[ValueSpec, ...], handles: list[Any]) -> None:
        cells: dict[str, _Cell] = {spec.name: _Cell(spec, typename, None) for spec in specs}
        self.storage = storage_class(specs)(typename, cells)
        self._typename = typename
        self.handles = list(handles)
        # (cell, handle, value typename, exact Python type of a value kept decoded)
        self._slots = [
            (cells[spec.name], handle, spec.type.typename, _RANGES.get(spec.type, _NO_RANGE)[0])
            for spec, handle in zip(specs, handles)
        ]
        self._tables: list[tuple[_Cell, dict[int, dict[Any, Any]], str, type]] | None = None
        self._touched: set[int] = set()
        #: True once :meth:`bind_tables` bound the values' tables (use :meth:`load_at`)
        self.direct = False

    def bind_tables(self, tables: list[dict[int, dict[Any, Any]]], touched: set[int]) -> None:
        """Read and write the values at ``tables[i][key_group][key]`` (one table per spec,
        in spec order) with :meth:`load_at` / :meth:`store_at`, instead of through the
        handles: the direct path of a keyed state backend that keeps values in dicts per key
        group (``HeapKeyedStateBackend.value_table``). ``store_at`` adds the key group to
        ``touched`` when it writes.

        Example:
            >>> from raystream.statefun_api.spec import ValueSpec
            >>> table, touched = {3: {"k": ("io.statefun.types/int", 41)}}, set()
            >>> slots = StorageSlots("a/counter", (ValueSpec("n", IntType),), [None])
            >>> slots.bind_tables([table], touched)
            >>> s = slots.load_at(3, "k"); s.n += 1; slots.store_at(3, "k")
            >>> table, touched
            ({3: {'k': ('io.statefun.types/int', 42)}}, {3})
        """
        if len(tables) != len(self._slots):
            raise ValueError(f"{len(tables)} tables for the {len(self._slots)} states of function {self._typename!r}")
        self._tables = [(cell, table, typename, exact) for (cell, _h, typename, exact), table in zip(self._slots, tables)]
        self._touched = touched
        self.direct = True

    def load_at(self, key_group: int, key: Any) -> AddressScopedStorage:
        """:meth:`load` from the bound tables: the values of ``key`` (in ``key_group``).

        Raises:
            TypeError: a stored value is not of the spec's declared type.
        """
        for cell, table, typename, exact in self._tables:  # type: ignore[union-attr]
            group = table.get(key_group)
            value = None if group is None else group.get(key)
            cell.dirty = False
            if type(value) is tuple and value[0] == typename and type(value[1]) is exact:
                cell.tv = _STALE
                cell.obj = value[1]
            elif value is None:
                cell.tv = None
                cell.obj = None
            else:
                self._fill(cell, value, typename)
        return self.storage

    def store_at(self, key_group: int, key: Any) -> None:
        """Write the values assigned or deleted since :meth:`load_at` to the bound tables
        (what :meth:`changes` gives, written as ``ValueState.update`` / ``clear`` would)."""
        touched = False
        for cell, table, typename, _exact in self._tables:  # type: ignore[union-attr]
            if cell.dirty:
                if not touched:
                    self._touched.add(key_group)
                    touched = True
                tv = cell.tv
                value = (typename, cell.obj) if tv is _STALE else tv
                if value is None:
                    group = table.get(key_group)
                    if group is not None:
                        group.pop(key, None)
                else:
                    group = table.get(key_group)
                    if group is None:
                        group = table[key_group] = {}
                    group[key] = value

    def load(self) -> AddressScopedStorage:
        """The storage holding the handles' current values, nothing written yet.

        Raises:
            TypeError: a stored value is not of the spec's declared type.
        """
        for cell, handle, typename, exact in self._slots:
            value = handle.value()
            cell.dirty = False
            if type(value) is tuple and value[0] == typename and type(value[1]) is exact:
                cell.tv = _STALE
                cell.obj = value[1]
            elif value is None:
                cell.tv = None
                cell.obj = None
            else:
                self._fill(cell, value, typename)
        return self.storage

    def _fill(self, cell: _Cell, value: Any, typename: str) -> None:
        """Fill ``cell`` from a stored TypedValue (the cases :meth:`load` does not inline)."""
        if type(value) is TypedValue and value.typename == typename:
            if value.has_value:
                cell.tv = value
                if value._type is cell.spec.type:  # (a built-in value held decoded)
                    cell.obj = value._obj
                else:
                    _forget(cell)
            else:
                cell.tv = None
                cell.obj = None
        else:
            stored = value[0] if type(value) is tuple else getattr(value, "typename", type(value).__name__)
            raise TypeError(
                f"state {cell.spec.name!r} of function {self._typename!r} is declared as "
                f"{typename!r} but the stored value has type {stored!r}"
            )

    def changes(self) -> list[tuple[Any, Any]]:
        """``(handle, value)`` of each value assigned (``(typename, object)`` for a built-in
        immutable value, else a TypedValue) or deleted (``None``) since :meth:`load`."""
        out = []
        for cell, handle, typename, _exact in self._slots:
            if cell.dirty:
                tv = cell.tv
                out.append((handle, (typename, cell.obj) if tv is _STALE else tv))
        return out
