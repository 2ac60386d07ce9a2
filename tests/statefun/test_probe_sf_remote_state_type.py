"""A remote function whose ValueSpec changed type since the snapshot the job restored.

The dispatcher sent the stored value with its old typename; the function (the official
SDK, or raystream's handler) refused it with HTTP 500, which the runtime retried until the
call timeout (1 or 2 minutes by default, then again after every restart) before failing
with the function's own error text. As StateFun refuses such a state, the dispatcher now
fails the call at once, before sending it, naming the address, the state and both types.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from raystream.engine.errors import JobFailed
from raystream.statefun_api import (
    IntType,
    LongType,
    RequestReplyHandler,
    StatefulFunctionError,
    StatefulFunctions,
    StringType,
    ValueSpec,
    egress_message_builder,
    message_builder,
)
from raystream.statefun_api.endpoints import remote_endpoint
from raystream.statefun_api.local import LocalDispatchers
from raystream.statefun_api.testing import FunctionServer

pytest.importorskip("aiohttp")

OUT = "t/out"


def counter(value_type) -> StatefulFunctions:
    fns = StatefulFunctions()

    @fns.bind("r/counter", specs=[ValueSpec("n", value_type)])
    def count(context, message):
        context.storage.n = (context.storage.n or 0) + 1
        context.send_egress(egress_message_builder(OUT, f"{context.address.id}:{context.storage.n}", StringType))

    return fns


def endpoint(server: FunctionServer):
    # a long call timeout: the error must come at once, not after retries used it up
    return remote_endpoint("r/*", server.url + "/{function.name}", call_timeout=timedelta(minutes=5), backoff_initial=0.01)


def test_a_stored_value_of_the_old_type_fails_at_once_naming_address_state_and_types() -> None:
    with FunctionServer(RequestReplyHandler(counter(IntType))) as v1, FunctionServer(RequestReplyHandler(counter(LongType))) as v2:
        with LocalDispatchers(StatefulFunctions(), parallelism=2, egresses=[OUT], endpoints=[endpoint(v1)]) as run:
            run.send(message_builder("r/counter", "ann", str_value="x")).run_until_idle()
            assert run.egress(OUT) == ["ann:1"]
            snapshot = run.snapshot()
        with LocalDispatchers.restore(StatefulFunctions(), snapshot, parallelism=1, egresses=[OUT], endpoints=[endpoint(v2)]) as resumed:
            resumed.send(message_builder("r/counter", "bob", str_value="x")).run_until_idle()  # no stored value: fine
            assert resumed.egress(OUT) == ["bob:1"]
            requests = v2.requests
            for _ in range(2):  # (in process the failed call stays first and fails again)
                with pytest.raises((JobFailed, StatefulFunctionError)) as err:  # (as the call was sent or replied)
                    resumed.send(message_builder("r/counter", "ann", str_value="x")).run_until_idle(remote_timeout_s=60)
                text = str(err.value)
                assert "cannot load the state of r/counter/ann for remote function 'r/counter': state 'n'" in text
                assert "declared as 'io.statefun.types/long'" in text and "stored value has type 'io.statefun.types/int'" in text
            assert v2.requests == requests  # refused before sending: no request, no retry
            assert resumed.state("r/counter", "ann", "n") == 1 and resumed.egress(OUT) == ["bob:1"]
