"""The management commands bound their calls to a job master: ``savepoint``/``stop --timeout``
and the fixed limits of ``status``/``cancel`` end the command with a clear error instead of
waiting forever for a master that does not answer (no Ray: a fake attached client)."""

from __future__ import annotations

import threading

import pytest

from raystream.engine.errors import RaystreamError
from raystream.jobs import cli
from raystream.jobs.cli import main


class StuckClient:
    """An attached JobClient whose master takes the call but does not answer (for 10 s, or until released)."""

    name = "stuck-job"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.called: list[str] = []

    def _hang(self, method: str) -> str:
        self.called.append(method)
        # (bounded, so that a command that ignores --timeout fails this test instead of hanging it)
        self.release.wait(10.0)
        return "/never"

    def savepoint(self, path: str) -> str:
        return self._hang("savepoint")

    def stop_with_savepoint(self, path: str) -> str:
        return self._hang("stop_with_savepoint")

    def info(self) -> dict:
        return {"job_id": "stuck-1", "name": self.name}


@pytest.fixture
def stuck(monkeypatch):
    client = StuckClient()
    monkeypatch.setattr(cli, "_connect", lambda address: None)
    monkeypatch.setattr(cli, "_master", lambda job: client)
    yield client
    client.release.set()


@pytest.mark.parametrize("argv", [
    ["savepoint", "stuck-1", "/tmp/sp-x", "--timeout", "0.2"],
    ["stop", "stuck-1", "--savepoint", "/tmp/sp-x", "--timeout", "0.2"],
])
def test_savepoint_commands_honour_timeout(stuck, argv, capsys):
    code = main(argv)
    err = capsys.readouterr().err
    assert stuck.called, "the command called the job's client"
    assert code == 1, err
    assert "did not complete within 0.2 s (--timeout)" in err and "'stuck-job'" in err
    assert "larger --timeout" in err


def test_call_passes_results_and_errors_through():
    class Client:
        name = "j"

        def info(self):
            return {"status": "RUNNING"}

        def cancel(self):
            raise RaystreamError("master gone")

        def metrics(self):
            raise ValueError("not a raystream error")

    assert cli._call(Client(), "info") == {"status": "RUNNING"}
    with pytest.raises(cli.CliError, match="cancel failed: master gone"):
        cli._call(Client(), "cancel")
    with pytest.raises(ValueError, match="not a raystream error"):
        cli._call(Client(), "metrics")
