"""Fast checks (no Ray, no timing) of the benchmark data set, baselines and harness."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from benchmarks import baselines, datagen, harness

N = 50_000


@pytest.fixture(scope="module")
def table() -> pa.Table:
    return datagen.events(N)


@pytest.fixture(scope="module")
def batches() -> list[pa.RecordBatch]:
    return list(datagen.iter_batches(N, baselines.BATCH_SIZE))


@pytest.fixture(scope="module")
def parquet_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(datagen.write_parquet(tmp_path_factory.mktemp("data") / "events.parquet", N))


# --------------------------------------------------------------------------- generator


def test_generator_is_deterministic(table: pa.Table) -> None:
    assert datagen.events(N).equals(table)


def test_generator_is_prefix_stable(table: pa.Table) -> None:
    assert datagen.events(1234).equals(table.slice(0, 1234))


def test_iter_batches_yields_the_same_rows(table: pa.Table) -> None:
    got = list(datagen.iter_batches(N, 7000))
    assert [b.num_rows for b in got] == [7000] * 7 + [1000]
    assert all(isinstance(b, pa.RecordBatch) for b in got)
    assert pa.Table.from_batches(got).equals(table)


def test_iter_batches_across_generation_chunks(
    monkeypatch: pytest.MonkeyPatch, table: pa.Table
) -> None:
    monkeypatch.setattr(datagen, "_CHUNK", 10_000)
    got = pa.Table.from_batches(list(datagen.iter_batches(N, 3000)))
    assert got.equals(table)


def test_schema_and_value_ranges(table: pa.Table) -> None:
    assert table.schema.equals(datagen.SCHEMA)
    assert table.schema.field("key").type == pa.string()  # plain, not dictionary
    keys = table.column("key").to_pylist()
    assert set(keys) <= set(datagen.KEY_NAMES)
    assert datagen.KEY_NAMES[0] == "k00000" and datagen.KEY_NAMES[-1] == "k09999"
    values = table.column("value").to_numpy()
    assert values.dtype == np.int64
    assert values.min() >= 0 and values.max() < 1_000_000
    assert abs(values.mean() - 500_000) < 5_000  # uniform
    ts = table.column("ts").to_numpy()
    assert np.array_equal(ts, datagen.T0 + np.arange(N) // 10)
    assert datagen.T0 % 1000 == 0


def test_key_skew_in_range(table: pa.Table) -> None:
    assert 0.14 <= datagen.key_probabilities()[0] <= 0.16
    key, share = datagen.top_key_share(table)
    assert key == "k00000"
    assert 0.14 <= share <= 0.165
    counts = Counter(table.column("key").to_pylist())
    assert counts["k00001"] < counts["k00000"] and counts["k00009"] < counts["k00001"]


def test_parquet_round_trip(parquet_path: str, table: pa.Table) -> None:
    f = pq.ParquetFile(parquet_path)
    assert f.metadata.num_rows == N
    assert f.metadata.row_group(0).num_rows == min(N, 65536)
    assert f.read().equals(table)


def test_ensure_parquet_reuses_a_matching_file(parquet_path: str) -> None:
    before = Path(parquet_path).stat().st_mtime_ns
    datagen.ensure_parquet(parquet_path, N)
    assert Path(parquet_path).stat().st_mtime_ns == before


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        next(datagen.iter_batches(10, 0))
    with pytest.raises(ValueError, match="n must be"):
        datagen.events(-1)


# --------------------------------------------------------------------------- baselines


def _window_reference(table: pa.Table) -> Counter:
    keys = table.column("key").to_pylist()
    starts = (table.column("ts").to_numpy() // 1000 * 1000).tolist()
    return Counter(zip(keys, starts, strict=True))


@pytest.mark.parametrize("workload", baselines.WORKLOADS)
def test_python_and_arrow_baselines_agree(workload: str, parquet_path: str) -> None:
    fns = baselines.BASELINES[workload]
    py = fns["python"](parquet_path)
    ar = fns["arrow"](parquet_path)
    assert baselines.digest(workload, py) == baselines.digest(workload, ar)


def test_stateless_result(table: pa.Table, batches: list[pa.RecordBatch]) -> None:
    v = table.column("value").to_numpy()
    even = v[v % 2 == 0]
    expect = [(len(even), int(even.sum() * 3))]
    assert (
        baselines.canonical_rows("stateless", baselines.python_stateless_batches(batches)) == expect
    )
    assert (
        baselines.canonical_rows("stateless", baselines.arrow_stateless_batches(batches)) == expect
    )


def test_keyed_sum_result(table: pa.Table, batches: list[pa.RecordBatch]) -> None:
    sums: Counter = Counter()
    for k, v in zip(
        table.column("key").to_pylist(), table.column("value").to_pylist(), strict=True
    ):
        sums[k] += v
    expect = sorted(sums.items())
    assert (
        baselines.canonical_rows("keyed_sum", baselines.python_keyed_sum_batches(batches)) == expect
    )
    assert (
        baselines.canonical_rows("keyed_sum", baselines.arrow_keyed_sum_batches(batches)) == expect
    )


def test_window_rows_are_the_distinct_key_windows(
    table: pa.Table, batches: list[pa.RecordBatch]
) -> None:
    ref = _window_reference(table)
    expect = sorted((k, s, n) for (k, s), n in ref.items())
    assert len({s for _, s in ref}) == N // 10_000  # 10,000 events per 1 s window
    py = baselines.canonical_rows("window", baselines.python_window_batches(batches))
    ar = baselines.canonical_rows("window", baselines.arrow_window_batches(batches))
    assert py == expect
    assert ar == expect
    assert sum(n for _, _, n in py) == N  # no event dropped as late


class _Recorder(list):
    """An output list that notes how many input batches had been read at each append."""

    def __init__(self, progress: list[int]) -> None:
        super().__init__()
        self.progress = progress
        self.at: list[int] = []

    def append(self, item) -> None:
        super().append(item)
        self.at.append(self.progress[0])


def _counting(batches: list[pa.RecordBatch], progress: list[int]):
    for b in batches:
        progress[0] += 1
        yield b


def test_window_emits_each_window_when_it_closes(batches: list[pa.RecordBatch]) -> None:
    """A window comes out once the input has passed its end, long before the end of input."""
    max_ts = np.maximum.accumulate([b.column("ts").to_numpy().max() for b in batches])
    for fn, starts_of in (
        (baselines.python_window_batches, lambda item: [item[1]]),
        (baselines.arrow_window_batches, lambda item: item.column("window_start").to_pylist()),
    ):
        progress = [0]
        out = _Recorder(progress)
        fn(_counting(batches, progress), out)
        fired: dict[int, int] = {}  # window start -> batches read when it was emitted
        for item, at in zip(out, out.at, strict=True):
            for s in starts_of(item):
                fired.setdefault(s, at)
        assert len(fired) == N // 10_000
        for s, at in fired.items():
            first_past_end = (
                int(np.argmax(max_ts >= s + 1000)) + 1 if max_ts[-1] >= s + 1000 else len(batches)
            )
            assert at == first_past_end, (fn.__name__, s)


def test_window_drops_late_events_identically() -> None:
    """Out-of-order input: both baselines agree, and an event behind the watermark is dropped."""
    t0 = datagen.T0
    rows = [
        ("a", 1, t0 + 10),
        ("b", 1, t0 + 999),
        ("a", 1, t0 + 1000),
        ("a", 1, t0 + 5),
        ("b", 1, t0 + 1500),
        ("a", 1, t0 + 2600),
        ("b", 1, t0 + 1999),
        ("a", 1, t0 + 2000),
    ]
    tbl = pa.table(
        {"key": [r[0] for r in rows], "value": [r[1] for r in rows], "ts": [r[2] for r in rows]},
        schema=datagen.SCHEMA,
    )
    expect = [
        ("a", t0, 1),
        ("a", t0 + 1000, 1),
        ("a", t0 + 2000, 2),
        ("b", t0, 1),
        ("b", t0 + 1000, 1),
    ]
    for size in (1, 3, 8):
        bs = tbl.to_batches(max_chunksize=size)
        assert baselines.canonical_rows("window", baselines.python_window_batches(bs)) == expect
        assert baselines.canonical_rows("window", baselines.arrow_window_batches(bs)) == expect


def test_empty_input() -> None:
    assert baselines.python_window_batches([]) == []
    assert baselines.arrow_window_batches([]).num_rows == 0
    assert baselines.arrow_keyed_sum_batches([]).num_rows == 0
    assert baselines.python_stateless_batches([]) == [(0, 0)]


# --------------------------------------------------------------------------- digests, harness


def test_digest_accepts_every_result_form() -> None:
    rows = [("k1", 5), ("k0", 3)]
    d = baselines.digest("keyed_sum", rows)
    assert baselines.digest("keyed_sum", [{"key": k, "sum": s} for k, s in rows]) == d
    tbl = pa.table({"sum": [3, 5], "key": ["k0", "k1"]})
    assert baselines.digest("keyed_sum", tbl) == d
    assert baselines.digest("keyed_sum", tbl.to_batches()) == d
    assert baselines.digest("keyed_sum", [("k1", 6), ("k0", 3)]) != d
    assert baselines.digest("stateless", (2, 6)) == baselines.digest(
        "stateless", [{"count": 2, "sum": 6}]
    )


def test_digest_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="unknown workload 'nope'"):
        baselines.digest("nope", [])
    with pytest.raises(ValueError, match="missing columns"):
        baselines.digest("keyed_sum", pa.table({"key": ["a"]}))


def test_measure_checks_the_digest_before_timing(batches: list[pa.RecordBatch]) -> None:
    ref = baselines.digest("keyed_sum", baselines.python_keyed_sum_batches(batches))
    calls = []

    def wrong():
        calls.append(1)
        return [("k00000", 0)]

    m = harness.measure("wrong", wrong, N, repeat=3, workload="keyed_sum", reference=ref)
    assert m.ok is False and m.times == [] and len(calls) == 1
    good = harness.measure(
        "good",
        lambda: baselines.arrow_keyed_sum_batches(batches),
        N,
        repeat=2,
        workload="keyed_sum",
        reference=ref,
    )
    assert good.ok is True and len(good.times) == 2 and good.best >= good.median > 0


def test_measure_reports_errors() -> None:
    def boom():
        raise RuntimeError("engine down")

    m = harness.measure("boom", boom, N, workload="window", reference="x")
    assert m.ok is False and "engine down" in (m.error or "")


def test_registered_contender_gets_the_same_treatment(parquet_path: str) -> None:
    harness.register("keyed_sum", "test-engine", baselines.arrow_keyed_sum, api="batch")
    harness.register("keyed_sum", "test-broken", lambda path: [("k00000", 1)], api="record")
    try:
        ms = harness.run_workload("keyed_sum", parquet_path, N, repeat=1, log=lambda s: None)
    finally:
        harness.unregister("keyed_sum", "test-engine")
        harness.unregister("keyed_sum", "test-broken")
    by = {m.name: m for m in ms}
    assert set(by) == {"python", "arrow", "test-engine", "test-broken"}
    assert by["test-engine"].ok and by["test-engine"].digest == by["python"].digest
    assert by["test-broken"].ok is False and by["test-broken"].times == []
    table = harness.format_table({"keyed_sum": ms})
    assert "test-engine" in table and ">= 0.5x arrow" in table and "WRONG digest" in table


def test_register_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown workload"):
        harness.register("nope", "x", lambda p: None)
    with pytest.raises(ValueError, match="api must be"):
        harness.register("window", "x", lambda p: None, api="vector")


def test_update_results_replaces_its_section(tmp_path: Path) -> None:
    p = tmp_path / "RESULTS.md"
    harness.update_results("a", "first", p)
    harness.update_results("b", "other", p)
    harness.update_results("a", "second", p)
    text = p.read_text()
    assert "second" in text and "first" not in text and "other" in text
    assert text.index("second") < text.index("other")
