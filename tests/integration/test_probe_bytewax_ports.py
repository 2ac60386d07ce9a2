"""Ports of Bytewax's examples (``bytewax/bytewax`` ``examples/``: ``wordcount.py``,
``anomaly_detector.py``, ``basic.py``, ``join.py``, ``search_session.py``,
``event_time_processing.py``) to raystream's own API, as docs/bytewax.md tells a Bytewax user
to write them, each checked against a plain-Python reference of the same computation at
parallelism 1 and 2. They run in process (``run_in_process``): nothing here is Ray's.

Where a result depends on the order of a key's records (Bytewax's ``TestingSource`` is one
ordered input), the port's source runs at ``set_parallelism(1)`` as docs/bytewax.md says.
"""

from __future__ import annotations

import glob
import os
import random
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pytest

import raystream as rs
from raystream.checkpoint import ValueStateDescriptor
from raystream.engine.config import JobConfig
from raystream.engine.connectors import NOTHING_AVAILABLE
from raystream.engine.local_runtime import run_in_process
from raystream.operators.sinks import collected_records
from raystream.operators.sources import GeneratorSource, _GeneratorReader

pytestmark = pytest.mark.parametrize("parallelism", [1, 2], ids=lambda p: f"p{p}")


def run(env: rs.StreamEnvironment) -> dict[str, list]:
    """Every collect() sink's records, by the uid the test gave it."""
    result = run_in_process(env.get_job_graph(), JobConfig(name="bytewax-port"), timeout_s=120)
    return {uid: collected_records(batches) for uid, batches in result["results"].items()}


# -- examples/wordcount.py: map, flat_map, count_final ----------------------------------------

TEXT = ["To be, or not to be, that is the question:", "Whether 'tis nobler in the mind to suffer",
        "The slings and arrows of outrageous fortune,", "Or to take arms against a sea of troubles",
        "And by opposing end them. To die: to sleep; 1603"]


def tokenize(line: str) -> list[str]:
    return re.findall(r'[^\s!,.?":;0-9]+', line)


def test_wordcount(parallelism):
    env = rs.StreamEnvironment(parallelism=parallelism)
    (env.from_collection(TEXT).map(str.lower).flat_map(tokenize)
        .map(lambda w: (w, 1)).key_by(0).sum(1, emit="final")          # op.count_final("count", s, lambda w: w)
        .collect().uid("out"))
    expected = Counter(w for line in TEXT for w in tokenize(line.lower()))
    out = run(env)["out"]
    assert sorted(out) == sorted(expected.items())
    assert len(out) == len(expected)  # each word once (count_final emits at end of input)


# -- examples/anomaly_detector.py: merge, stateful_map -----------------------------------------

@dataclass
class DetectorState:
    last_10: list
    mu: float | None = None
    sigma: float | None = None

    def push(self, value: float) -> None:
        self.last_10.insert(0, value)
        del self.last_10[10:]
        n = len(self.last_10)
        self.mu = sum(self.last_10) / n
        self.sigma = (sum((v - self.mu) ** 2 for v in self.last_10) / n) ** 0.5

    def is_anomalous(self, value: float, threshold_z: float) -> bool:
        if self.mu and self.sigma:
            return abs(value - self.mu) / self.sigma > threshold_z
        return False


def bytewax_mapper(state, value):
    """The example's mapper, as Bytewax calls it: ``(state, value) -> (state, emit)``."""
    if state is None:
        state = DetectorState([])
    is_anomalous = state.is_anomalous(value, threshold_z=2.0)
    state.push(value)
    return state, (value, state.mu, state.sigma, is_anomalous)


def metrics(name: str, seed: int) -> list[tuple[str, float]]:
    rnd = random.Random(seed)
    return [(name, rnd.choice([rnd.uniform(0, 10), rnd.uniform(0, 10), rnd.uniform(50, 60)])) for _ in range(60)]


def test_anomaly_detector(parallelism):
    v, hz = metrics("v_metric", 1), metrics("hz_metric", 2)
    env = rs.StreamEnvironment(parallelism=parallelism)
    merged = env.from_collection(v).set_parallelism(1).union(env.from_collection(hz).set_parallelism(1))  # op.merge

    def detector(record, state):  # map_with_state: (record, state) -> (output, new_state)
        metric, value = record
        state, emit = bytewax_mapper(state, value)
        return (metric, emit), state

    merged.key_by(0).map_with_state(detector).collect().uid("out")
    out = run(env)["out"]
    expected = []
    for stream in (v, hz):
        state = None
        for metric, value in stream:
            state, emit = bytewax_mapper(state, value)
            expected.append((metric, emit))
    for metric in ("v_metric", "hz_metric"):  # each metric's outputs in its input's order
        assert [e for m, e in out if m == metric] == [e for m, e in expected if m == metric]
    assert any(e[3] for _, e in out)  # the data has anomalies to find


# -- examples/basic.py: branch, merge ---------------------------------------------------------

EVEN = rs.OutputTag("evens")


class Branch(rs.ProcessFunction):
    """op.branch("e_o", inp, lambda x: x % 2 == 0): the trues to a side output, the falses on."""

    def process_element(self, value, ctx):
        if value % 2 == 0:
            ctx.output(EVEN, value)
        else:
            yield value


def test_basic_branch_and_merge(parallelism):
    env = rs.StreamEnvironment(parallelism=parallelism)
    branch = env.from_collection(range(10)).process(Branch())
    evens = branch.get_side_output(EVEN).map(lambda x: x // 2)
    odds = branch.map(lambda x: x * 2)
    evens.union(odds).map(lambda x: x - 1).map(lambda x: f"<dance>{x}</dance>").collect().uid("out")
    expected = [f"<dance>{(x // 2 if x % 2 == 0 else x * 2) - 1}</dance>" for x in range(10)]
    assert sorted(run(env)["out"]) == sorted(expected)


# -- examples/join.py: a join of four keyed sides, emit_mode="complete" -----------------------

class JoinComplete(rs.KeyedProcessFunction):
    """Bytewax's ``op.join(step, *sides)`` (insert_mode="last", emit_mode="complete"): each
    side's last value per key; once every side has one, emit them and forget the key."""

    def __init__(self, sides: int) -> None:
        self.sides = sides

    def open(self, ctx):
        self.seen = ctx.get_state(ValueStateDescriptor("seen"))

    def process_element(self, value, ctx):
        side, v = value[1], value[2]
        seen = dict(self.seen.value() or {})
        seen[side] = v
        if len(seen) == self.sides:
            self.seen.clear()
            yield ctx.get_current_key(), tuple(seen[i] for i in range(self.sides))
        else:
            self.seen.update(seen)


def join_reference(sides: list[list[tuple[str, object]]]) -> list[tuple[str, tuple]]:
    """emit_mode="complete" over the sides' records in the given (merged) order."""
    seen: dict[str, dict[int, object]] = defaultdict(dict)
    out = []
    for key, side, v in sorted(((k, i, v) for i, recs in enumerate(sides) for k, v in recs), key=lambda r: r[0]):
        seen[key][side] = v
        if len(seen[key]) == len(sides):
            values = seen.pop(key)
            out.append((key, tuple(values[i] for i in range(len(sides)))))
    return out


def test_join_of_four_sides(parallelism):
    users = [{"user_id": u, "name": f"n{u}"} for u in range(8)]
    emails = [{"user_id": u, "email": f"u{u}@x"} for u in range(0, 8, 2)]       # users 0, 2, 4, 6
    looks = [{"user_id": u, "color": f"c{u}", "sound": f"s{u}"} for u in range(0, 8, 3)]  # 0, 3, 6
    env = rs.StreamEnvironment(parallelism=parallelism)

    def side(records, i, fn):  # op.key_on + op.map_value, with the side's index
        return env.from_collection(records).map(lambda r: (str(r["user_id"]), i, fn(r)))

    name = side(users, 0, lambda r: r["name"])
    email = side(emails, 1, lambda r: r["email"])
    looks_stream = env.from_collection(looks)
    color = looks_stream.map(lambda r: (str(r["user_id"]), 2, r["color"]))
    sound = looks_stream.map(lambda r: (str(r["user_id"]), 3, r["sound"]))
    name.union(email, color, sound).key_by(0).process(JoinComplete(4)).collect().uid("out")
    # one record a key per side: the result does not depend on the order they meet in
    expected = join_reference([[(str(r["user_id"]), r["name"]) for r in users],
                               [(str(r["user_id"]), r["email"]) for r in emails],
                               [(str(r["user_id"]), r["color"]) for r in looks],
                               [(str(r["user_id"]), r["sound"]) for r in looks]])
    assert expected == [("0", ("n0", "u0@x", "c0", "s0")), ("6", ("n6", "u6@x", "c6", "s6"))]
    assert sorted(run(env)["out"]) == expected


# -- examples/search_session.py: session windows, reduce_window, an event clock ----------------

@dataclass
class Event:
    user: int
    dt: datetime
    kind: str
    what: object = None


START = datetime(2023, 1, 1, tzinfo=timezone.utc)


def after(seconds: float) -> datetime:
    return START + timedelta(seconds=seconds)


EVENTS = [Event(1, START, "AppOpen"), Event(1, after(1), "Search", "dogs"),
          Event(1, after(2), "Results", ["fido", "rover", "buddy"]), Event(1, after(3), "ClickResult", "rover"),
          Event(1, after(4), "Search", "cats"), Event(1, after(5), "Results", ["fluffy", "burrito", "kathy"]),
          Event(1, after(6), "ClickResult", "fluffy"), Event(2, after(7), "AppOpen"),
          Event(1, after(8), "ClickResult", "kathy"), Event(2, after(9), "Search", "fruit"),
          Event(1, after(10), "AppClose"), Event(2, after(11), "AppClose"),
          # user 2 again 5 s after the last event (the gap: the same session, as in Bytewax), then
          # 6 s after the last one (more than the gap: a new session)
          Event(2, after(16), "Search", "pears"), Event(2, after(17), "ClickResult", "pear"),
          Event(2, after(23), "Search", "plums"), Event(2, after(24), "AppClose")]


def split_into_searches(user_session: list[Event]):
    search_session: list[Event] = []
    for event in user_session:
        if event.kind == "Search":
            yield search_session
            search_session = []
        search_session.append(event)
    yield search_session


def ctr(search_session: list[Event]) -> float:
    return 1.0 if any(e.kind == "ClickResult" for e in search_session) else 0.0


def sessions_reference(events: list[Event], gap: timedelta) -> list[list[Event]]:
    """Bytewax's SessionWindower: a key's events at most ``gap`` apart share a session."""
    out = []
    for user in sorted({e.user for e in events}):
        mine = sorted((e for e in events if e.user == user), key=lambda e: e.dt)
        session = [mine[0]]
        for e in mine[1:]:
            if e.dt - session[-1].dt <= gap:
                session.append(e)
            else:
                out.append(session)
                session = [e]
        out.append(session)
    return out


class InTimeOrder(rs.ProcessWindowFunction):
    """The session's events in time order: Bytewax's ``reduce_window(..., operator.add)`` over
    ``[event]`` lists, whose windows take values in timestamp order."""

    def process(self, key, context, elements):
        yield sorted(elements, key=lambda e: e.dt)


def test_search_session(parallelism):
    env = rs.StreamEnvironment(parallelism=parallelism)
    clock = (rs.WatermarkStrategy.for_bounded_out_of_orderness(10_000)  # EventClock(lambda e: e.dt, timedelta(seconds=10))
             .with_timestamp_assigner(lambda e: e.dt))
    sessions = (env.from_collection(EVENTS).set_parallelism(1).assign_timestamps_and_watermarks(clock)
                .key_by(lambda e: e.user)
                .window(rs.EventTimeSessionWindows.with_gap(5_000))          # SessionWindower(gap=timedelta(seconds=5))
                .process(InTimeOrder()))
    (sessions.flat_map(lambda s: list(split_into_searches(s)))
        .filter(lambda s: any(e.kind == "Search" for e in s)).map(ctr).collect().uid("out"))
    expected_sessions = sessions_reference(EVENTS, timedelta(seconds=5))
    assert [len(s) for s in expected_sessions] == [9, 5, 2]  # user 1; user 2's two sessions
    expected = [ctr(s) for session in expected_sessions for s in split_into_searches(session)
                if any(e.kind == "Search" for e in s)]
    assert sorted(expected) == [0.0, 0.0, 1.0, 1.0, 1.0]
    assert sorted(run(env)["out"]) == sorted(expected)


# -- examples/event_time_processing.py: tumbling windows, collect_window, late items ----------

ALIGN = datetime(2023, 1, 1, tzinfo=timezone.utc)
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def readings(seed: int) -> list[dict]:
    """Sensor readings a little out of order (at most 3 s), plus two very late ones."""
    rnd = random.Random(seed)
    rows = []
    for i in range(80):
        t = ALIGN + timedelta(seconds=i * 0.5 + rnd.uniform(-3, 0))
        rows.append({"type": rnd.choice(["temp", "hum"]), "value": round(rnd.uniform(0, 40), 2), "time": t})
    rows.insert(60, {"type": "temp", "value": 99.0, "time": ALIGN + timedelta(seconds=1)})
    rows.insert(70, {"type": "hum", "value": 98.0, "time": ALIGN + timedelta(seconds=2)})
    return rows


LATE = rs.OutputTag("late")


def test_event_time_tumbling_windows_and_late_items(parallelism):
    rows = readings(7)
    wait_ms, length_ms = 10_000, 5_000
    env = rs.StreamEnvironment(parallelism=parallelism)
    clock = (rs.WatermarkStrategy.for_bounded_out_of_orderness(wait_ms)   # EventClock(get_event_time, 10 s)
             .with_timestamp_assigner(lambda r: r["time"]))
    # batch_size=1: a watermark after every reading, as Bytewax's clock moves at every item
    windows = (env.from_collection(rows, batch_size=1).set_parallelism(1).assign_timestamps_and_watermarks(clock)
               .key_by("type").window(rs.TumblingEventTimeWindows.of(length_ms))   # TumblingWindower(5 s, ALIGN)
               .side_output_late_data(LATE)
               .apply(lambda key, window, rs_: [(key, window.start, sorted(r["value"] for r in rs_))]))
    windows.collect().uid("out")
    windows.get_side_output(LATE).collect().uid("late")
    out = run(env)

    def ms(t: datetime) -> int:
        return (t - EPOCH) // timedelta(milliseconds=1)

    # reference: the watermark is the largest time seen minus the wait; an item is late when its
    # window has closed (its end <= the watermark), else it goes into its window
    windows_ref, late_ref, watermark = defaultdict(list), [], None
    for r in rows:
        start = ms(r["time"]) - ms(r["time"]) % length_ms
        if watermark is not None and start + length_ms <= watermark:
            late_ref.append(r)
        else:
            windows_ref[(r["type"], start)].append(r["value"])
        watermark = max(watermark or ms(r["time"]) - wait_ms, ms(r["time"]) - wait_ms)
    assert [r["value"] for r in late_ref] == [99.0, 98.0]
    assert sorted(out["out"]) == sorted((k, s, sorted(v)) for (k, s), v in windows_ref.items())
    assert sorted(out["late"], key=lambda r: r["value"]) == sorted(late_ref, key=lambda r: r["value"])


# -- recovery: Bytewax's `-r DIR -s INTERVAL` and TestingSource.ABORT() -------------------------

class _AfterACheckpointReader(_GeneratorReader):
    """Emits no index at or past ``pause_at`` until a checkpoint completed after it paused
    there (a new ``chk-*/_metadata`` under the checkpoint directory): that checkpoint holds the
    state of every record before ``pause_at`` and the source's position at it. It polls (the
    task serves checkpoints meanwhile), it never sleeps."""

    def poll_next(self):
        src = self.source
        if self.splits and self.splits[0].position >= src.pause_at:
            done = set(glob.glob(os.path.join(src.checkpoint_dir, "**", "chk-*", "_metadata"), recursive=True))
            seen = self.__dict__.setdefault("seen_at_pause", done)
            if not done - seen:
                return NOTHING_AVAILABLE
        return super().poll_next()


class AfterACheckpointSource(GeneratorSource):
    def __init__(self, fn, count: int, pause_at: int, checkpoint_dir: str) -> None:
        super().__init__(fn, count=count, batch_size=10)
        self.pause_at, self.checkpoint_dir = pause_at, checkpoint_dir

    def create_reader(self, ctx):
        return _AfterACheckpointReader(self)


class CrashOnce(rs.MapFunction):
    """Fails the first attempt at record 300, as ``TestingSource.ABORT()`` stops a Bytewax run;
    a later attempt writes the first index it sees into ``first_after``."""

    def __init__(self, first_after: str) -> None:
        self.first_after = first_after

    def open(self, runtime_context):
        self.attempt = runtime_context.get_attempt_number()

    def map(self, value):
        if self.attempt == 0 and value[1] == 300:
            raise RuntimeError("simulated crash")
        if self.attempt > 0 and not os.path.exists(self.first_after):
            with open(self.first_after, "w") as f:
                f.write(str(value[1]))
        return value


def test_recovery_after_a_crash_gives_the_output_of_a_run_without_one(parallelism, tmp_path):
    def running_count(record, n):
        n = (n or 0) + 1
        return (record[0], n), n

    chk, first_after = tmp_path / "chk", tmp_path / "first_after"
    env = rs.StreamEnvironment(parallelism=parallelism)
    env.enable_checkpointing(50, checkpoint_dir=str(chk))   # bytewax.run -r DIR -s 0.05
    source = AfterACheckpointSource(lambda i: (f"k{i % 3}", i), count=600, pause_at=300, checkpoint_dir=str(chk))
    (env.from_source(source).set_parallelism(1).map(CrashOnce(str(first_after))).set_parallelism(1)  # (one ordered map)
        .key_by(0).map_with_state(running_count).collect().uid("out"))
    config = JobConfig(name="bytewax-recovery", checkpoint=env.checkpoint_config, restart=env.restart_strategy)
    result = run_in_process(env.get_job_graph(), config, timeout_s=120)
    out = collected_records(result["results"]["out"])
    # the second attempt resumed at the checkpoint taken at record 300: the counts of records
    # 0..299 came from the restored state, and every key's running count is there once each
    assert first_after.read_text() == "300"
    assert sorted(out) == sorted((k, n) for k in ("k0", "k1", "k2") for n in range(1, 201))


# -- stateful_map's discard, stateful_flat_map, fold_final ------------------------------------

def test_stateful_map_state_none_discards_the_key(parallelism):
    """Bytewax's mapper returns ``(None, emit)`` to discard a key's state; in raystream's
    ``map_with_state`` ``new_state`` None clears it: the key starts again from None."""
    data = [("a", 1), ("b", 5), ("a", 2), ("a", 0), ("a", 3), ("b", 0), ("b", 7)]  # 0: end of a session

    def session_sum(record, state):
        key, v = record
        total = (state or 0) + v
        return (key, total), (None if v == 0 else total)

    env = rs.StreamEnvironment(parallelism=parallelism)
    env.from_collection(data).set_parallelism(1).key_by(0).map_with_state(session_sum).collect().uid("out")
    out = run(env)["out"]
    assert [r for r in out if r[0] == "a"] == [("a", 1), ("a", 3), ("a", 3), ("a", 3)]
    assert [r for r in out if r[0] == "b"] == [("b", 5), ("b", 5), ("b", 7)]


def test_stateful_flat_map_and_fold_final(parallelism):
    data = [("a", 1), ("b", 5), ("a", 2), ("a", 4), ("b", 1)]

    def pairs_with_previous(record, prev):  # stateful_flat_map
        return ([] if prev is None else [(record[0], prev, record[1])]), record[1]

    env = rs.StreamEnvironment(parallelism=parallelism)
    keyed = env.from_collection(data).set_parallelism(1).key_by(0)
    keyed.flat_map_with_state(pairs_with_previous).collect().uid("pairs")
    # fold_final("f", s, list, lambda acc, x: acc + [x]): each key's fold once, at end of input
    keyed.map(lambda r: (r[0], [r[1]])).key_by(0).reduce(lambda a, b: (a[0], a[1] + b[1]), emit="final") \
        .collect().uid("fold")
    out = run(env)
    assert sorted(out["pairs"]) == [("a", 1, 2), ("a", 2, 4), ("b", 5, 1)]
    assert sorted(out["fold"]) == [("a", [1, 2, 4]), ("b", [5, 1])]


def test_a_mapper_that_does_not_return_a_pair_fails_naming_it(parallelism):
    env = rs.StreamEnvironment(parallelism=parallelism)
    env.from_collection([("a", 1)]).key_by(0).map_with_state(lambda r, s: r[1]).collect()
    with pytest.raises(rs.JobFailed, match=r"map_with_state function .*<lambda>. returned 1 \(int\), not a 2-tuple "
                                           r"\(output, new_state\): new_state None clears") as err:
        run(env)
    assert err.value.record == repr(("a", 1))  # (the record as the job reported it)

