"""The raystream exception hierarchy.

Every error raystream raises on purpose derives from :class:`RaystreamError`, so user
code can catch one type. Messages name the operator, subtask and offending value.
"""

from __future__ import annotations

from typing import Callable, TypeVar

E = TypeVar("E", bound=BaseException)

__all__ = [
    "RaystreamError",
    "ConfigError",
    "GraphError",
    "JobFailed",
    "JobCancelled",
    "CheckpointError",
    "StateError",
    "UserCodeError",
    "short_repr",
    "unpickling_failed",
    "refuses_state",
    "refusing_restore",
]


class RaystreamError(Exception):
    """Root of every error raystream raises on purpose."""


class ConfigError(RaystreamError, ValueError):
    """A setting or argument is invalid (raised before anything runs)."""


class GraphError(ConfigError):
    """The job graph is malformed: unknown column, non-callable function, bad edge."""


class JobFailed(RaystreamError):
    """A job failed and its restart strategy (if any) gave up.

    Attributes:
        operator: name of the operator that failed, when known.
        subtask: index of the failing parallel subtask, when known.
        record: ``repr`` of the record being processed, when known.
        cause: the formatted original traceback from the worker, when known.
        state_refused: the cause is raystream refusing state a task restored
            (:func:`refuses_state`): a restore from a user's savepoint that fails so fails the
            job at once instead of being restored again by every restart.
    """

    def __init__(
        self,
        message: str,
        *,
        operator: str | None = None,
        subtask: int | None = None,
        record: str | None = None,
        cause: str | None = None,
        state_refused: bool = False,
    ) -> None:
        super().__init__(message)
        self.operator = operator
        self.subtask = subtask
        self.record = record
        self.cause = cause
        self.state_refused = state_refused

    def __reduce__(self) -> tuple[Callable[..., JobFailed], tuple[object, ...]]:
        # keep attributes across Ray/pickle boundaries
        return (
            _rebuild_job_failed,
            (self.args[0], self.operator, self.subtask, self.record, self.cause, self.state_refused),
        )


def _rebuild_job_failed(  # pragma: no cover - pickle
    message: str, operator: str | None, subtask: int | None, record: str | None, cause: str | None,
    state_refused: bool = False,
) -> JobFailed:
    return JobFailed(message, operator=operator, subtask=subtask, record=record, cause=cause,
                     state_refused=state_refused)


class JobCancelled(RaystreamError):
    """The job was cancelled before it finished."""


class CheckpointError(RaystreamError):
    """A checkpoint or savepoint could not be taken, written or restored."""


class StateError(RaystreamError):
    """Keyed or operator state was used wrongly (no current key, type mismatch...)."""


class UserCodeError(RaystreamError):
    """A user function raised while processing ``record`` (wrapped by operators so the task
    can name the record; the task turns it into :class:`JobFailed`). ``what`` names what
    ``record`` is when it is not a record: ``"index"`` for the index a generator's function
    was called with."""

    def __init__(self, record: object, exc: BaseException, what: str = "record") -> None:
        super().__init__(f"{type(exc).__name__}: {exc}")
        self.record = record
        self.original = exc
        self.what = what


def refusing_restore(exc: E) -> E:
    """Mark ``exc`` as raystream refusing state a task restored (a restored key of another
    type, a state declared with another kind, state another kind of operator wrote under
    the uid): restoring the same savepoint into the same job meets the same refusal, so a
    job started ``from_savepoint=`` fails at once with it (:func:`refuses_state`)."""
    exc.refuses_restore = True  # type: ignore[attr-defined]
    return exc


def refuses_state(exc: BaseException) -> bool:
    """Whether ``exc`` is raystream refusing restored state (raised through
    :func:`refusing_restore` where the refusal is decided). Any other failure of a restored
    job, also a :class:`StateError` of user code (state used without a current key) or a
    :class:`CheckpointError` of a checkpoint, restarts it as usual.

    Example:
        >>> refuses_state(refusing_restore(StateError("state 'c' was restored as 'value' state")))
        True
        >>> refuses_state(StateError("state 'n' used without a current key")), refuses_state(OSError("down"))
        (False, False)
    """
    return bool(getattr(exc, "refuses_restore", False))


def short_repr(value: object, limit: int = 200) -> str:
    """``repr(value)`` cut to ``limit`` characters (for error messages)."""
    try:
        text = repr(value)
    except Exception as exc:  # a broken __repr__ must not hide the real error
        text = f"<unrepresentable {type(value).__name__}: {exc}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def unpickling_failed(what: str, where: str, exc: BaseException) -> JobFailed:
    """:class:`JobFailed` for ``what`` of a job (``"the operators of 'map'"``) that cannot
    be unpickled ``where`` (``"in task executor pid 12"``), with what to do when the cause is
    code that process cannot import: a module the driver found through a ``sys.path`` entry
    it added at run time (``sys.path.append("../src")`` in a notebook), or that exists only on
    the driver's machine. cloudpickle pickles functions and classes of an importable module
    by reference, so every Ray worker has to import that module itself.

    Example:
        >>> exc = ModuleNotFoundError("No module named 'helpers'", name="helpers")
        >>> print(unpickling_failed("the graph of job 'j'", "in the job master", exc))  # doctest: +ELLIPSIS
        the graph of job 'j' cannot be unpickled in the job master: ModuleNotFoundError: No module named 'helpers'; ...
    """
    text = f"{what} cannot be unpickled {where}: {type(exc).__name__}: {exc}"
    module = _missing_module(exc)
    if module is not None:
        top = module.split(".")[0]
        text += (
            f"; the job refers to module {module!r} by name and this Ray worker cannot import it, or imports "
            "another version of it (a module found "
            "through a sys.path entry added at run time, or present only on the driver's machine, does not travel "
            f"with the job): install it where Ray runs, give it to Ray with ray.init(runtime_env={{'py_modules': "
            f"[{top}]}}), or have it pickled by value with cloudpickle.register_pickle_by_value({top}) before "
            "building the job"
        )
    return JobFailed(text)


def _missing_module(exc: BaseException) -> str | None:
    """The module an unpickling error says cannot be imported (or lacks the attribute that
    was pickled by reference), else None."""
    if isinstance(exc, ImportError):  # (ModuleNotFoundError included)
        return exc.name
    if isinstance(exc, AttributeError):  # "Can't get attribute 'f' on <module 'm' from '...'>"
        text = str(exc)
        start = text.find("<module '")
        if text.startswith("Can't get attribute") and start >= 0:
            return text[start + len("<module '"):].split("'", 1)[0]
    return None
