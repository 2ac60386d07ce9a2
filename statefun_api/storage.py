"""``context.storage``: attribute access to a function's declared state, with dirty tracking.

Each declared :class:`~statefun_api.spec.ValueSpec` becomes an attribute. Reading
deserializes the stored bytes (``None`` if there is no value); assigning serializes right
away, so a value of the wrong type fails at the assignment; ``del`` removes the value.
Only values that were assigned or deleted are reported back as mutations; an assignment
counts even if the bytes are unchanged (it refreshes an ``expire_after_write`` TTL).

The engine's dispatcher uses a faster class (:func:`storage_class` with ``fast=True``, see
there): values of the built-in immutable types sit in plain slots, and an assignment is
checked when the dispatcher stores the address, at the end of the batch of messages to it.

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

import dis
import functools
import operator
import types
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

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
    "may_delete_values",
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

    __slots__ = ("spec", "typename", "tv", "dirty", "obj", "_exact", "_lo", "_hi", "shown")

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
        #: the object a fast storage slot was last given or found holding (StorageSlots)
        self.shown: Any = None
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
    #: the names a ``fast`` storage class keeps in plain slots (:func:`storage_class`)
    _fast_names: tuple[str, ...] = ()
    #: whether deleting a fast name again raises (:func:`storage_class`'s ``strict_delete``)
    _strict_delete: bool = False

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

    if TYPE_CHECKING:  # (for type checkers: the declared values are attributes of any name)

        def __getattr__(self, name: str) -> Any: ...

        def __setattr__(self, name: str, value: Any) -> None: ...

    # (the attribute access through the cells: _CellStorage's __getattr__, __setattr__ and
    # __delattr__, defined here, where `self.__cells` names the slot)
    def __read(self, name: str) -> Any:
        cell = self.__cells.get(name)
        if cell is None:
            if name.startswith("__") and name.endswith("__"):
                raise AttributeError(name)
            cell = self.__cell(name)
        return cell.get()

    def __write(self, name: str, value: Any) -> None:
        cell = self.__cells.get(name)
        if cell is None:
            cell = self.__cell(name)
        elif type(value) is cell._exact and cell._lo is not None and cell._lo <= value <= cell._hi:
            cell.obj = value  # an int/long in range: kept decoded (as _Cell.set does)
            cell.tv = _STALE
            cell.dirty = True
            return
        cell.set(value)

    def __remove(self, name: str) -> None:
        self.__cell(name).delete()

    def __dir__(self) -> Iterable[str]:
        return sorted(self.__cells)

    def __repr__(self) -> str:
        return f"<storage of {self.__typename} with {sorted(self.__cells)}>"

    def __reduce__(self):
        raise TypeError("context.storage can not be pickled; copy the values you need")


class _CellStorage(AddressScopedStorage):
    """The storage classes that read, assign and delete through the cells (every
    :func:`storage_class` but the ``strict_delete`` fast one, which has Python's own
    attribute access: a class with a ``__getattr__`` anywhere in its MRO has every attribute
    read go through CPython's getattr hook, which also keeps ``LOAD_ATTR`` from
    specializing; see :func:`storage_class`)."""

    __slots__ = ()
    __getattr__ = AddressScopedStorage._AddressScopedStorage__read  # type: ignore[attr-defined]
    __setattr__ = AddressScopedStorage._AddressScopedStorage__write  # type: ignore[attr-defined]
    __delattr__ = AddressScopedStorage._AddressScopedStorage__remove  # type: ignore[attr-defined]


_remove: Callable[[AddressScopedStorage, str], None] = AddressScopedStorage._AddressScopedStorage__remove  # type: ignore[attr-defined]


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


def storage_class(specs: tuple[ValueSpec, ...], fast: bool = False, strict_delete: bool = False) -> type[AddressScopedStorage]:
    """A subclass of :class:`AddressScopedStorage` with a property per spec name that reads
    the value held decoded without a Python call (``storage.name`` is ``operator.attrgetter``
    of the name's cell, kept in a slot, and the cell's ``obj``); a value held serialized
    falls back to ``__getattr__``, which decodes it (cached per tuple of spec names).

    ``fast`` (the engine's dispatcher, :class:`StorageSlots`): the values of the built-in
    immutable types (:func:`fast_names`) are plain slots of the storage, so that reading
    *and assigning* them runs no Python code; :class:`StorageSlots` fills the slots when it
    loads an address and reads back what changed when it stores it (:func:`_sync_fast`).
    The other declared names are properties that read, assign and delete through their
    cells as the plain class does. Assigning an undeclared name raises Python's own
    ``AttributeError`` (:func:`explain_attribute_error` words it as the plain class does).

    ``strict_delete`` (with ``fast``; the dispatcher's sync functions whose code shows no
    deletion, :func:`may_delete_values`): the class has Python's own attribute access, all
    in C: no Python ``__delattr__``, so that Python assigns the slots itself (a Python
    ``__delattr__`` routes *every* assignment through ``object.__setattr__``: ~1,100
    instructions instead of ~30), and no ``__getattr__`` (one anywhere in the MRO sends
    every read through CPython's getattr hook and keeps ``LOAD_ATTR`` from specializing).
    Deleting a fast value twice without assigning it between then raises Python's
    ``AttributeError(name)`` instead of doing nothing, and reading it after a deletion
    raises instead of giving ``None``: :func:`deleted_again` recognises both, and the
    dispatcher invokes the batch again with the storage class that deletes idempotently
    (see ``FunctionDispatcher._drain``). An undeclared name raises Python's
    ``AttributeError``, which :func:`explain_attribute_error` words as the plain class does.

    Example:
        >>> from raystream.statefun_api.spec import ValueSpec
        >>> cls = storage_class((ValueSpec("n", IntType),))
        >>> s = cls("a/b", {"n": _Cell(ValueSpec("n", IntType), "a/b", b"\\r\\x05\\x00\\x00\\x00")})
        >>> s.n, s.n  # decoded at the first read, then read from the cell
        (5, 5)
        >>> type(storage_class((ValueSpec("n", IntType),), fast=True).__dict__["n"]).__name__
        'member_descriptor'
    """
    names = tuple(spec.name for spec in specs)
    fast_set = fast_names(specs) if fast else ()
    key = (names, fast_set, strict_delete and bool(fast_set))
    cls = _CLASSES.get(key)
    if cls is None:
        if fast_set:
            cls = _fast_class(names, fast_set, strict_delete)
        else:
            read = tuple(name for name in names if not name.startswith("_"))[: len(_CELL_SLOTS)]
            ns: dict[str, Any] = {"__slots__": _CELL_SLOTS[: len(read)], "_cell_names": read}
            for slot, name in zip(_CELL_SLOTS, read):
                ns[name] = property(operator.attrgetter(f"{slot}.obj"), doc=f"The declared value {name!r}.")
            cls = type("AddressScopedStorage", (_CellStorage,), ns)
        if len(_CLASSES) < 1024:
            _CLASSES[key] = cls
    return cls


def fast_names(specs: tuple[ValueSpec, ...]) -> tuple[str, ...]:
    """The names a ``fast`` :func:`storage_class` keeps in plain slots: those of the built-in
    immutable types (int, long, double, string, bool) without a TTL refreshed by writes
    (``expire_after_write``: an assignment of the same value must count). None at all when a
    name starts with ``_`` or there are more than 64 names (the plain class then).

    Example:
        >>> from raystream.statefun_api.spec import ValueSpec
        >>> from raystream.statefun_api.types import make_json_type
        >>> fast_names((ValueSpec("n", IntType), ValueSpec("cart", make_json_type("a/Cart"))))
        ('n',)
    """
    names = [spec.name for spec in specs]
    if len(names) > len(_CELL_SLOTS) or any(name.startswith("_") for name in names):
        return ()
    return tuple(spec.name for spec in specs if spec.type in _RANGES and spec.expiration_mode != "after_write")


def _fast_class(names: tuple[str, ...], fast: tuple[str, ...], strict_delete: bool) -> type[AddressScopedStorage]:
    """The ``fast`` storage class of :func:`storage_class`."""
    fast_set = frozenset(fast)
    names_set = frozenset(names)
    ns: dict[str, Any] = {
        "__slots__": _CELL_SLOTS[: len(names)] + fast,
        "_cell_names": names,
        "_fast_names": fast,
        "__setattr__": object.__setattr__,  # (a slot or a property: no Python frame for a fast name)
    }
    for slot, name in zip(_CELL_SLOTS, names):
        if name not in fast_set:
            ns[name] = property(
                operator.attrgetter(f"{slot}.obj"), _cell_setter(slot), _cell_deleter(slot), doc=f"The declared value {name!r}."
            )

    def __getattr__(self: AddressScopedStorage, name: str) -> Any:
        if name in fast_set:  # a fast slot is empty only after `del storage.name`
            return None
        return _CellStorage.__getattr__(self, name)

    def __delattr__(self: AddressScopedStorage, name: str) -> None:
        if name in fast_set:
            try:
                object.__delattr__(self, name)
            except AttributeError:  # deleted before: deleting a value is idempotent, as through a cell
                pass
        elif name in names_set:
            object.__delattr__(self, name)  # (the property's deleter)
        else:
            _remove(self, name)  # raises the worded error

    ns["_strict_delete"] = strict_delete
    if strict_delete:
        # Python's own attribute access, all in C: no __getattr__ in the MRO (reads of the
        # slots specialize), object's __setattr__ and __delattr__ (assignment is generic). An
        # undeclared name, a fast name read after `del` and one deleted again raise
        # AttributeError (see deleted_again)
        return type("AddressScopedStorage", (AddressScopedStorage,), ns)
    ns["__getattr__"] = __getattr__
    ns["__delattr__"] = __delattr__
    return type("AddressScopedStorage", (_CellStorage,), ns)


def deleted_again(storage: Any, exc: BaseException) -> bool:
    """Whether ``exc`` is what a ``strict_delete`` storage class (:func:`storage_class`)
    raises where the others do nothing or read ``None``: a fast value deleted again (its slot
    empty), which Python reports as ``AttributeError(name)``, or read after a deletion
    (``'AddressScopedStorage' object has no attribute 'name'``).

    Example:
        >>> from raystream.statefun_api.spec import ValueSpec
        >>> s = StorageSlots("a/b", (ValueSpec("n", IntType),), [None], strict_delete=True).storage
        >>> s.n = 1
        >>> del s.n
        >>> try:
        ...     s.n
        ... except AttributeError as exc:
        ...     deleted_again(s, exc)
        True
        >>> try:
        ...     del s.n
        ... except AttributeError as exc:
        ...     deleted_again(s, exc)
        True
    """
    cls = type(storage)
    if type(exc) is not AttributeError or not isinstance(storage, AddressScopedStorage) or not cls._strict_delete:
        return False
    name = str(exc)  # (Python's text for a slot deleted again: its name)
    if name.startswith(_NO_ATTRIBUTE) and name.endswith("'"):  # (and for a slot read while empty)
        name = name[len(_NO_ATTRIBUTE) : -1]
    if name not in cls._fast_names:
        return False
    try:
        _getattribute(storage, name)  # (no __getattr__ fallback: raises when the slot is empty)
    except AttributeError:
        return True
    return False


def may_delete_values(fun: Any) -> bool:
    """Whether the function ``fun`` may delete a value of its storage (``del storage.name``
    or ``delattr``) as far as its code shows: its own code, the functions and lambdas
    defined in it, and the Python functions it names as globals or closure variables, each
    followed the same way. True when that cannot be told (a callable object, a builtin, a
    ``functools.partial``), and for code that uses ``getattr`` or ``hasattr`` (on the strict
    class they would see a value deleted unseen as missing, not as ``None``).

    The dispatcher gives the ``strict_delete`` storage class (:func:`storage_class`) only to
    functions for which this is False: a deletion it does not see (through a method of
    another object, say) is still handled (:func:`deleted_again`), by invoking the batch
    again, so that function's own side effects outside its context (a print, a call to
    another service) for the messages before the failed one of that batch happen twice.

    Example:
        >>> def counter(context, message):
        ...     context.storage.n = (context.storage.n or 0) + 1
        >>> def reset(context, message):
        ...     del context.storage.n
        >>> def via_helper(context, message):
        ...     forget(context.storage)
        >>> def forget(storage):
        ...     delattr(storage, "n")
        >>> may_delete_values(counter), may_delete_values(reset), may_delete_values(via_helper)
        (False, True, True)
    """
    seen: set[int] = set()
    todo: list[Any] = [fun]
    while todo:
        item = todo.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, types.MethodType):  # (a bound method: its function)
            todo.append(item.__func__)
            continue
        if isinstance(item, types.CodeType):
            code = item
        else:
            if not isinstance(item, types.FunctionType):
                return True  # (not a plain Python function: what it does cannot be told)
            code = item.__code__
            for cell in item.__closure__ or ():
                try:
                    value = cell.cell_contents
                except ValueError:  # (an empty cell)
                    continue
                if isinstance(value, types.FunctionType):
                    todo.append(value)
            named = item.__globals__
            for name in code.co_names:
                value = named.get(name)
                if isinstance(value, types.FunctionType):
                    todo.append(value)
        if _DELETES.intersection(code.co_names) or _DELETE_ATTR in code.co_code[::2]:
            return True
        todo.extend(c for c in code.co_consts if isinstance(c, types.CodeType))
        if len(seen) > 10_000:  # (a bound on the walk: treated as unknown)
            return True
    return False


#: names whose use counts as a possible deletion: the deleting builtins, and getattr/hasattr,
#: which on the strict class would take a value deleted where this walk does not see it for
#: a missing attribute (a default, False) instead of reading None as the SDK's storage does
_DELETES = frozenset({"delattr", "__delattr__", "getattr", "hasattr"})
_DELETE_ATTR = dis.opmap["DELETE_ATTR"]


def _cell_setter(slot: str) -> Callable[[AddressScopedStorage, Any], None]:
    get = operator.attrgetter(slot)

    def set_value(storage: AddressScopedStorage, value: Any) -> None:
        get(storage).set(value)

    return set_value


def _cell_deleter(slot: str) -> Callable[[AddressScopedStorage], None]:
    get = operator.attrgetter(slot)

    def delete_value(storage: AddressScopedStorage) -> None:
        get(storage).delete()

    return delete_value


def _sync_fast(storage: AddressScopedStorage, fast: list[tuple[_Cell, str]]) -> None:
    """Bring the cells of the fast slots of ``storage`` up to date (``fast``: ``(cell,
    name)`` per fast name): a slot holding another object than the one last shown in it was
    assigned; one that reads ``None`` while it showed a value was deleted (see
    :func:`_assign`)."""
    for cell, name in fast:
        obj = getattr(storage, name, None)  # (None after `del storage.name`: an empty slot)
        if obj is not cell.shown:
            _assign(storage, cell, name, obj)


def _assign(storage: AddressScopedStorage, cell: _Cell, name: str, obj: Any) -> None:
    """Take the object found in the fast slot ``name`` of ``storage`` into its cell, as an
    assignment (``_Cell.set``: checked, kept decoded or serialized; its errors are raised:
    a value of the wrong type, ``None`` assigned) or, for an emptied slot, a deletion.

    Only a value the cell took becomes ``cell.shown``: a refused one stays different from
    it, so storing the address again checks it again (and fails again) instead of taking it
    as unchanged."""
    if obj is None:
        try:
            _getattribute(storage, name)  # (no __getattr__ fallback: raises when the slot is empty)
        except AttributeError:
            cell.delete()
            cell.shown = None
            return
    cell.set(obj)  # (raises for a refused value: nothing of it recorded)
    cell.shown = obj


def explain_attribute_error(storage: Any, exc: BaseException) -> BaseException:
    """``exc`` as the plain storage class words it when it is Python's error for assigning
    or deleting an undeclared name of a ``fast`` storage (``'AddressScopedStorage' object
    has no attribute 'x'``); else ``exc`` itself."""
    if type(exc) is AttributeError and isinstance(storage, AddressScopedStorage) and type(storage)._fast_names:
        text = str(exc)
        prefix = _NO_ATTRIBUTE
        if text.startswith(prefix) and text.endswith("'"):
            name = text[len(prefix) : -1]
            if name not in type(storage)._cell_names:
                try:
                    _CellStorage.__getattr__(storage, name)  # raises the worded error
                except AttributeError as worded:
                    return worded
    return exc


_DELETED: Any = object()
#: the start of Python's AttributeError text for a name a storage does not have (or an empty slot)
_NO_ATTRIBUTE = "'AddressScopedStorage' object has no attribute '"


_CLASSES: dict[tuple[tuple[str, ...], tuple[str, ...], bool], type[AddressScopedStorage]] = {}
#: the slots of a storage class that hold the cells of its declared names
_CELL_SLOTS = tuple(f"_AddressScopedStorage__c{i}" for i in range(64))


def _unbound(key_group: int, key: Any) -> Any:
    """``load_at`` / ``store_at`` of :class:`StorageSlots` before :meth:`~StorageSlots.bind_tables`."""
    raise RuntimeError("StorageSlots.load_at/store_at need bind_tables first; use load()/changes()")


def _assigned_value(storage: AddressScopedStorage, cell: _Cell, name: str, obj: Any) -> Any:
    """The value to write for ``obj`` found in the fast slot ``name`` of ``storage`` (its
    cell checks it as an assignment, :func:`_assign`): ``(typename, object)`` held decoded,
    a :class:`TypedValue`, or ``None`` for a deletion. Raises what the assignment raises."""
    _assign(storage, cell, name, obj)
    tv = cell.tv
    return (cell.spec.type.typename, cell.obj) if tv is _STALE else tv


#: the check a fast slot's object passes to be written held decoded without its cell, per type
#: (else :func:`_assigned_value` decides); ``{o}``: the object, ``{i}``: the spec's index
_VALID = {
    # (a one-digit int first: two plain comparisons, which the interpreter specialises for
    # such ints; the chained range test makes two generic comparisons)
    IntType: "type({o}) is int and (-0x40000000 < {o} and {o} < 0x40000000 or lo{i} <= {o} <= hi{i})",
    LongType: "type({o}) is int and (-0x40000000 < {o} and {o} < 0x40000000 or lo{i} <= {o} <= hi{i})",
    DoubleType: "type({o}) is float and ({o} or holds{i}({o}))",  # (-0.0 does not round-trip decoded)
    StringType: "type({o}) is str and ({o}.isascii() or holds{i}({o}))",
    BoolType: "type({o}) is bool",
}


@functools.lru_cache(maxsize=256)
def _table_access(specs: tuple[tuple[str, Any], ...]) -> Callable[..., tuple[Callable[..., Any], Callable[..., Any]]]:
    """A factory of ``(load_at, store_at)`` for a storage whose every value (``specs``:
    ``(name, type)``, types of :data:`_VALID`) is held in a plain slot: straight-line code
    for these names, made once per tuple of specs (as ``collections.namedtuple`` makes its
    class), so an invocation reads and writes one slot and one table entry per value with
    no loop over the specs and no cell touched.

    The factory takes ``(storage, touched, general_load_at, general_store_at)`` and, per
    spec, ``(table, value typename, lo, hi, holds_decoded of its type, cell)``. ``load_at``
    hands a stored value in another form than ``(typename, object of the exact type)`` to
    the general functions, which keep the address until its ``store_at``.

    Example:
        >>> from raystream.statefun_api.spec import ValueSpec
        >>> slots = StorageSlots("a/b", (ValueSpec("n", IntType), ValueSpec("s", StringType)), [None, None])
        >>> n, s, touched = {}, {0: {"k": ("io.statefun.types/string", "x")}}, set()
        >>> slots.bind_tables([n, s], touched)
        >>> storage = slots.load_at(0, "k"); (storage.n, storage.s)
        (None, 'x')
        >>> storage.n = 1; del storage.s; slots.store_at(0, "k")
        >>> n, s, touched
        ({0: {'k': ('io.statefun.types/int', 1)}}, {0: {}}, {0})
    """
    k = len(specs)
    args = "".join(f", t{i}, tn{i}, lo{i}, hi{i}, holds{i}, c{i}" for i in range(k))
    shown = "".join(f", s{i}" for i in range(k))
    lines = [f"def make(storage, touched, general_load, general_store{args}):", "    general = False"]
    lines += [f"    s{i} = None" for i in range(k)]
    lines += ["    def load_at(key_group, key):", f"        nonlocal general{shown}"]
    for i in range(k):
        lines += [
            f"        g = t{i}.get(key_group)",
            f"        v{i} = None if g is None else g.get(key)",
            f"        if type(v{i}) is tuple and type(v{i}[1]) is {_RANGES[specs[i][1]][0].__name__} and v{i}[0] == tn{i}:",
            f"            v{i} = v{i}[1]",
            f"        elif v{i} is not None:",
            "            general = True",
            "            return general_load(key_group, key)",
        ]
    lines += ["        general = False"]
    lines += [f"        s{i} = storage.{name} = v{i}" for i, (name, _t) in enumerate(specs)]
    lines += ["        return storage", "    def store_at(key_group, key):", "        if general:", "            return general_store(key_group, key)"]
    for i, (name, _t) in enumerate(specs):  # (an empty slot, after `del storage.name`, reads None)
        lines += ["        try:", f"            o{i} = storage.{name}", "        except AttributeError:", f"            o{i} = None"]
    lines += [f"        if {' and '.join(f'o{i} is s{i}' for i in range(k)) or 'True'}:", "            return"]
    # (one value: it changed, as the test above says, so it is not compared again)
    for i, (name, tpe) in enumerate(specs):
        lines += [f"        if o{i} is s{i}:", f"            w{i} = _UNCHANGED"] if k > 1 else []
        lines += [
            f"        {'elif' if k > 1 else 'if'} {_VALID[tpe].format(o=f'o{i}', i=i)}:",
            f"            w{i} = (tn{i}, o{i})",
            "        else:",
            f"            w{i} = _assigned_value(storage, c{i}, {name!r}, o{i})",
        ]
    lines += ["        touched.add(key_group)"] if k else []
    for i in range(k):
        pad = "    " if k > 1 else ""
        lines += [f"        if w{i} is not _UNCHANGED:"] if k > 1 else []
        lines += [
            f"        {pad}g = t{i}.get(key_group)",
            f"        {pad}if w{i} is None:",
            f"        {pad}    if g is not None:",
            f"        {pad}        g.pop(key, None)",
            f"        {pad}elif g is None:",
            f"        {pad}    t{i}[key_group] = {{key: w{i}}}",
            f"        {pad}else:",
            f"        {pad}    g[key] = w{i}",
        ]
    lines += ["    return load_at, store_at"]
    namespace: dict[str, Any] = {"_UNCHANGED": _UNCHANGED, "_assigned_value": _assigned_value}
    exec(compile("\n".join(lines), f"<statefun storage access {tuple(name for name, _t in specs)}>", "exec"), namespace)
    return namespace["make"]  # type: ignore[no-any-return]


_UNCHANGED: Any = object()


class StorageSlots:
    """One reusable :class:`AddressScopedStorage` of a function type, bound to one state
    handle per declared spec: what the engine's dispatcher loads and stores per invocation.

    :meth:`load` fills the storage's cells from ``handle.value()`` of each handle (the keyed
    state of the current address; ``None``, a :class:`TypedValue` or ``(typename, decoded
    object)`` as :meth:`changes` gives it), :meth:`changes` returns ``(handle, new value)``
    for the values the function assigned or deleted (``None``: deleted). Reusing the cells
    saves creating a storage per invocation; the caller must stop reusing it (make a new
    one) once a function keeps a reference to the storage (:attr:`storage`).
    ``strict_delete``: the storage class of :func:`storage_class` with ``strict_delete``
    (fast assignments; deleting a value again raises, see :func:`deleted_again`).

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

    __slots__ = ("storage", "handles", "direct", "refs", "load_at", "store_at", "_slots", "_typename", "_tables", "_touched", "_fast")
    load_at: Callable[[int, Any], AddressScopedStorage]
    store_at: Callable[[int, Any], None]

    def __init__(self, typename: str, specs: tuple[ValueSpec, ...], handles: list[Any], strict_delete: bool = False) -> None:
        cells: dict[str, _Cell] = {spec.name: _Cell(spec, typename, None) for spec in specs}
        cls = storage_class(specs, fast=True, strict_delete=strict_delete)
        self.storage = cls(typename, cells)
        self._typename = typename
        self.handles = list(handles)
        fast = set(cls._fast_names)
        #: (cell, name) of each name held in a plain slot of the storage
        self._fast = [(cells[name], name) for name in cls._fast_names]
        # (cell, handle, value typename, exact Python type of a value kept decoded, name if held in a slot)
        self._slots = [
            (cells[spec.name], handle, spec.type.typename, _RANGES.get(spec.type, _NO_RANGE)[0],
             spec.name if spec.name in fast else None)
            for spec, handle in zip(specs, handles)
        ]
        self._tables: list[tuple[_Cell, dict[int, dict[Any, Any]], str, type, str | None]] | None = None
        self._touched: set[int] = set()
        #: True once :meth:`bind_tables` bound the values' tables (use :meth:`load_at`)
        self.direct = False
        #: references to :attr:`storage` these slots hold (one more once bound to tables with
        #: access of its own: see :meth:`bind_tables`), for a caller that checks whether a
        #: function kept the storage by its reference count
        self.refs = 1
        self.load_at = self.store_at = _unbound

    def bind_tables(self, tables: list[dict[int, dict[Any, Any]]], touched: set[int]) -> None:
        """Read and write the values at ``tables[i][key_group][key]`` (one table per spec,
        in spec order) with ``load_at(key_group, key)`` / ``store_at(key_group, key)``,
        instead of through the handles: the direct path of a keyed state backend that keeps
        values in dicts per key group (``HeapKeyedStateBackend.value_table``).

        ``load_at`` is :meth:`load` from the tables (the storage holding the values of
        ``key``; TypeError when a stored value is not of its spec's declared type);
        ``store_at`` writes what was assigned or deleted since, as :meth:`changes` gives it
        and ``ValueState.update`` / ``clear`` would, and adds the key group to ``touched``
        when it writes (TypeError or ValueError, with nothing of the address written, when
        a value assigned is not valid for its spec: what the assignment raises through the
        plain storage class). When every value is held in a plain slot (built-in immutable
        types: :func:`fast_names`), both are functions made for the function type's specs
        (:func:`_table_access`) that read and write the slots and the tables only, and
        compare what the slots hold at ``store_at`` with what ``load_at`` put there: the
        cells are used only for a value to check further (a string, a float, one out of
        range or of another type) or a stored value in another form (then for the whole
        address).

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
        self._tables = [
            (cell, table, typename, exact, name) for (cell, _h, typename, exact, name), table in zip(self._slots, tables)
        ]
        self._touched = touched
        self.direct = True
        self.load_at, self.store_at = self._load_at, self._store_at
        if len(self._fast) == len(self._slots):  # (names are identifiers, no keyword: ValueSpec)
            make = _table_access(tuple((name, cell.spec.type) for cell, _t, _tn, _x, name in self._tables))
            args: list[Any] = []
            for cell, table, typename, _exact, _name in self._tables:
                _x, lo, hi = _RANGES[cell.spec.type]
                args += [table, typename, lo, hi, functools.partial(holds_decoded, cell.spec.type), cell]
            self.load_at, self.store_at = make(self.storage, touched, self._load_at, self._store_at, *args)
            self.refs = 2  # (the functions' closure cell)

    def _load_at(self, key_group: int, key: Any) -> AddressScopedStorage:
        """:meth:`load` from the bound tables: the values of ``key`` (in ``key_group``),
        through the cells (the general ``load_at``).

        Raises:
            TypeError: a stored value is not of the spec's declared type.
        """
        storage = self.storage
        for cell, table, typename, exact, name in self._tables:  # type: ignore[union-attr]
            group = table.get(key_group)
            value = None if group is None else group.get(key)
            cell.dirty = False
            if type(value) is tuple and value[0] == typename and type(value[1]) is exact:
                cell.tv = _STALE
                obj = cell.obj = value[1]
            elif value is None:
                cell.tv = None
                obj = cell.obj = None
            else:
                self._fill(cell, value, typename)
                obj = cell.get() if name is not None else None
            if name is not None:  # the function reads and assigns the slot (see storage_class)
                setattr(storage, name, obj)
                cell.shown = obj
        return storage

    def _store_at(self, key_group: int, key: Any) -> None:
        """Write the values assigned or deleted since :meth:`load_at` to the bound tables
        (what :meth:`changes` gives, written as ``ValueState.update`` / ``clear`` would),
        through the cells (the general ``store_at``).

        Raises:
            TypeError, ValueError: a value assigned to a fast slot is not valid for its spec
                (what the assignment itself raises through the plain storage class); nothing
                of this address is written then.
        """
        storage = self.storage
        tables: list[tuple[_Cell, dict[int, dict[Any, Any]], str, type, str | None]] = self._tables  # type: ignore[assignment]
        for cell, _table, _typename, exact, name in tables:
            if name is not None:
                obj = getattr(storage, name, None)  # (None after `del storage.name`: an empty slot)
                if obj is not cell.shown:
                    lo = cell._lo
                    if type(obj) is exact and lo is not None and lo <= obj <= cell._hi:  # an int/long in range (as _Cell.set)
                        cell.shown = cell.obj = obj
                        cell.tv = _STALE
                        cell.dirty = True
                    else:
                        _assign(storage, cell, name, obj)
        touched = False
        for cell, table, typename, _exact, _name in tables:
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
        storage = self.storage
        for cell, handle, typename, exact, name in self._slots:
            value = handle.value()
            cell.dirty = False
            if type(value) is tuple and value[0] == typename and type(value[1]) is exact:
                cell.tv = _STALE
                obj = cell.obj = value[1]
            elif value is None:
                cell.tv = None
                obj = cell.obj = None
            else:
                self._fill(cell, value, typename)
                obj = cell.get() if name is not None else None
            if name is not None:
                setattr(storage, name, obj)
                cell.shown = obj
        return storage

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
        if self._fast:
            _sync_fast(self.storage, self._fast)
        out = []
        for cell, handle, typename, _exact, _name in self._slots:
            if cell.dirty:
                tv = cell.tv
                out.append((handle, (typename, cell.obj) if tv is _STALE else tv))
        return out
