"""A task executor that died is logged and reported in one line: Ray's exit type and detail,
without its actor ids, namespace and OOM-killer advice (the restart's log line was ~8 lines
of Ray's ActorDiedError text)."""

from __future__ import annotations

import pytest

from raystream.engine.ray_runtime import executor_death

RAY_2_5X = (
    "The actor died unexpectedly before finishing this task.\n\tclass_name: TaskActor\n\tactor_id: 4f2c\n\tpid: 20235\n"
    "\tname: rs-exec-1\n\tnamespace: raystream\n\tip: 192.0.2.2\nThe actor is dead because its worker process has died. "
    "Worker exit type: SYSTEM_ERROR Worker exit detail: Worker unexpectedly exits with a connection error code 2. "
    "End of file. Some common causes include: (1) the process was killed by the OOM killer due to high memory usage, "
    "(2) ray stop --force was called, or (3) the worker crashed unexpectedly due to SIGSEGV or another unexpected error."
)
OLDER = (
    "The actor died unexpectedly before finishing this task.\nThe actor is dead because its worker process has died. "
    "Worker exit type: UNEXPECTED_SYSTEM_EXIT Worker exit detail: Worker exits unexpectedly. There are some potential "
    "root causes. (1) The process is killed by SIGKILL by OOM killer due to high memory usage."
)


@pytest.mark.parametrize("text, said", [
    (RAY_2_5X, "its process ended (SYSTEM_ERROR: Worker unexpectedly exits with a connection error code 2. End of file.)"),
    (OLDER, "its process ended (UNEXPECTED_SYSTEM_EXIT: Worker exits unexpectedly.)"),
    ("The actor died unexpectedly before finishing this task.", "The actor died unexpectedly before finishing this task."),
    ("Worker exit type: INTENDED_USER_EXIT", "its process ended (INTENDED_USER_EXIT)"),
    ("", "RuntimeError"),
])
def test_an_executor_death_is_one_line_with_the_exit_type_and_detail(text, said):
    message = executor_death(RuntimeError(text))
    assert message == said
    assert "\n" not in message and "OOM" not in message
