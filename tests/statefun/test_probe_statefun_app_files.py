"""``raystream run raystream.jobs.statefun_app -- module.yaml --functions functions.py`` with a
``functions.py`` that imports the modules next to it (its message types in ``messages.py``,
helpers in a package), as ``python functions.py`` runs it: the file used to fail to import
(``No module named 'messages'``); now its directory is searched while it loads, and the
modules it found there go to the workers by value with it (checked by loading the pickled
functions in a fresh interpreter that cannot import them, as a Ray worker)."""

from __future__ import annotations

import subprocess
import sys

import cloudpickle
import pytest

from raystream.engine.errors import ConfigError
from raystream.jobs import statefun_app
from raystream.statefun_api import StringType, message_builder
from raystream.statefun_api.testing import run_function
from raystream.statefun_api.types import from_typed_value

MESSAGES = """\
from raystream.statefun_api import make_json_type

GreetRequest = make_json_type("example/GreetRequest")
"""
TEXTS = """\
def greeting(name, visits):
    return f"Hello {name}, visit #{visits}"
"""
FUNCTIONS = """\
from raystream.statefun_api import *

from probe_app_messages import GreetRequest
from probe_app_texts.words import greeting

functions = StatefulFunctions()


@functions.bind(typename="example/person", specs=[ValueSpec(name="visits", type=IntType)])
def person(context, message):
    context.storage.visits = (context.storage.visits or 0) + 1
    request = message.as_type(GreetRequest)
    context.send_egress(egress_message_builder("example/greets", greeting(request["name"], context.storage.visits), StringType))
"""
LOCAL_MODULES = ("probe_app_messages", "probe_app_texts", "probe_app_texts.words")
# a fresh interpreter, without the functions' directory on its path: it loads the pickled
# functions and invokes them, as a Ray worker does
WORKER = """\
import sys
import cloudpickle
from raystream.statefun_api import StringType, make_json_type, message_builder
from raystream.statefun_api.testing import run_function
from raystream.statefun_api.types import from_typed_value
functions = cloudpickle.loads(sys.stdin.buffer.read())
msg = message_builder("example/person", "ann", value={"name": "Ann"}, value_type=make_json_type("example/GreetRequest"))
(egress,) = run_function(functions, "example/person", "ann", [msg], state={"visits": 1}).egress
print(from_typed_value(StringType, egress.typed_value))
"""


@pytest.fixture
def app_dir(tmp_path):
    (tmp_path / "probe_app_messages.py").write_text(MESSAGES)
    (tmp_path / "probe_app_texts").mkdir()
    (tmp_path / "probe_app_texts" / "__init__.py").write_text("")
    (tmp_path / "probe_app_texts" / "words.py").write_text(TEXTS)
    (tmp_path / "functions.py").write_text(FUNCTIONS)
    yield tmp_path
    for name in LOCAL_MODULES:
        module = sys.modules.pop(name, None)
        if module is not None and "." not in name:
            cloudpickle.unregister_pickle_by_value(module)


def test_a_functions_file_imports_the_modules_next_to_it(app_dir):
    path_before = list(sys.path)
    functions = statefun_app.load_functions(str(app_dir / "functions.py"))
    assert sys.path == path_before  # (searched while the file loads only)
    request = message_builder("example/person", "ann", value={"name": "Ann"},
                              value_type=sys.modules["probe_app_messages"].GreetRequest)
    run = run_function(functions, "example/person", "ann", [request])
    assert [from_typed_value(StringType, e.typed_value) for e in run.egress] == ["Hello Ann, visit #1"]


def test_the_modules_next_to_it_go_to_the_workers_by_value(app_dir):
    functions = statefun_app.load_functions(str(app_dir / "functions.py"))
    worker = subprocess.run([sys.executable, "-c", WORKER], input=cloudpickle.dumps(functions), capture_output=True,
                            cwd="/", timeout=120)
    assert worker.returncode == 0, worker.stderr.decode()[-2000:]
    assert worker.stdout.decode().strip() == "Hello Ann, visit #2"


def test_a_missing_module_is_still_named(tmp_path):
    (tmp_path / "functions.py").write_text("import probe_app_not_there\n")
    with pytest.raises(ConfigError, match=r"--functions: importing .*functions.py' failed: ModuleNotFoundError: "
                                          r"No module named 'probe_app_not_there'"):
        statefun_app.load_functions(str(tmp_path / "functions.py"))
