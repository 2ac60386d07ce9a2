"""A vertex's operators are pickled once per job, by the driver, and unpickled only by the
tasks: the job master forwards the driver's bytes to every subtask and attempt without
unpickling or pickling them again, so a function that captures a large table costs one
pickling at any parallelism, also when the job restarts."""

from __future__ import annotations

import pytest

import raystream as rs
from raystream.engine.config import JobConfig
from raystream.engine.graph import ship
from raystream.engine.local_runtime import run_in_process
from raystream.operators.sinks import collected_records

_pickled = 0
_unpickled = 0
_failed = False


class _Table:
    """A lookup table that counts how often it is pickled and unpickled."""

    def __init__(self, rows: dict[int, str], copy: bool = False) -> None:
        global _unpickled
        self.rows = rows
        _unpickled += copy

    def __reduce__(self) -> tuple:
        global _pickled
        _pickled += 1
        return (_Table, (self.rows, True))


class _Enrich:
    """``x -> (x, table[x % 3])``; with ``fail_once``, the first attempt fails at 7."""

    def __init__(self, table: _Table, fail_once: bool) -> None:
        self.table = table
        self.fail_once = fail_once

    def __call__(self, x: int) -> tuple[int, str]:
        global _failed
        if self.fail_once and x == 7 and not _failed:
            _failed = True
            raise RuntimeError("the first attempt fails")
        return (x, self.table.rows[x % 3])


def _job(table: _Table, fail_once: bool = False) -> rs.StreamEnvironment:
    env = rs.StreamEnvironment(parallelism=3)
    env.from_collection(range(30)).map(_Enrich(table, fail_once)).collect()
    return env


def _collected(result: dict) -> list:
    return sorted(tuple(r) for batches in result["results"].values() for r in collected_records(batches))


def _expected() -> list:
    return [(x, "abc"[x % 3]) for x in range(30)]


def test_a_function_s_captured_table_is_pickled_once() -> None:
    global _pickled, _unpickled
    _pickled = _unpickled = 0
    result = run_in_process(_job(_Table({0: "a", 1: "b", 2: "c"})).get_job_graph(), JobConfig(name="payload"),
                            timeout_s=120)
    assert _collected(result) == _expected()
    assert _pickled == 1  # by the driver, for the master and the 3 subtasks (was 2: the master again)
    assert _unpickled == 3  # by the 3 tasks, never by the master (was 4)


def test_a_restarted_attempt_reuses_the_pickled_operators() -> None:
    global _pickled, _failed
    _pickled, _failed = 0, False
    config = JobConfig(name="payload-restart", restart=rs.RestartStrategy.fixed_delay(2, 0))
    result = run_in_process(_job(_Table({0: "a", 1: "b", 2: "c"}), fail_once=True).get_job_graph(), config,
                            timeout_s=120)
    assert result["metrics"]["restarts"] == 1
    assert _collected(result) == _expected()
    assert _pickled == 1


def _refuse() -> None:
    raise ModuleNotFoundError("No module named 'lookup_tables'")


class _Unloadable:
    """Pickles fine, fails to unpickle (as a function of a module the workers cannot import)."""

    def __reduce__(self) -> tuple:
        return (_refuse, ())


def test_operators_that_cannot_be_unpickled_fail_the_deployment_naming_the_vertex() -> None:
    env = rs.StreamEnvironment(parallelism=2)
    table = _Unloadable()
    env.from_collection(range(4)).map(lambda x: (x, table)).name("enrich").collect()
    with pytest.raises(rs.JobFailed) as err:
        run_in_process(env.get_job_graph(), JobConfig(name="unloadable"), timeout_s=120)
    text = str(err.value)
    assert "the operators of 'from_collection -> enrich -> collect' cannot be unpickled" in text, text
    assert "ModuleNotFoundError: No module named 'lookup_tables'" in text, text


def test_the_user_s_graph_keeps_its_factories_after_shipping() -> None:
    """``ship`` packs copies: the driver's own graph (kept by the JobClient, used again by a
    resubmission) still holds every operator factory."""
    graph = _job(_Table({0: "a", 1: "b", 2: "c"})).get_job_graph()
    before = [[op.get("factory") for op in v.chain] for v in graph.vertices]
    ship(graph, JobConfig(name="keep"))
    assert [[op.get("factory") for op in v.chain] for v in graph.vertices] == before
    assert all(v.operators is None for v in graph.vertices)


def test_a_finished_job_s_master_keeps_no_operators() -> None:
    """A pooled master outlives its job: it drops the operators' bytes when the job ends."""
    masters = []
    result = run_in_process(_job(_Table({0: "a", 1: "b", 2: "c"})).get_job_graph(), JobConfig(name="drop"),
                            timeout_s=120, on_start=lambda master, _runtime: masters.append(master))
    assert _collected(result) == _expected()
    assert masters and all(v.operators is None for v in masters[0].graph.vertices)
