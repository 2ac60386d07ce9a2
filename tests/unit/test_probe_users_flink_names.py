"""More Flink names a PyFlink port meets, each saying what to write here instead of Python's
bare ``'StreamEnvironment' object has no attribute 'read_text_file'``."""

from __future__ import annotations

import pytest

import raystream as rs


@pytest.mark.parametrize("call, message", [
    (lambda env: env.get_parallelism(), r"no get_parallelism\(\) \(Flink's get_parallelism\): write env.parallelism"),
    (lambda env: env.get_max_parallelism(), r"write env.max_parallelism"),
    (lambda env: env.read_text_file("in.txt"), r"write env.read_text\(path_or_glob, encoding="),
    (lambda env: env.from_sequence(1, 10), r"write env.from_collection\(range\(start, end \+ 1\)\)"),
    (lambda env: env.disable_operator_chaining(), r"stream.disable_chaining\(\) on each operator"),
    (lambda env: env.get_execution_plan(), r"env.get_job_graph\(\).describe\(\)"),
    (lambda env: env.add_python_file("util.py"), r"runtime_env=\{'py_modules'"),
    (lambda env: env.set_python_requirements("requirements.txt"), r"runtime_env=\{'pip'"),
    (lambda env: env.add_jars("file:///connector.jar"), r"there is no JVM"),
    (lambda env: env.close(), r"shutdown_workers\(\)"),
    (lambda env: env.from_collection([1]).start_new_chain(), r"DataStream has no start_new_chain\(\).*disable_chaining\(\)"),
    (lambda env: env.from_collection([1]).force_non_parallel(), r"write set_parallelism\(1\)"),
    (lambda env: env.from_collection([1]).partition_custom(None, None), r"write key_by\(fn\)"),
    (lambda env: env.from_collection([(1, 2)]).key_by(lambda r: r[0]).project(0), r"KeyedStream has no project\(\)"),
])
def test_more_flink_names_say_what_to_write(call, message):
    with pytest.raises(AttributeError, match=message):
        call(rs.StreamEnvironment())
