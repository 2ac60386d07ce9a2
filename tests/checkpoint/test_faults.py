"""The fault-injecting filesystem (``checkpoint.faults``): rules, deterministic draws,
pickling, and what checkpoint storage sees through it. No Ray."""

from __future__ import annotations

import doctest
import threading

import cloudpickle
import pyarrow.fs as pafs
import pytest

import raystream.checkpoint.faults
from raystream.checkpoint import CheckpointStorage
from raystream.checkpoint.faults import (
    FaultInjectingHandler,
    FaultRule,
    InjectedFault,
    classify_write,
    faulty_filesystem,
    path_key,
    read_fault_log,
)
from raystream.engine.errors import CheckpointError, ConfigError


class Sleeps:
    """Records the delays instead of sleeping (picklable: a module-level class)."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def storage_with(tmp_path, *rules: FaultRule, seed: int = 0, **kw) -> CheckpointStorage:
    fs = faulty_filesystem(rules=rules, seed=seed, **kw)
    return CheckpointStorage((fs, str(tmp_path / "chk")))


def test_doctests():
    assert doctest.testmod(raystream.checkpoint.faults, optionflags=doctest.ELLIPSIS).failed == 0


# -- rules and classification ------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"op": "rename", "fail": True}, "op must be one of"),
        ({"op": "move", "path_glob": "", "fail": True}, "path_glob must be a non-empty str"),
        ({"op": "move", "delay_s": -1}, "delays must be >= 0"),
        ({"op": "move", "fail_probability": 1.5}, "fail_probability must be between 0 and 1"),
        ({"op": "move", "fail": True, "times": 0}, "times must be None or >= 1"),
        ({"op": "move"}, "does nothing"),
    ],
)
def test_bad_rules_are_refused(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        FaultRule(**kwargs)


def test_handler_refuses_what_is_not_a_filesystem_or_rule():
    with pytest.raises(ConfigError, match="wraps a pyarrow.fs.FileSystem"):
        FaultInjectingHandler("/tmp")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="must be FaultRule"):
        FaultInjectingHandler(rules=[("move", True)])  # type: ignore[list-item]


@pytest.mark.parametrize(
    "path,op",
    [
        ("/b/job-1/chk-3/op-0-keyed", "write_state"),
        ("/b/job-1/chk-3/sub/dir/op-0", "write_state"),
        ("/b/job-1/chk-3/_metadata", "write_metadata"),
        ("/b/job-1/chk-3/_metadata.inprogress-0123abcd", "write_metadata"),
        ("/sp/_metadata", "write_metadata"),
        ("/out/.inprogress-0-0-abcdef12", "write"),
        ("/b/chk-3", "write"),  # a file named like a checkpoint directory is not in one
    ],
)
def test_writes_are_classified_by_path(path, op):
    assert classify_write(path) == op


def test_path_key_masks_random_tokens_but_not_checkpoint_numbers():
    assert path_key("/x/wc-3fa4b2c1/chk-12345678/op-0") == "chk-12345678/op-0"
    assert path_key("/x/wc-3fa4b2c1/chk-2/_metadata.inprogress-" + "ab" * 16) == (
        "chk-2/_metadata.inprogress-*"
    )
    assert path_key("/out/.inprogress-1-4-0a1b2c3d") == "out/.inprogress-1-4-*"


# -- what storage sees -------------------------------------------------------------------


def test_unmatched_operations_pass_through(tmp_path):
    storage = storage_with(tmp_path, FaultRule("move", path_glob="*/nothing", fail=True))
    h = storage.write_state("job", 1, "op-0", b"abc")
    storage.write_metadata("job", 1, {"h": [h]})
    assert storage.list_complete("job") == [1]
    assert storage.read_state(storage.read_metadata("job", 1)["h"][0]) == b"abc"
    assert storage.filesystem.handler.counts() == {}


def test_delays_hit_state_and_metadata_writes_separately(tmp_path):
    sleeps = Sleeps()
    storage = storage_with(
        tmp_path,
        FaultRule("write_state", delay_s=0.1),
        FaultRule("write_metadata", delay_s=0.9),
        sleep=sleeps,
    )
    h1 = storage.write_state("job", 1, "a-0", b"1")
    h2 = storage.write_state("job", 1, "b-0", b"2")
    assert sleeps.calls == [0.1, 0.1]
    storage.write_metadata("job", 1, {"h": [h1, h2]})
    assert sleeps.calls == [0.1, 0.1, 0.9]
    assert storage.list_complete("job") == [1]
    assert storage.filesystem.handler.counts() == {
        "write_metadata:delay": 1,
        "write_state:delay": 2,
    }


def test_an_uncreatable_checkpoint_directory_fails_its_writes_only(tmp_path):
    storage = storage_with(tmp_path, FaultRule("create_dir", path_glob="*/chk-4", fail=True))
    for cid in (3, 4, 5):
        if cid == 4:
            with pytest.raises(CheckpointError, match="cannot create checkpoint directory .*chk-4"):
                storage.write_state("job", cid, "op-0", b"x")
            with pytest.raises(CheckpointError, match="chk-4/uid-1"):  # directories below it too
                storage.write_state("job", cid, "uid-1/1-0-keyed", b"x")
            with pytest.raises(CheckpointError, match="chk-4"):
                storage.write_metadata("job", cid, {})
        else:
            storage.write_metadata("job", cid, {"h": storage.write_state("job", cid, "op-0", b"x")})
    assert storage.list_complete("job") == [3, 5]
    assert storage.filesystem.handler.counts() == {"create_dir:fail": 3}


def test_a_failing_rename_leaves_the_checkpoint_incomplete(tmp_path):
    storage = storage_with(tmp_path, FaultRule("move", path_glob="*/chk-2/_metadata", fail=True))
    for cid in (1, 2):
        storage.write_state("job", cid, "op-0", b"x")
        if cid == 2:
            with pytest.raises(CheckpointError, match="cannot rename"):
                storage.write_metadata("job", cid, {})
        else:
            storage.write_metadata("job", cid, {})
    assert storage.list_checkpoints("job") == [1, 2]
    assert storage.list_complete("job") == [1]


def test_failing_after_the_rename_leaves_it_done_but_reports_an_error(tmp_path):
    # the ambiguous outcome of a timed-out request: the checkpoint IS complete on storage
    storage = storage_with(
        tmp_path, FaultRule("move", path_glob="*/_metadata", fail=True, after=True)
    )
    with pytest.raises(CheckpointError, match="cannot rename"):
        storage.write_metadata("job", 1, {"x": 1})
    assert storage.list_complete("job") == [1]
    assert storage.read_metadata("job", 1) == {"x": 1}


def test_failing_after_a_write_keeps_the_file_and_reports_an_error(tmp_path):
    storage = storage_with(tmp_path, FaultRule("write_state", fail=True, after=True))
    with pytest.raises(CheckpointError, match="cannot write checkpoint file"):
        storage.write_state("job", 1, "op-0", b"payload")
    assert (tmp_path / "chk" / "job" / "chk-1" / "op-0").stat().st_size > len(b"payload")


def test_failing_listing_and_reads(tmp_path):
    plain = CheckpointStorage(str(tmp_path / "chk"))
    h = plain.write_state("job", 1, "op-0", b"x")
    plain.write_metadata("job", 1, {})
    storage = storage_with(tmp_path, FaultRule("list", fail=True), FaultRule("read", fail=True))
    with pytest.raises(CheckpointError, match="cannot list checkpoints"):
        storage.list_complete("job")
    with pytest.raises(CheckpointError, match="cannot read state file"):
        storage.read_state(h)


def test_injected_faults_are_oserrors_naming_op_path_and_rule(tmp_path):
    fs = faulty_filesystem(rules=[FaultRule("delete", delay_s=0.5, path_glob="*/other"),
                                  FaultRule("write", fail=True)], sleep=Sleeps())  # fmt: skip
    with pytest.raises(InjectedFault, match=r"injected fault: write '.*/f' \(rule 1\)") as err:
        fs.open_output_stream(str(tmp_path / "f"))
    assert isinstance(err.value, OSError)


# -- deterministic draws -----------------------------------------------------------------


def decisions(handler: FaultInjectingHandler, paths: list[str]) -> list[bool]:
    fs = pafs.PyFileSystem(handler)
    out = []
    for p in paths:
        try:
            fs.create_dir(p)
            out.append(False)
        except InjectedFault:
            out.append(True)
    return out


def test_probabilistic_rules_are_deterministic_per_seed_and_path(tmp_path):
    paths = [str(tmp_path / f"job-0000abcd/chk-{i}") for i in range(1, 401)]
    rule = FaultRule("create_dir", fail_probability=0.2)
    first = decisions(FaultInjectingHandler(rules=[rule], seed=7), paths)
    again = decisions(FaultInjectingHandler(rules=[rule], seed=7), paths)
    other = decisions(FaultInjectingHandler(rules=[rule], seed=8), paths)
    assert first == again
    assert first != other
    assert 0.12 < sum(first) / len(paths) < 0.28


def test_a_pickled_copy_decides_the_same_with_fresh_counts(tmp_path):
    paths = [str(tmp_path / f"chk-{i}") for i in range(1, 101)]
    handler = FaultInjectingHandler(rules=[FaultRule("create_dir", fail_probability=0.5)], seed=3)
    copy = cloudpickle.loads(cloudpickle.dumps(pafs.PyFileSystem(handler))).handler
    assert copy == handler and copy is not handler
    assert decisions(handler, paths) == decisions(copy, paths)
    assert handler.counts() == copy.counts() != {}
    assert cloudpickle.loads(cloudpickle.dumps(handler)).counts() == {}


def test_random_tokens_of_a_path_do_not_change_the_draw(tmp_path):
    rule = FaultRule("create_dir", fail_probability=0.5)
    runs = [
        decisions(FaultInjectingHandler(rules=[rule], seed=1),
                  [str(tmp_path / f"run{r}" / f"wc-{token}" / f"chk-{i}") for i in range(1, 65)])
        for r, token in enumerate(("3fa4b2c1", "0badf00d"))
    ]  # fmt: skip
    assert runs[0] == runs[1]


def test_a_retried_operation_is_drawn_anew(tmp_path):
    handler = FaultInjectingHandler(rules=[FaultRule("create_dir", fail_probability=0.5)], seed=5)
    same = decisions(handler, [str(tmp_path / "chk-1")] * 40)
    assert 0 < sum(same) < 40


def test_jittered_delays_are_deterministic_and_bounded():
    def delays(seed: int) -> list[float]:
        sleeps = Sleeps()
        fs = faulty_filesystem(
            rules=[FaultRule("info", delay_s=0.1, delay_jitter_s=0.5)], seed=seed, sleep=sleeps
        )
        for i in range(20):
            fs.get_file_info(f"/nonexistent/chk-{i}")
        return sleeps.calls

    assert delays(1) == delays(1) != delays(2)
    assert all(0.1 <= d < 0.6 for d in delays(1))


# -- limits, threads, logs -----------------------------------------------------------------


def test_times_limits_the_faults_of_a_rule_even_across_threads(tmp_path):
    handler = FaultInjectingHandler(rules=[FaultRule("write", fail=True, times=5)])
    fs = pafs.PyFileSystem(handler)
    failed = []

    def work(t: int) -> None:
        for i in range(25):
            try:
                with fs.open_output_stream(str(tmp_path / f"f-{t}-{i}")) as out:
                    out.write(b"x")
            except InjectedFault:
                failed.append((t, i))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(failed) == 5
    assert handler.counts() == {"write:fail": 5}
    assert len(list(tmp_path.iterdir())) == 8 * 25 - 5


def test_every_matching_rule_acts_in_order(tmp_path):
    sleeps = Sleeps()
    storage = storage_with(
        tmp_path,
        FaultRule("write_metadata", delay_s=0.2),
        FaultRule("*", path_glob="*/_metadata*", delay_s=0.3),
        FaultRule("write_metadata", fail=True),
        sleep=sleeps,
    )
    with pytest.raises(CheckpointError):
        storage.write_metadata("job", 1, {})
    # the write: both delays, then the failure; then the storage looks for the temporary
    # file to remove it (the "*" rule delays that too; the write failed first: none to delete)
    assert sleeps.calls == [pytest.approx(0.5), pytest.approx(0.3)]
    assert storage.filesystem.handler.counts() == {
        "write_metadata:delay": 2,
        "write_metadata:fail": 1,
        "info:delay": 1,
    }


def test_the_fault_log_sums_up_every_copy(tmp_path):
    log = str(tmp_path / "faults.jsonl")
    fs = faulty_filesystem(rules=[FaultRule("write_state", fail=True), FaultRule("write_metadata", delay_s=0.01)],
                           log_path=log, sleep=Sleeps())  # fmt: skip
    copies = [cloudpickle.loads(cloudpickle.dumps(fs)) for _ in range(3)]
    for i, copy in enumerate(copies):
        storage = CheckpointStorage((copy, str(tmp_path / "chk")))
        with pytest.raises(CheckpointError):
            storage.write_state("job", i + 1, "op-0", b"x")
        storage.write_metadata("job", i + 1, {})
    assert read_fault_log(log) == {"write_metadata:delay": 3, "write_state:fail": 3}
    assert read_fault_log(tmp_path / "missing.jsonl") == {}


def test_storage_on_the_faulty_filesystem_pickles(tmp_path):
    storage = storage_with(
        tmp_path, FaultRule("create_dir", path_glob="*/chk-2", fail=True), seed=4
    )
    copy = cloudpickle.loads(cloudpickle.dumps(storage))
    assert copy.filesystem.handler == storage.filesystem.handler
    assert copy.base_path == storage.base_path
    with pytest.raises(CheckpointError, match="chk-2"):
        copy.write_state("job", 2, "op-0", b"x")
