"""Keys whose Python ``hash()`` is salted per process (frozensets of strings) route to one
subtask on a real local Ray, and a key with no deterministic value fails the job clearly."""

import collections
import random

import pytest

import raystream as rs


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
