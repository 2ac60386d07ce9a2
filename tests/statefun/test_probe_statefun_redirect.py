"""A remote function endpoint that answers with a redirect (an http -> https redirect of a
proxy, a moved service): raystream's HTTP client does not follow it (as StateFun's async
transport), and the error says so and names where the server redirects to, instead of
calling the redirect a refused request."""

from __future__ import annotations

import pytest

aiohttp = pytest.importorskip("aiohttp")
from aiohttp import web  # noqa: E402

from raystream.engine.errors import JobFailed  # noqa: E402
from raystream.statefun_api import StatefulFunctions, message_builder  # noqa: E402
from raystream.statefun_api.endpoints import remote_endpoint  # noqa: E402
from raystream.statefun_api.local import LocalDispatchers  # noqa: E402
from raystream.statefun_api.testing import FunctionServer  # noqa: E402


def redirecting_app(status: int, location: str | None) -> web.Application:
    async def redirect(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=status, headers={"Location": location} if location else {}, text="moved")

    app = web.Application()
    app.router.add_post("/{tail:.*}", redirect)
    return app


@pytest.mark.parametrize(
    ("status", "location", "named"),
    [
        (307, "https://functions.example.com/statefun", "redirects to 'https://functions.example.com/statefun'"),
        (301, "http://fn:s3cret@elsewhere:8000/statefun", "redirects to 'http://fn:***@elsewhere:8000/statefun'"),
        (302, None, "redirects without a Location"),
    ],
)
def test_a_redirect_fails_at_once_naming_where_it_points(status, location, named):
    with FunctionServer(redirecting_app(status, location)) as server:
        endpoint = remote_endpoint("remote/*", server.url + "/statefun", backoff_initial="1ms")
        with LocalDispatchers(StatefulFunctions(), endpoints=[endpoint]) as run:
            with pytest.raises(JobFailed) as info:
                run.send(message_builder("remote/greeter", "ann", str_value="hi")).run_until_idle()
            assert run.counters()["remote_retries"] == 0
    msg = str(info.value)
    assert f"HTTP {status} (not retried), body 'moved'" in msg
    assert named in msg and "redirects are not followed" in msg and "urlPathTemplate" in msg
    assert "refused" not in msg
    assert "s3cret" not in msg
