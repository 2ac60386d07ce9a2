"""The sans-I/O invocation core: run a batch of messages through one function address.

This is a plain function call with no I/O, threads or Ray: give it the registry, the
target address, the address's stored state and the messages; it runs the user function
once per message (in order, sharing one :class:`~statefun_api.context.Context`, so later
messages see earlier writes) and returns the effects as an
:class:`~statefun_api.effects.InvocationResult`. The engine's dispatcher and the
request-reply handler are both thin layers over it.

A batch is all or nothing: if the function raises on any message, :func:`invoke` raises
:class:`~statefun_api.errors.StatefulFunctionError` (chained to the original exception)
and no effects are returned, so the caller can retry the whole batch.

Async functions: :func:`invoke_async` awaits them on the caller's event loop.
:func:`invoke` (synchronous) drives them to completion on the process's *function loop*:
one event loop that runs for the life of the process in its own daemon thread
(``statefun-function-loop``), started on first use, never the caller's thread's loop.
As on a StateFun SDK server, whose aiohttp loop serves every request, what a function
creates on the loop and keeps between calls (a client session, a lock, a queue) stays
usable in later calls, also of other dispatchers and jobs in the same process, and tasks
it starts and does not await go on running. Calling :func:`invoke` for an async function
from inside a running event loop is an error; use :func:`invoke_async` there.

Example:
    >>> from raystream.statefun_api import StatefulFunctions, ValueSpec, IntType, message_builder
    >>> functions = StatefulFunctions()
    >>> @functions.bind("com.example/counter", specs=[ValueSpec("seen", IntType)])
    ... def counter(context, message):
    ...     context.storage.seen = (context.storage.seen or 0) + message.as_int()
    >>> target = Address.of("com.example/counter", "a")
    >>> msgs = [message_builder("com.example/counter", "a", int_value=n) for n in (1, 2)]
    >>> invoke(functions, target, {}, msgs).state_mutations
    {'seen': b'\\r\\x03\\x00\\x00\\x00'}
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Awaitable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from types import AsyncGeneratorType, GeneratorType
from typing import Any, TypeVar

from raystream.statefun_api.address import Address
from raystream.statefun_api.context import Context
from raystream.statefun_api.effects import InvocationResult
from raystream.statefun_api.errors import FunctionNotFound, StatefulFunctionError
from raystream.statefun_api.functions import StatefulFunction, StatefulFunctions
from raystream.statefun_api.messages import Message
from raystream.statefun_api.storage import (
    AddressScopedStorage,
    StateValue,
    make_storage,
    storage_mutations,
)

__all__ = [
    "Invocation",
    "invoke",
    "invoke_async",
    "invoke_trusted",
    "invoke_prepared",
    "invoke_prepared_async",
    "BatchContext",
    "invocation_failure",
    "await_privately",
    "settle_outcome",
    "generator_result_error",
    "function_loop",
]

R = TypeVar("R")


@dataclass(frozen=True)
class Invocation:
    """One incoming message and who sent it (``caller=None`` for ingress messages).

    Example:
        >>> from raystream.statefun_api import message_builder
        >>> m = message_builder("com.example/f", "1", int_value=1)
        >>> Invocation(m, caller=Address.of("com.example/g", "2")).caller.typename
        'com.example/g'
    """

    message: Message
    caller: Address | None = None


class _Batch:
    """A prepared batch: the resolved function, its context and the messages with their callers."""

    __slots__ = ("target", "fn", "context", "result", "messages", "callers", "keep_state")

    def __init__(
        self,
        functions: StatefulFunctions,
        target: Address,
        state: Mapping[str, StateValue] | None,
        messages: Sequence[Message | Invocation],
    ) -> None:
        if not isinstance(target, Address):
            raise TypeError(f"target must be an Address, got {target!r}")
        invocations = [_as_invocation(target, m) for m in messages]
        first_type = invocations[0].message.value_typename() if invocations else None
        try:
            fn: StatefulFunction = functions.for_typename(target.typename)
        except FunctionNotFound as exc:
            raise FunctionNotFound(
                f"cannot deliver a message of type {first_type!r} to {target}: {exc}",
                address=target,
                message_typename=first_type,
            ) from None
        self._prepare(fn, target, state, [i.message for i in invocations], [i.caller for i in invocations])

    @classmethod
    def trusted(
        cls,
        fn: StatefulFunction,
        target: Address,
        state: Mapping[str, StateValue] | None,
        messages: list[Message],
        callers: list[Address | None],
    ) -> _Batch:
        """A batch whose function is resolved and whose messages are known to be addressed
        to ``target`` (the engine's dispatcher routes by address): no per-message checks."""
        batch = cls.__new__(cls)
        batch._prepare(fn, target, state, messages, callers)
        return batch

    @classmethod
    def prepared(
        cls,
        fn: StatefulFunction,
        target: Address,
        storage: AddressScopedStorage,
        messages: list[Message],
        callers: list[Address | None],
    ) -> _Batch:
        """A trusted batch whose storage the caller built (and whose changes it reads)."""
        batch = cls.__new__(cls)
        batch.target = target
        batch.fn = fn
        batch.messages = messages
        batch.callers = callers
        batch.result = InvocationResult()
        batch.context = Context(target, storage, batch.result)
        batch.keep_state = True
        return batch

    def _prepare(
        self,
        fn: StatefulFunction,
        target: Address,
        state: Mapping[str, StateValue] | None,
        messages: list[Message],
        callers: list[Address | None],
    ) -> None:
        self.target = target
        self.fn = fn
        self.messages = messages
        self.callers = callers
        try:
            storage = make_storage(target.typename, fn.specs, state or {})
        except TypeError as exc:
            raise StatefulFunctionError(
                f"cannot load the state of {target}: {exc}",
                address=target,
                message_typename=messages[0].value_typename() if messages else None,
            ) from exc
        self.result = InvocationResult()
        self.context = Context(target, storage, self.result)
        self.keep_state = False

    def start(self, index: int) -> Any:
        """Call the function on message ``index``; wrap a raised exception."""
        self.context._caller = self.callers[index]
        try:
            return self.fn.fun(self.context, self.messages[index])
        except Exception as exc:
            raise self.failure(index, exc) from exc

    def run_sync(self) -> InvocationResult:
        """Run every message through a sync function (awaitables it returns are driven on
        a private loop); async functions go through :func:`_run_async`."""
        fun = self.fn.fun
        context = self.context
        callers = self.callers
        for index, message in enumerate(self.messages):
            context._caller = callers[index]
            try:
                outcome = fun(context, message)
            except Exception as exc:
                raise self.failure(index, exc) from exc
            if outcome is not None:  # e.g. a sync wrapper returning a coroutine (or a generator)
                if inspect.isawaitable(outcome):
                    _run_private(_await_one(self, index, outcome), self.target)
                else:
                    self.refuse_generator(index, outcome)
        return self.finish()

    def refuse_generator(self, index: int, outcome: Any) -> None:
        """Raise :func:`generator_result_error` if ``outcome`` (what message ``index``'s call
        returned) is a generator; anything else a function returns is ignored."""
        if isinstance(outcome, _GENERATORS):
            raise generator_result_error(
                self.target, index, len(self.messages), self.messages[index].value_typename(), self.callers[index], outcome
            )

    def failure(self, index: int, exc: BaseException) -> StatefulFunctionError:
        return invocation_failure(
            self.target, index, len(self.messages), self.messages[index].value_typename(), self.callers[index], exc
        )

    def finish(self) -> InvocationResult:
        if not self.keep_state:
            self.result.state_mutations = storage_mutations(self.context.storage)
        return self.result


def _as_invocation(target: Address, item: Message | Invocation) -> Invocation:
    if isinstance(item, Message):
        item = Invocation(item)
    elif not isinstance(item, Invocation):
        raise TypeError(f"messages must be Message or Invocation objects, got {item!r}")
    message = item.message
    if message.target_typename != target.typename or message.target_id != target.id:
        raise StatefulFunctionError(
            f"a message for {message.target_typename}/{message.target_id} was delivered to "
            f"{target}; route messages by their target address",
            address=target,
            message_typename=message.value_typename(),
        )
    return item


def invoke(
    functions: StatefulFunctions,
    target: Address,
    state: Mapping[str, StateValue] | None,
    messages: Sequence[Message | Invocation],
) -> InvocationResult:
    """Run ``messages`` through the function at ``target``, synchronously.

    Args:
        functions: the registry holding the function for ``target.typename``.
        target: the function address; every message must be addressed to it.
        state: the address's stored values: spec name -> bytes of the spec's type, a
            TypedValue (its typename is checked), or ``None``/missing for "no value".
            Names that are not declared are ignored.
        messages: the incoming messages in delivery order; a bare Message counts as
            coming from an ingress (``context.caller is None``).

    Returns:
        The effects of the whole batch.

    Raises:
        FunctionNotFound: no function is registered for ``target.typename``.
        StatefulFunctionError: the function raised (chained), the state does not match
            the declared types, a message is addressed elsewhere, or an async function
            was invoked from inside a running event loop.

    Example:
        >>> from raystream.statefun_api import StatefulFunctions, message_builder
        >>> functions = StatefulFunctions()
        >>> @functions.bind("com.example/echo")
        ... async def echo(context, message):
        ...     context.send(message_builder("com.example/sink", "1", str_value=message.as_string()))
        >>> m = message_builder("com.example/echo", "x", str_value="hi")
        >>> [o.message.as_string() for o in invoke(functions, m.target, {}, [m]).outgoing]
        ['hi']
    """
    return _run_batch(_Batch(functions, target, state, messages))


def _run_batch(batch: _Batch) -> InvocationResult:
    if batch.fn.is_async:
        return _run_private(_run_async(batch), batch.target)
    return batch.run_sync()


def invoke_trusted(
    fn: StatefulFunction,
    target: Address,
    state: Mapping[str, StateValue] | None,
    messages: list[Message],
    callers: list[Address | None],
) -> InvocationResult:
    """:func:`invoke` for the engine's dispatcher: ``fn`` is the function registered for
    ``target.typename`` and ``messages[i]`` (sent by ``callers[i]``, ``None`` for an
    ingress) are all addressed to ``target``, so the per-message checks are skipped.
    Same semantics and errors otherwise."""
    return _run_batch(_Batch.trusted(fn, target, state, messages, callers))


def invocation_failure(
    target: Address, index: int, count: int, value_typename: str, caller: Address | None, exc: BaseException
) -> StatefulFunctionError:
    """The error of a function that raised ``exc`` on message ``index`` (of ``count``) of a
    batch to ``target``; raise it ``from exc``.

    Example:
        >>> str(invocation_failure(Address.of("a/f", "1"), 0, 2, "t/int", None, KeyError("x")))
        "function a/f/1 failed on a message of type 't/int' from ingress (message 1 of 2 in the batch): KeyError: 'x'"
    """
    return StatefulFunctionError(
        f"function {target} failed on a message of type {value_typename!r} from {caller or 'ingress'} "
        f"(message {index + 1} of {count} in the batch): "
        f"{type(exc).__name__}: {exc}",
        address=target,
        message_typename=value_typename,
    )


_GENERATORS = (GeneratorType, AsyncGeneratorType)


def generator_result_error(
    target: Address, index: int, count: int, value_typename: str, caller: Address | None, outcome: Any
) -> StatefulFunctionError:
    """The error of a function that *returned* a generator (e.g. ``lambda c, m: gen(c, m)``
    or a decorator around a generator function): nobody iterates it, so none of its body
    would run and its messages, egress and state writes would be lost without a word.

    Example:
        >>> def gen(context, message):
        ...     yield message
        >>> error = generator_result_error(Address.of("a/f", "1"), 0, 1, "t/int", None, gen(None, None))
        >>> "function type 'a/f' at address a/f/1 returned a generator" in str(error)
        True
    """
    kind = "an async generator" if isinstance(outcome, AsyncGeneratorType) else "a generator"
    code = getattr(outcome, "gi_code", None) or getattr(outcome, "ag_code", None)
    origin = getattr(outcome, "__qualname__", type(outcome).__name__)
    if code is not None:
        origin = f"{origin} at {code.co_filename}:{code.co_firstlineno}"
    if isinstance(outcome, GeneratorType):
        outcome.close()  # (not started: nothing of its body runs)
    return StatefulFunctionError(
        f"function type {target.typename!r} at address {target} returned {kind} ({origin}) on a "
        f"message of type {value_typename!r} from {caller or 'ingress'} (message {index + 1} of "
        f"{count} in the batch): nobody iterates it, so none of its body would run and its "
        f"messages, egress and state changes would be lost; a stateful function returns "
        f"nothing: replace `yield x` with context.send(...) / context.send_egress(...) and "
        f"call the function's body directly instead of returning a generator",
        address=target,
        message_typename=value_typename,
    )


def settle_outcome(
    outcome: Any, target: Address, index: int, count: int, value_typename: str, caller: Address | None
) -> None:
    """Deal with what a *sync* function's call returned when it is not ``None``: an awaitable
    (e.g. a wrapper returning a coroutine) is driven by :func:`await_privately`, a generator
    is refused with :func:`generator_result_error`, anything else is ignored."""
    if inspect.isawaitable(outcome):
        await_privately(outcome, target, index, count, value_typename, caller)
    elif isinstance(outcome, _GENERATORS):
        raise generator_result_error(target, index, count, value_typename, caller, outcome)


def await_privately(
    outcome: Awaitable[Any], target: Address, index: int, count: int, value_typename: str, caller: Address | None
) -> None:
    """Drive an awaitable that a *sync* function returned (e.g. a wrapper returning a
    coroutine) on a private event loop, as :func:`invoke` does; a failure raises
    :func:`invocation_failure`."""

    async def one() -> None:
        try:
            result = await outcome
        except Exception as exc:
            raise invocation_failure(target, index, count, value_typename, caller, exc) from exc
        if isinstance(result, _GENERATORS):  # (an async wrapper returning a generator)
            raise generator_result_error(target, index, count, value_typename, caller, result)

    _run_private(one(), target)


class BatchContext(Context):
    """The :class:`~statefun_api.context.Context` of :func:`invoke_prepared` and of the
    engine's dispatcher: ``storage`` is a plain attribute (set per batch) rather than a
    property, which saves a Python call on every ``context.storage`` access of the hot path
    (``address`` likewise); otherwise the same object. The dispatcher reuses one for
    consecutive batches (rebinding ``_address``, ``address``, ``_storage``, ``storage`` and
    ``_caller``) while no function keeps it."""

    __slots__ = ("storage", "address")


_FastContext = BatchContext


def invoke_prepared(
    fn: StatefulFunction,
    target: Address,
    storage: AddressScopedStorage,
    messages: list[Message],
    callers: list[Address | None],
) -> InvocationResult:
    """:func:`invoke_trusted` on a storage the caller built (e.g. the engine's dispatcher,
    from keyed state holding decoded values): the result's ``state_mutations`` stay empty,
    the caller reads the changes with :func:`~statefun_api.storage.storage_changes`. Same
    semantics and errors as :func:`invoke`; a sync function runs in a plain loop here."""
    if fn.is_async:
        return _run_batch(_Batch.prepared(fn, target, storage, messages, callers))
    result = InvocationResult()
    context = _FastContext(target, storage, result)
    context.storage = storage  # type: ignore[misc]  # a slot in _FastContext
    context.address = target  # type: ignore[misc]
    fun = fn.fun
    for index, message in enumerate(messages):
        context._caller = callers[index]
        try:
            outcome = fun(context, message)
        except Exception as exc:
            raise _Batch.prepared(fn, target, storage, messages, callers).failure(index, exc) from exc
        if outcome is not None:  # a sync wrapper returning a coroutine (or a generator)
            batch = _Batch.prepared(fn, target, storage, messages, callers)
            batch.context, batch.result = context, result
            if inspect.isawaitable(outcome):
                _run_private(_await_one(batch, index, outcome), target)
            else:
                batch.refuse_generator(index, outcome)
    return result


async def invoke_async(
    functions: StatefulFunctions,
    target: Address,
    state: Mapping[str, StateValue] | None,
    messages: Sequence[Message | Invocation],
) -> InvocationResult:
    """Like :func:`invoke`, awaiting async functions on the running event loop.

    Sync functions are called directly (they block the loop for their duration).
    """
    batch = _Batch(functions, target, state, messages)
    return await _run_async(batch)


async def invoke_prepared_async(
    fn: StatefulFunction,
    target: Address,
    storage: AddressScopedStorage,
    messages: list[Message],
    callers: list[Address | None],
) -> InvocationResult:
    """:func:`invoke_prepared` awaited on the running event loop (the engine's embedded async
    functions, :mod:`statefun_api.embedded_caller`): the caller reads the changes from
    ``storage``. Same semantics and errors as :func:`invoke_async`."""
    return await _run_async(_Batch.prepared(fn, target, storage, messages, callers))


async def _run_async(batch: _Batch) -> InvocationResult:
    for index in range(len(batch.messages)):
        outcome = batch.start(index)
        if outcome is not None:
            if inspect.isawaitable(outcome):
                await _await_one(batch, index, outcome)
            else:
                batch.refuse_generator(index, outcome)
    return batch.finish()


async def _await_one(batch: _Batch, index: int, outcome: Awaitable[Any]) -> None:
    try:
        result = await outcome
    except Exception as exc:
        raise batch.failure(index, exc) from exc
    if result is not None:  # (an async wrapper returning what a generator function returns)
        batch.refuse_generator(index, result)


def _run_private(coro: Coroutine[Any, Any, R], target: Address) -> R:
    """Run ``coro`` to completion on the process's function loop (:func:`function_loop`),
    waiting for it in this thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        coro.close()
        raise StatefulFunctionError(
            f"function {target} is async and invoke() was called from a running event "
            f"loop; use `await invoke_async(...)` (or RequestReplyHandler.handle_async) there",
            address=target,
        )
    return asyncio.run_coroutine_threadsafe(coro, function_loop()).result()


_LOOP_LOCK = threading.Lock()
_LOOP: tuple[asyncio.AbstractEventLoop, threading.Thread] | None = None


def function_loop() -> asyncio.AbstractEventLoop:
    """The event loop that async functions invoked synchronously run on: one per process,
    running in the daemon thread ``statefun-function-loop`` (started on first use, and again
    in a child process that forked after it). A process-wide service, not a job's thread:
    a task executor that hosted async functions is as clean after the job as any other.

    Example:
        >>> loop = function_loop()
        >>> loop.is_running(), function_loop() is loop
        (True, True)
    """
    global _LOOP
    current = _LOOP
    if current is not None and current[1].is_alive():
        return current[0]
    with _LOOP_LOCK:
        if _LOOP is None or not _LOOP[1].is_alive():
            loop = asyncio.new_event_loop()
            running = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(running.set)
                loop.run_forever()

            thread = threading.Thread(target=run, name="statefun-function-loop", daemon=True)
            thread.start()
            running.wait()
            _LOOP = (loop, thread)
        return _LOOP[0]
