"""A late reply of a previous attempt never reaches restored state: the dispatchers of the
failed attempt stay open (as a task of the previous attempt may linger in the same worker
process while the restored one runs) and get their in-flight request's reply only after the
restored dispatchers sent the same messages again and applied their own reply; the restored
state and egress hold each message once, and go on from there."""

from __future__ import annotations

import pytest

pytest.importorskip("statefun")
pytest.importorskip("aiohttp")

from raystream.statefun_api.local import LocalDispatchers  # noqa: E402
from tests.statefun.test_remote_functions import (  # noqa: E402
    EGRESS,
    Recorder,
    embedded_functions,
    endpoint,
    greet,
)
from tests.waiting import wait_for  # noqa: E402


@pytest.fixture
def recorder(serve):
    rec = Recorder()
    rec.server = serve(rec)
    yield rec
    rec.hold.set()


def test_the_previous_attempts_late_reply_changes_nothing_of_the_restored_dispatchers(recorder):
    with LocalDispatchers(embedded_functions(), egresses=[EGRESS], endpoints=[endpoint(recorder.server)]) as old:
        old.send(greet("ann")).run_until_idle()
        recorder.hold.clear()
        recorder.arrived.clear()
        old.send(greet("ann", "in flight"))
        assert recorder.arrived.wait(10)
        snapshot = old.snapshot()  # the request is in flight: its effects are not applied
        held = len(recorder.calls)
        with LocalDispatchers.restore(embedded_functions(), snapshot, egresses=[EGRESS],
                                      endpoints=[endpoint(recorder.server)]) as restored:
            recorder.hold.set()  # both the old attempt's request and the restored one are answered
            restored.run_until_idle()
            assert restored.egress(EGRESS) == ["hi ann #2"]
            # the old attempt's reply arrives (the old dispatchers are still open) and is applied
            # there only: it was answered by now, or arrives while the old dispatchers wait for it
            wait_for(lambda: len(recorder.calls) >= held + 2, "both attempts' requests answered")
            old.run_until_idle()
            assert old.egress(EGRESS) == ["hi ann #1", "hi ann #2"]
            restored.send(greet("ann", "after")).run_until_idle()
            assert restored.egress(EGRESS) == ["hi ann #2", "hi ann #3"]
