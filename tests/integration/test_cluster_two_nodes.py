"""A job on a two-node Ray cluster on one machine (``ray.cluster_utils.Cluster``).

A driver connects to one Ray cluster only, and this pytest process is already the driver of
the session's local Ray; so the two-node cluster and its driver run in a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent('''
    import collections, json, time
    import ray
    from ray.cluster_utils import Cluster
    import ray._private.state as state

    t0 = time.monotonic()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    try:
        ray.init(address=cluster.address, logging_level="ERROR")
        cluster.wait_for_nodes()
        started = time.monotonic() - t0
        import raystream as rs
        from jobs.wordcount import final_counts, generated_text, tokenize

        lines = [generated_text(i) for i in range(4000)]
        env = rs.StreamEnvironment(parallelism=4)
        counts = (env.from_collection(lines, batch_size=500).flat_map(tokenize).map(lambda w: (w, 1))
                  .key_by(0).reduce(lambda a, b: (a[0], a[1] + b[1])))
        got = final_counts(counts.execute_and_collect("two-nodes"))
        want = collections.Counter(w for line in lines for w in tokenize(line))
        nodes = {a["Address"]["NodeID"] for a in state.actors().values() if a["ActorClassName"] == "TaskActor"}
        alive = [a for a in state.actors().values() if a["State"] != "DEAD"]
        print(json.dumps({"correct": got == dict(want), "task_nodes": len(nodes),
                          "cluster_nodes": len([n for n in ray.nodes() if n["Alive"]]),
                          "left_alive": len(alive), "cluster_start_s": round(started, 1),
                          "job_s": round(time.monotonic() - t0 - started, 1)}))
    finally:
        ray.shutdown()
        cluster.shutdown()
''')


def test_job_tasks_spread_over_two_nodes_and_results_are_correct():
    env = dict(os.environ, RAY_AUTH_MODE="disabled", PYTHONPATH=str(ROOT))
    env.pop("RAY_ADDRESS", None)
    res = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True,
                         timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads(res.stdout.strip().splitlines()[-1])
    print(report)
    assert report["correct"]
    assert report["cluster_nodes"] == 2 and report["task_nodes"] == 2
    assert report["left_alive"] == 0
