"""``StatefulFunctions``: the registry of function typenames, code and state specs.

Example:
    >>> from raystream.statefun_api.spec import ValueSpec
    >>> from raystream.statefun_api.types import IntType
    >>> functions = StatefulFunctions()
    >>> @functions.bind("com.example/counter", specs=[ValueSpec("seen", IntType)])
    ... def counter(context, message):
    ...     context.storage.seen = (context.storage.seen or 0) + 1
    >>> "com.example/counter" in functions
    True
    >>> functions.for_typename("com.example/counter").specs
    (ValueSpec(name='seen', type=<StateFun type io.statefun.types/int>),)
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from raystream.statefun_api.address import parse_typename
from raystream.statefun_api.errors import FunctionNotFound
from raystream.statefun_api.spec import ValueSpec

__all__ = ["StatefulFunctions", "StatefulFunction", "StorageSpec", "not_a_registry"]

F = TypeVar("F", bound=Callable[..., Any])


def _is_async(fun: Callable[..., Any]) -> bool:
    if inspect.iscoroutinefunction(fun):
        return True
    call = getattr(fun, "__call__", None)  # noqa: B004 - callable objects
    return call is not None and inspect.iscoroutinefunction(call)


def _check_not_generator(typename: str, fun: Callable[..., Any]) -> None:
    """Refuse a generator (or async generator) function: calling one runs none of its body,
    so every ``context.send`` / ``send_egress`` / storage write in it would be dropped
    silently (a habit from ``KeyedProcessFunction.process_element``, which yields)."""
    call = getattr(fun, "__call__", None)  # noqa: B004 - callable objects
    for candidate in (fun, call):
        if candidate is not None and (inspect.isgeneratorfunction(candidate) or inspect.isasyncgenfunction(candidate)):
            kind = "an async generator" if inspect.isasyncgenfunction(candidate) else "a generator"
            raise ValueError(
                f"function {typename!r} ({_describe(fun)}) is {kind} function (it contains `yield`): "
                f"calling it would run none of its body, so its messages, egress and state changes "
                f"would be lost; a stateful function returns nothing: replace `yield x` with "
                f"context.send(...) / context.send_egress(...)"
            )


def _check_signature(typename: str, fun: Callable[..., Any]) -> None:
    try:
        signature = inspect.signature(fun)
    except (TypeError, ValueError):
        return  # builtins and some C callables have no signature: trust the caller
    try:
        signature.bind(None, None)
    except TypeError:
        raise ValueError(
            f"function {typename!r} must accept (context, message), "
            f"but its signature is {fun.__name__ if hasattr(fun, '__name__') else fun!r}"
            f"{signature}"
        ) from None


@dataclass(frozen=True, eq=False)
class StorageSpec:
    """A function's declared state as the official SDK shows it (``fun.storage_spec``).

    Attributes:
        names: the spec names.
        specs: the specs, in declaration order.
    """

    names: frozenset[str]
    specs: list[ValueSpec]


@dataclass(frozen=True)
class StatefulFunction:
    """A registered function: its typename, code, state specs and whether it is async."""

    typename: str
    fun: Callable[..., Any]
    specs: tuple[ValueSpec, ...]
    is_async: bool

    @property
    def storage_spec(self) -> StorageSpec:
        """The specs under the official SDK's attribute name (``storage_spec.specs``).

        Example:
            >>> from raystream.statefun_api.spec import ValueSpec
            >>> from raystream.statefun_api.types import IntType
            >>> fn = StatefulFunction("a/b", print, (ValueSpec("seen", IntType),), False)
            >>> fn.storage_spec.names
            frozenset({'seen'})
        """
        return StorageSpec(frozenset(spec.name for spec in self.specs), list(self.specs))

    def missing_specs(self, present: Iterable[str]) -> list[ValueSpec]:
        """The declared specs whose names are not in ``present``, in declaration order."""
        names = set(present)
        return [spec for spec in self.specs if spec.name not in names]


class StatefulFunctions:
    """A set of stateful functions, each bound to a typename (``"namespace/name"``).

    Functions are ``def f(context, message)`` or ``async def f(context, message)``.

    Example:
        >>> functions = StatefulFunctions()
        >>> def greet(context, message):
        ...     pass
        >>> functions.register("com.example/greeter", greet)
        >>> sorted(functions.typenames())
        ['com.example/greeter']
    """

    __slots__ = ("_functions",)

    def __init__(self) -> None:
        self._functions: dict[str, StatefulFunction] = {}

    def register(
        self,
        typename: str,
        fun: Callable[..., Any],
        specs: Iterable[ValueSpec] | None = None,
    ) -> None:
        """Register ``fun`` under ``typename`` with the given state ``specs``.

        Registering the same code again (the same function of the same file and line: a
        notebook cell run again, a module reloaded) replaces it, as the SDK does; another
        function under a registered typename is an error.

        Example:
            >>> functions = StatefulFunctions()
            >>> for _ in range(2):  # the same cell, run twice
            ...     functions.register("com.example/f", lambda context, message: None)
            >>> def other(context, message):
            ...     pass
            >>> functions.register("com.example/f", other)  # doctest: +ELLIPSIS
            Traceback (most recent call last):
            ...
            ValueError: a function is already registered under 'com.example/f' (<lambda> at ...); cannot register other at ...

        Raises:
            ValueError: bad typename, another function under a registered typename,
                duplicate spec name, a function that cannot be called as
                ``fun(context, message)``, or a generator function (its body would never run).
        """
        parse_typename(typename)
        if fun is None or not callable(fun):
            raise ValueError(f"function {typename!r}: expected a callable, got {fun!r}")
        registered = self._functions.get(typename)
        if registered is not None and _origin(registered.fun) != _origin(fun):
            raise ValueError(
                f"a function is already registered under {typename!r} ({_describe(registered.fun)}); "
                f"cannot register {_describe(fun)} under it too"
            )
        spec_list = tuple(specs or ())
        seen: set[str] = set()
        for spec in spec_list:
            if not isinstance(spec, ValueSpec):
                raise TypeError(f"function {typename!r}: specs must be ValueSpecs, got {spec!r}")
            if spec.name in seen:
                raise ValueError(f"function {typename!r}: duplicate ValueSpec name {spec.name!r}")
            seen.add(spec.name)
        _check_not_generator(typename, fun)
        _check_signature(typename, fun)
        self._functions[typename] = StatefulFunction(typename, fun, spec_list, _is_async(fun))

    def bind(self, typename: str, specs: Iterable[ValueSpec] | None = None) -> Callable[[F], F]:
        """Decorator form of :meth:`register`; returns the function unchanged.

        Example:
            >>> functions = StatefulFunctions()
            >>> @functions.bind(typename="com.example/echo")
            ... async def echo(context, message):
            ...     context.send(message)
            >>> functions.for_typename("com.example/echo").is_async
            True
        """

        def decorator(fun: F) -> F:
            self.register(typename, fun, specs)
            return fun

        return decorator

    def for_typename(self, typename: str) -> StatefulFunction:
        """The function registered under ``typename``.

        Raises:
            FunctionNotFound: nothing is registered under ``typename``.
        """
        found = self._functions.get(typename)
        if found is None:
            known = ", ".join(sorted(self._functions)) or "none"
            raise FunctionNotFound(
                f"no function is registered under {typename!r} (registered: {known})"
            )
        return found

    def get(self, typename: str) -> StatefulFunction | None:
        """The function registered under ``typename``, or ``None``."""
        return self._functions.get(typename)

    def typenames(self) -> Iterator[str]:
        """Iterate over the registered typenames."""
        return iter(list(self._functions))

    def __contains__(self, typename: object) -> bool:
        return typename in self._functions

    def __len__(self) -> int:
        return len(self._functions)

    def __repr__(self) -> str:
        return f"StatefulFunctions({sorted(self._functions)})"


def not_a_registry(what: str, obj: Any) -> str:
    """The error message for ``obj`` given to ``what`` where a :class:`StatefulFunctions` is
    needed; for the official SDK's registry (a module not ported yet), the two ways to run it.

    Example:
        >>> not_a_registry("StatefulFunctionsJob", {})
        'StatefulFunctionsJob needs a StatefulFunctions registry, got {}'
    """
    if type(obj).__module__.split(".")[0] == "statefun":
        return (
            f"{what} got the official StateFun SDK's {type(obj).__name__} (`from statefun import *`): change the "
            f"import to `from raystream.statefun_api import *` to embed its functions, or serve them as the SDK "
            f"does (statefun.RequestReplyHandler behind aiohttp) and declare their endpoint "
            f"(with_endpoint(remote_endpoint(...)) or with_module_yaml(...)) with an empty StatefulFunctions()"
        )
    return f"{what} needs a StatefulFunctions registry, got {obj!r}"


def _origin(fun: Any) -> tuple[Any, ...]:
    """Where ``fun`` was defined: module, qualified name, file and first line (the same for
    the function a re-run notebook cell defines again); the object itself when unknown."""
    code = getattr(fun, "__code__", None)
    if code is None:
        return (fun,)
    return (getattr(fun, "__module__", None), getattr(fun, "__qualname__", None), code.co_filename, code.co_firstlineno)


def _describe(fun: Any) -> str:
    code = getattr(fun, "__code__", None)
    name = getattr(fun, "__qualname__", None) or repr(fun)
    return f"{name} at {code.co_filename}:{code.co_firstlineno}" if code is not None else name
