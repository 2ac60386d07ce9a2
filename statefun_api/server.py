"""An optional HTTP endpoint for a :class:`~statefun_api.handler.RequestReplyHandler`.

StateFun runtimes (and raystream's engine) POST an encoded ``ToFunction`` to the
endpoint and expect the encoded ``FromFunction`` back with status 200. aiohttp is imported
lazily: ``pip install aiohttp`` (or ``raystream[remote]``) to use this module.

Statuses: 200 with the reply; 400 for a malformed request (not a ``ToFunction``, no
invocation batch, an incomplete target) and 404 for a function type that is not served,
which a runtime should not retry; 413 for a request above ``max_request_bytes``; 500 with
the error text when a function fails, which the runtime retries.

Example:
    ``serve(functions, port=8000)`` blocks and serves ``http://127.0.0.1:8000/statefun``.
    In tests or an existing loop, ``app = make_app(functions)`` and run it yourself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from raystream.statefun_api.errors import BadRequest, FunctionNotFound
from raystream.statefun_api.functions import StatefulFunctions
from raystream.statefun_api.handler import RequestReplyHandler

if TYPE_CHECKING:
    from aiohttp import web

__all__ = ["make_app", "serve", "aiohttp_web", "DEFAULT_MAX_REQUEST_BYTES"]

_CONTENT_TYPE = "application/octet-stream"
#: the largest request accepted (aiohttp's own default, 1 MiB, is too small for big batches)
DEFAULT_MAX_REQUEST_BYTES = 64 * 1024 * 1024


def aiohttp_web(what: str = "statefun_api.server") -> Any:
    """``aiohttp.web``, or an ImportError saying that ``what`` needs aiohttp and how to install it."""
    try:
        from aiohttp import web
    except ImportError as exc:
        raise ImportError(
            f"{what} needs aiohttp: `pip install aiohttp` (or `pip install 'raystream[remote]'`)"
        ) from exc
    return web


def make_app(
    functions: StatefulFunctions, path: str = "/statefun", max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
) -> web.Application:
    """Build an aiohttp application answering POST ``path`` with the functions.

    A malformed request answers 400 and an unknown function type 404 (retrying cannot
    help); a failing function answers 500 with the error text, so the runtime retries the
    batch. Requests above ``max_request_bytes`` answer 413.

    Example:
        >>> app = make_app(StatefulFunctions(), path="/statefun")  # doctest: +SKIP
    """
    web = aiohttp_web()
    handler = RequestReplyHandler(functions)

    async def endpoint(request: Any) -> Any:
        body = await request.read()
        try:
            reply = await handler.handle_async(body)
        except BadRequest as exc:
            return web.Response(status=400, text=f"malformed request-reply request: {exc}")
        except FunctionNotFound as exc:
            return web.Response(status=404, text=str(exc))
        except Exception as exc:  # report any other failure to the runtime, which retries
            return web.Response(status=500, text=f"{type(exc).__name__}: {exc}")
        return web.Response(body=reply, content_type=_CONTENT_TYPE)

    app = web.Application(client_max_size=max_request_bytes)
    app.router.add_post(path, endpoint)
    return app


def serve(
    functions: StatefulFunctions,
    host: str = "127.0.0.1",
    port: int = 8000,
    path: str = "/statefun",
) -> None:
    """Serve ``functions`` over HTTP at ``http://host:port/path`` until interrupted.

    Example:
        ``serve(functions, port=8000)``
    """
    web = aiohttp_web()
    web.run_app(make_app(functions, path), host=host, port=port, print=None)
