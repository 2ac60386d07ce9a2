"""Keys whose Python ``hash()`` is salted per process (frozensets of strings) route to one
subtask on a real local Ray, keys that Arrow would give back changed (tz-aware datetimes,
IntEnums) keep their key group across an exchange, and a key with no deterministic value
fails the job clearly."""

import collections
import datetime as dt
import decimal
import enum
import fractions
import random

import pytest

import raystream as rs
from raystream.checkpoint import ValueStateDescriptor


def _edges(n_nodes: int = 40, n_edges: int = 300, seed: int = 7) -> list[tuple[str, str]]:
    """Undirected edges seen from both ends, each several times."""
    rnd = random.Random(seed)
    nodes = [f"user-{i}" for i in range(n_nodes)]
    out = []
    for _ in range(n_edges):
        a, b = rnd.sample(nodes, 2)
        out += [(a, b), (b, a)] * rnd.randint(1, 3)
    rnd.shuffle(out)
    return out


def test_undirected_edge_count_keyed_by_frozenset_matches_python():
    edges = _edges()
    env = rs.StreamEnvironment(parallelism=2)
    updates = (
        env.from_collection(edges, batch_size=64)
        .map(lambda e: (frozenset(e), 1))
        .key_by(0)
        .reduce(lambda a, b: (a[0], a[1] + b[1]))
        .execute_and_collect("undirected edges")
    )
    got: dict[frozenset, int] = {}
    for edge, n in updates:
        got[edge] = max(n, got.get(edge, 0))  # a key split over subtasks would stop short
    assert got == collections.Counter(frozenset(e) for e in edges)
    assert len(updates) == len(edges)


def test_key_without_deterministic_value_fails_the_job_naming_the_operator():
    class Session:  # default repr: <...Session object at 0x...>
        pass

    env = rs.StreamEnvironment(parallelism=2)
    (
        env.from_collection(list(range(20)))
        .key_by(lambda x: Session())
        .reduce(lambda a, b: a)
        .name("count sessions")
        .collect()
    )
    with pytest.raises(rs.JobFailed, match=r"into operator 'count sessions'.*of type .*Session has no deterministic"):
        env.execute("bad keys")


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class CountPerKey(rs.KeyedProcessFunction):
    def open(self, ctx):
        self.count = ctx.get_state(ValueStateDescriptor("count", default=0))

    def process_element(self, value, ctx):
        self.count.update(self.count.value() + 1)
        yield ctx.get_current_key(), self.count.value()


@pytest.mark.parametrize("make_key", [
    lambda i: dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(hours=i % 20),  # datetime.now(timezone.utc)
    lambda i: Level(1 + i % 2),
], ids=["utc-datetime", "IntEnum"])
def test_keys_whose_arrow_form_differs_keep_their_key_group_across_the_exchange(make_key):
    """The keyed task files a key's state under the key group of the key it receives; the
    sender routed the record by the key it sent. A tz-aware datetime used to come back from
    Arrow with another zone object (another repr, so another hash), an IntEnum as a plain
    int: the job failed with 'key ... outside this backend's range'."""
    records = [{"k": make_key(i), "v": i} for i in range(600)]
    env = rs.StreamEnvironment(parallelism=2)
    out = env.from_collection(records).rebalance().key_by("k").process(CountPerKey()).execute_and_collect()
    final: dict = {}
    for key, n in out:
        final[key] = max(n, final.get(key, 0))
    assert final == collections.Counter(r["k"] for r in records)
    assert {type(k) for k in final} == {type(records[0]["k"])}
    assert all(k.tzinfo is dt.timezone.utc for k in final if isinstance(k, dt.datetime))


class Colour(str, enum.Enum):
    RED = "red"


Point = collections.namedtuple("Point", "x y")
_PLUS2 = dt.timezone(dt.timedelta(hours=2))
#: kinds of keys, each a list of values that Python holds equal (one key)
EQUAL_KEYS = [
    [1, Level.LOW, 1.0, decimal.Decimal("1.00"), fractions.Fraction(1)],
    ["red", Colour.RED],
    [(1, 2), Point(1, 2)],
    [decimal.Decimal("1.10"), decimal.Decimal("1.1"), fractions.Fraction(11, 10)],
    [dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc), dt.datetime(2024, 1, 1, 2, tzinfo=_PLUS2)],
    [dt.datetime(2024, 1, 1)],
    [dt.date(2024, 1, 1)],
    [b"x"],
    [None],
    [Level.HIGH, 2],
]


@pytest.mark.parametrize("uniform_batches", [False, True], ids=["mixed-batches", "batches-of-one-kind"])
def test_keys_equal_in_python_are_counted_as_one_key_at_any_parallelism(uniform_batches):
    """A differential check against a Python Counter: keys of many types, some equal across
    types (an IntEnum and its int, a Decimal and a float, one instant in two zones), keyed
    through an exchange into keyed state, at p=1 and p=2 on the session's pooled executors
    (whose key group cache outlives jobs)."""
    rnd = random.Random(11)
    keys = [rnd.choice(rnd.choice(EQUAL_KEYS)) for _ in range(1500)]
    if uniform_batches:  # runs of one Python type: batches that cross as typed Arrow where exact
        keys.sort(key=lambda k: type(k).__name__)
    expected = collections.Counter(keys)
    for parallelism in (1, 2):
        env = rs.StreamEnvironment(parallelism=parallelism)
        records = [{"k": k, "i": i} for i, k in enumerate(keys)]
        out = (env.from_collection(records, batch_size=16).rebalance().key_by("k").process(CountPerKey())
               .execute_and_collect())
        final: dict = {}
        for key, n in out:
            final[key] = max(n, final.get(key, 0))
        assert final == dict(expected), f"p={parallelism}"
        assert len(final) == len(EQUAL_KEYS)


@pytest.mark.parametrize("how", ["sum-final", "reduce-final"])
def test_keys_equal_in_python_are_one_key_of_the_combining_aggregations(how):
    """The same keys through the pre-aggregating paths: the combiner before the shuffle
    folds each batch, the keyed stage merges partials."""
    rnd = random.Random(12)
    keys = [rnd.choice(rnd.choice(EQUAL_KEYS)) for _ in range(1500)]
    keys.sort(key=lambda k: type(k).__name__)
    expected = collections.Counter(keys)
    env = rs.StreamEnvironment(parallelism=2)
    stream = env.from_collection([{"k": k, "one": 1} for k in keys], batch_size=16).key_by("k")
    if how == "sum-final":
        out = stream.sum("one", emit="final")
    else:
        out = stream.reduce(lambda a, b: {"k": a["k"], "one": a["one"] + b["one"]}, emit="final", combinable=True)
    got = {r["k"]: r["one"] for r in out.execute_and_collect()}
    assert got == dict(expected)


def test_the_vectorized_aggregate_groups_equal_keys_of_one_column_type_and_names_a_mixed_column():
    """``aggregate`` computes over Arrow columns: an IntEnum among ints, a str Enum among
    strs, one instant in two zones are one column type and one key each; a batch whose key
    field mixes types has no columns, and the job fails naming the record and why (it
    said "key column 'k' is not in the batch (columns: ['record'])")."""
    rnd = random.Random(13)
    for pool in ([1, Level.LOW, 2, Level.HIGH, 3], ["red", Colour.RED, "blue"], EQUAL_KEYS[4] + [dt.datetime(2025, 1, 1, tzinfo=_PLUS2)]):
        keys = [rnd.choice(pool) for _ in range(600)]
        env = rs.StreamEnvironment(parallelism=2)
        out = (env.from_collection([{"k": k, "one": 1} for k in keys], batch_size=16).key_by("k")
               .aggregate(n=("one", "sum"), emit="final").execute_and_collect())
        assert {r["k"]: r["n"] for r in out} == dict(collections.Counter(keys))
    env = rs.StreamEnvironment(parallelism=1)  # (at p=2 the exchange could part the two types)
    env.from_collection([{"k": k, "one": 1} for k in ["a", 2] * 8]).key_by("k").aggregate(n=("one", "sum")).collect()
    with pytest.raises(rs.JobFailed, match=r"aggregate\(n=\('one', 'sum'\)\) computes over Arrow columns, and these "
                       r"records have none: column 'k' mixes str and int \(record 1 of the batch: \{'k': 2, 'one': 1\}\)"):
        env.execute("mixed keys")
