"""raystream's Ray actors (task executors, job masters) are created with Ray's task events
off: every checkpoint makes several actor calls (triggers, acks, completions), and with task
events on, the GCS kept an event of each, up to Ray's 100,000 - a long-running job's GCS grew
by ~43 MB a minute (soak: a p=2 keyed sum with 80 ms checkpoints, GCS RSS 48 -> 134 MB in two
minutes; 49 -> 52 MB with them off). No Ray started: the actor classes' creation options."""

from __future__ import annotations

import pytest

from raystream.engine.ray_runtime import JobMasterActor, TaskActor


@pytest.mark.parametrize("actor_class", [TaskActor, JobMasterActor], ids=["TaskActor", "JobMasterActor"])
def test_raystream_actors_record_no_task_events_in_the_gcs(actor_class):
    # (ActorClass keeps the options of @ray.remote(...) here; .options(name=...) adds to them)
    assert actor_class._default_options.get("enable_task_events") is False
