"""A task executor lost with its node is reported as such, in one line.

Ray's error for an actor whose node died has no "Worker exit type" (the text
:func:`executor_death` shortened): before 2026-12-07 the restart's log line and
``info()["last_failure"]`` read only ``task 'reduce' (subtask 3/3) died: The actor died
unexpectedly before finishing this task.``, not saying that a node was lost nor which one.
The text below is Ray 2.60's, captured from a ``ray.cluster_utils.Cluster`` node removed under
a running actor (``tests/integration/test_node_loss.py`` checks it on a live cluster).
"""

from __future__ import annotations

from raystream.engine.ray_runtime import executor_death

RAY_2_60_NODE_LOST = (
    "The actor died unexpectedly before finishing this task.\n\tclass_name: TaskActor\n"
    "\tactor_id: 54749b6c9384d587c2a17bfa01000000\n\tpid: 30033\n\tnamespace: raystream\n\tip: 192.0.2.2\n"
    "The actor died because its node has died. Node Id: 760f527cca8404b4146c3c250ae8b8e98593c298d78e8d5be6651a71\n"
    "\tthe actor's node was terminated expectedly: received SIGTERM"
)


def test_an_executor_lost_with_its_node_is_reported_as_a_lost_node_naming_it():
    said = executor_death(RuntimeError(RAY_2_60_NODE_LOST))
    assert said == ("its node died (node 760f527c at 192.0.2.2: the actor's node was terminated expectedly: "
                    "received SIGTERM)")
    assert "\n" not in said and "actor_id" not in said


def test_a_lost_node_without_a_detail_line():
    said = executor_death(RuntimeError(
        "The actor died unexpectedly before finishing this task.\n"
        "The actor died because its node has died. Node Id: abcdef0123456789"))
    assert said == "its node died (node abcdef01)"
