"""Flink's function classes as a PyFlink port writes them: ``map(MapFunction)``,
``flat_map(FlatMapFunction)``, ``filter(FilterFunction)``, ``key_by`` with an object's
``get_key`` (Flink's ``KeySelector``), ``reduce(ReduceFunction)`` keyed and on windows.
Before, each was refused when the job was built ("map() expects a function, got ...").
A function object with ``open``/``close`` has them called once per subtask, as Flink's rich
functions; a class where an instance belongs is refused naming the remedy."""

from __future__ import annotations

import pytest

import raystream as rs

WORDS = ["a b", "b c c", "", "a"]


class Split(rs.FlatMapFunction):
    def flat_map(self, value):
        yield from value.split()


class Pair(rs.MapFunction):
    def map(self, value):
        return (value, 1)


class NotC(rs.FilterFunction):
    def filter(self, value):
        return value[0] != "c"


class First:  # no base class: duck typing, as for any Python object with get_key
    def get_key(self, value):
        return value[0]


class Add(rs.ReduceFunction):
    def reduce(self, value1, value2):
        return (value1[0], value1[1] + value2[1])


class Tagged(rs.MapFunction):
    """A rich function: open() sets up what map() uses, once per subtask."""

    def open(self, runtime_context):
        self.tag = f"p{runtime_context.get_number_of_parallel_subtasks()}"
        assert 0 <= runtime_context.get_index_of_this_subtask() < runtime_context.get_number_of_parallel_subtasks()
        assert runtime_context.get_max_number_of_parallel_subtasks() == 128
        assert runtime_context.get_attempt_number() == 0 and runtime_context.get_task_name()

    def map(self, value):
        return (value, self.tag)


@pytest.mark.parametrize("parallelism", [1, 2])
def test_word_count_with_function_objects(parallelism):
    env = rs.StreamEnvironment(parallelism=parallelism)
    counts = (env.from_collection(WORDS).flat_map(Split()).map(Pair()).filter(NotC())
              .key_by(First()).reduce(Add(), emit="final"))
    assert sorted(counts.execute_and_collect("wc-objects")) == [("a", 2), ("b", 2)]


@pytest.mark.parametrize("parallelism", [1, 2])
def test_rich_map_function_opens_once_per_subtask(parallelism):
    env = rs.StreamEnvironment(parallelism=parallelism)
    out = env.from_collection(list(range(6))).map(Tagged()).execute_and_collect("rich")
    assert sorted(out) == [(i, f"p{parallelism}") for i in range(6)]


def test_window_reduce_takes_a_reduce_function():
    env = rs.StreamEnvironment(parallelism=2)
    strategy = rs.WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(lambda r: r[2])
    records = [("a", 1, t) for t in range(10)] + [("b", 1, t) for t in range(0, 10, 3)]
    out = (env.from_collection(records).assign_timestamps_and_watermarks(strategy).key_by(First())
           .window(rs.TumblingEventTimeWindows.of(5)).reduce(Add()))
    assert sorted(tuple(r[:2]) for r in out.execute_and_collect("window-reduce")) == [
        ("a", 5), ("a", 5), ("b", 2), ("b", 2)]


def test_classes_and_objects_without_the_method_are_refused_naming_the_remedy():
    env = rs.StreamEnvironment(parallelism=1)
    stream = env.from_collection(WORDS)
    with pytest.raises(rs.GraphError, match=r"map\(\) got the class Pair: pass an instance, Pair\(\)"):
        stream.map(Pair)
    with pytest.raises(rs.GraphError, match=r"flat_map\(\) expects a function or an object with a flat_map\(\) method"):
        stream.flat_map(Pair())
    with pytest.raises(rs.GraphError, match=r"key_by expects a column name, a tuple index, a function or an object with get_key"):
        stream.key_by(Pair())
    with pytest.raises(rs.GraphError, match=r"reduce\(\) got the class Add"):
        stream.key_by(First()).reduce(Add)


class RichAdd(rs.ReduceFunction):
    def open(self, runtime_context):
        self.n = 0

    def reduce(self, value1, value2):
        return value1


def test_a_reduce_function_with_a_life_cycle_is_refused_not_left_unopened():
    env = rs.StreamEnvironment(parallelism=1)
    with pytest.raises(rs.GraphError, match=r"reduce\(RichAdd\): a ReduceFunction's open\(\)/close\(\) are not run"):
        env.from_collection(WORDS).key_by(First()).reduce(RichAdd())


def test_classes_that_are_functions_of_the_record_still_are():
    env = rs.StreamEnvironment(parallelism=1)
    assert env.from_collection([1, 2]).map(str).filter(bool).key_by(len).map(int).execute_and_collect("types") == [1, 2]


class RichOneRecord(rs.FlatMapFunction):
    def open(self, runtime_context):
        self.k = 1

    def flat_map(self, value):
        return {"k": self.k}  # one record returned, not yielded


def test_a_rich_flat_map_returning_one_record_is_named():
    env = rs.StreamEnvironment(parallelism=1)
    with pytest.raises(rs.JobFailed, match=r"RichOneRecord.flat_map\(\) returned a dict"):
        env.from_collection([1]).flat_map(RichOneRecord()).execute_and_collect("rich-one")


class Threshold(rs.KeyedBroadcastProcessFunction):
    def process_broadcast_element(self, rule, ctx):
        ctx.get_broadcast_state("rules")["max"] = rule

    def process_element(self, value, ctx):
        limit = ctx.get_broadcast_state("rules").get("max")
        if limit is not None and value[1] > limit:
            yield value


def test_keyed_broadcast_process_function_of_a_flink_port():
    env = rs.StreamEnvironment(parallelism=2)
    rules = env.from_collection([5]).broadcast("rules")
    # the rule may come after some records (two sources): compare with what the rule lets through
    values = env.from_collection([("a", 3), ("b", 7), ("a", 9)]).key_by(0)
    out = values.connect(rules).process(Threshold()).execute_and_collect("keyed-broadcast")
    assert set(out) <= {("b", 7), ("a", 9)}
    assert issubclass(rs.KeyedBroadcastProcessFunction, rs.BroadcastProcessFunction)
    assert Threshold().on_timer(0, None) is None
