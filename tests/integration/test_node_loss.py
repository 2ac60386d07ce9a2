"""Losing a node, not just actors (issue 15): a three-node Ray cluster on one machine
(``ray.cluster_utils.Cluster``), a checkpointed job spread over all three nodes, and one worker
node removed (its raylet and every worker process on it killed) in the middle of the job. The
job master lives on the driver's node (the head), so it survives; the job restarts from the
latest complete checkpoint on the two remaining nodes and its output equals a failure-free run.

As in ``test_cluster_two_nodes``: this pytest process already drives the session's local Ray,
so the cluster and its driver run in a subprocess, which prints one JSON report.
"""

from __future__ import annotations

import textwrap

from tests.cluster_script import run_cluster_script

SCRIPT = textwrap.dedent('''
    import json, tempfile, time
    import ray
    from ray.cluster_utils import Cluster
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    import ray._private.state as state

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
    try:
        ray.init(address=cluster.address, logging_level="ERROR")
        cluster.wait_for_nodes()

        @ray.remote(num_cpus=0)
        def where():
            return ray.get_runtime_context().get_node_id()

        # every node placeable before the job (the scheduler's view can lag the node table)
        node_ids = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])
        assert ray.get([where.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False)).remote()
                        for n in node_ids], timeout=120) == node_ids
        head = ray.get_runtime_context().get_node_id()
        import raystream as rs
        from raystream.operators.sinks import collected_records

        import os
        from tests.integration import gated
        from tests.waiting import wait_for

        # the source holds back its second half until the gate file exists, made after the
        # node is removed: the job cannot end before the loss, however slow the machine
        gate = os.path.join(tempfile.mkdtemp(), "gate")

        def running_sums(env, gate=None):
            (gated.generate(env, lambda i: (i % 13, i), 40000, 5000, 500, gate).set_parallelism(1)
                .key_by(0).reduce(lambda a, b: (a[0], a[1] + b[1])).collect())

        ref_env = rs.StreamEnvironment(parallelism=3)
        running_sums(ref_env)
        reference = sorted(ref_env.execute_and_collect("reference"))

        env = rs.StreamEnvironment(parallelism=3)
        env.enable_checkpointing(200, checkpoint_dir=tempfile.mkdtemp())
        env.set_restart_strategy(rs.RestartStrategy.fixed_delay(10, 200))
        running_sums(env, gate)
        client = env.execute_async("node-loss")
        # conditions: half the records are in and a checkpoint completed
        gated.wait_until_paused(gate, 1, timeout_s=600)
        wait_for(lambda: (client.info().get("checkpoints") or {}).get("completed", 0) >= 1,
                 "a checkpoint completed", 600, 0.1)
        # where the job's executors run, as they report it themselves
        names = sorted(set(ray.get(client._master.task_actor_names.remote()).values()))
        task_nodes = {n: ray.get(ray.get_actor(n, namespace="raystream").node.remote())[1] for n in names}
        masters = [a for a in state.actors().values()
                   if a["ActorClassName"] == "JobMasterActor" and a["State"] == "ALIVE"]
        master_nodes = {a["Address"]["NodeID"] for a in masters}
        on_workers = [w for w in workers if w.node_id in set(task_nodes.values())]
        if not on_workers:
            raise SystemExit(f"no task on a worker node: {task_nodes}, workers {[w.node_id for w in workers]}, "
                             f"head {head}, nodes {node_ids}")
        victim = on_workers[0]
        lost_tasks = [n for n, node in task_nodes.items() if node == victim.node_id]
        cluster.remove_node(victim)  # its raylet and all its worker processes die
        open(gate, "w").close()
        result = client.wait()
        recovered = sorted(collected_records(next(iter(result.sink_results.values()))))
        alive_nodes = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])
        print(json.dumps({
            "reference_rows": len(reference), "recovered_correct": recovered == reference,
            "restarts": result.metrics["restarts"], "executor_nodes": len(set(task_nodes.values())),
            "tasks_on_lost_node": len(lost_tasks), "master_on_head": master_nodes == {head},
            "master_on_lost_node": victim.node_id in master_nodes,
            "lost_node_gone": victim.node_id not in alive_nodes, "nodes_left": len(alive_nodes),
        }))
        rs.shutdown_workers()
    finally:
        ray.shutdown()
        cluster.shutdown()
''')


def test_a_worker_node_lost_mid_job_recovers_on_the_remaining_nodes_with_equal_output():
    report = run_cluster_script(SCRIPT, timeout_s=600)
    assert report["executor_nodes"] == 3  # the job was spread over the three nodes
    assert report["tasks_on_lost_node"] >= 1
    assert report["master_on_head"] and not report["master_on_lost_node"]
    assert report["lost_node_gone"] and report["nodes_left"] == 2
    assert report["restarts"] >= 1
    assert report["recovered_correct"] and report["reference_rows"] > 0
