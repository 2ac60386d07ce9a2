"""A notebook's ``StreamEnvironment`` serves many cells: it holds what its live streams and
its last job need, not every pipeline it ran. Before, the environment kept every node it ever
built (a ``from_collection`` source with its records, a map with what its function captured,
every sink): memory grew with each cell run, e.g. a cell re-run 50 times on a 10 MB list kept
50 copies, and each job's planning went over all of them."""

from __future__ import annotations

import gc
import json
import weakref
from pathlib import Path

import raystream as rs
from raystream.jobs.greeter import functions
from raystream.statefun_api import message_builder
from raystream.statefun_api.job import StatefulFunctionsJob


class Lookup(dict):
    """A table a job's function captures (a dict subclass: weakly referenceable)."""


def _cell(env: rs.StreamEnvironment, scale: int) -> tuple[list[int], weakref.ref]:
    table = Lookup({x: x * scale for x in range(20)})
    records = env.from_collection(list(range(20))).map(lambda x: table[x]).execute_and_collect()
    return sorted(records), weakref.ref(table)


def test_a_cell_run_again_does_not_keep_the_earlier_runs_data():
    env = rs.StreamEnvironment(parallelism=2)
    refs = []
    for scale in (1, 2, 3):
        records, ref = _cell(env, scale)
        assert records == [x * scale for x in range(20)]
        refs.append(ref)
    gc.collect()
    # the last job's nodes stay (env.execute() with nothing added runs it again), not the others
    assert [r() is None for r in refs] == [True, True, False]
    result = env.execute("again")
    (batches,) = result.sink_results.values()
    assert sorted(r["value"] if isinstance(r, dict) else r for b in batches for r in b.to_pylist()) == \
        [x * 3 for x in range(20)]


def test_a_stream_the_user_keeps_still_feeds_a_later_job():
    env = rs.StreamEnvironment(parallelism=2)
    numbers = env.from_collection(range(10)).map(lambda x: x * 3)
    assert sorted(numbers.execute_and_collect("all")) == [x * 3 for x in range(10)]
    _cell(env, 1)  # another job in between
    gc.collect()
    assert sorted(numbers.filter(lambda x: x % 2 == 0).execute_and_collect("evens")) == [0, 6, 12, 18, 24]


def _greets(path: Path) -> list[str]:
    return sorted(json.loads(line) for f in path.glob("*.jsonl") for line in f.read_text().splitlines())


def test_a_dispatcher_given_a_new_ingress_after_other_jobs_still_feeds_its_egress_sink(tmp_path):
    env = rs.StreamEnvironment(parallelism=1)
    sf = StatefulFunctionsJob(env, functions)
    route = lambda n: message_builder("example/person", n, str_value=n)  # noqa: E731
    sf.with_ingress(env.from_collection(["ann"]), route)
    sf.egress_stream("example/greets").write_jsonl(str(tmp_path / "greets"))  # held by env only
    env.execute("first")
    assert _greets(tmp_path / "greets") == ["Hello ann! Nice to meet you."]
    _cell(env, 1)  # an unrelated job in between
    gc.collect()
    sf.with_ingress(env.from_collection(["bob"]), route)
    env.execute("second")  # the dispatcher, its egress sink and both ingresses run again
    assert _greets(tmp_path / "greets") == ["Hello ann! Nice to meet you.", "Hello ann! Nice to meet you.",
                                             "Hello bob! Nice to meet you."]
