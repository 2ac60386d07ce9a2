"""What a job master or task executor says when it cannot unpickle the job's code: the
module it cannot import (or imports in another version) and how to ship it."""

from __future__ import annotations

from raystream.engine.errors import JobFailed, unpickling_failed


def test_a_missing_module_is_named_with_both_remedies():
    err = unpickling_failed("the operators of 'map'", "in task executor pid 7",
                            ModuleNotFoundError("No module named 'helpers.io'", name="helpers.io"))
    text = str(err)
    assert isinstance(err, JobFailed) and text.startswith("the operators of 'map' cannot be unpickled in task executor pid 7")
    assert "module 'helpers.io'" in text and "runtime_env={'py_modules': [helpers]}" in text, text
    assert "cloudpickle.register_pickle_by_value(helpers)" in text, text


def test_a_module_without_the_pickled_function_is_another_version():
    exc = AttributeError("Can't get attribute 'parse' on <module 'helpers' from '/srv/helpers.py'>")
    text = str(unpickling_failed("the sources and sinks of job 'j'", "in the job master", exc))
    assert "module 'helpers'" in text and "another version of it" in text, text


def test_other_errors_are_reported_as_they_are():
    text = str(unpickling_failed("the operators of 'map'", "in task executor pid 7", ValueError("bad pickle")))
    assert text == "the operators of 'map' cannot be unpickled in task executor pid 7: ValueError: bad pickle"
