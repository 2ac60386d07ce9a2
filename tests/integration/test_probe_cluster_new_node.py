"""A node added to a running cluster serves the driver's next job.

The worker pool lends a job the idle executors of earlier jobs first and starts new ones for
the rest. Before 2026-12-07 the new ones were pinned round robin from the first node id,
whatever nodes the lent ones were on: a node added to the cluster (or one that came back after
a loss, with a new id) got no executor of a later job that reused the pool's (a p=3 job on the
two old nodes' idle executors put its new one on an old node, two subtasks there and the new
node idle; a p=4 job three on one node). Now each new executor goes to the alive node with the
fewest of the job's executors.

As in ``test_cluster_two_nodes``: this pytest process already drives the session's local Ray,
so the cluster and its driver run in a subprocess, which prints one JSON report.
"""

from __future__ import annotations

import textwrap

from tests.cluster_script import run_cluster_script

SCRIPT = textwrap.dedent('''
    import collections, json, tempfile
    import ray
    from ray.cluster_utils import Cluster
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    temp = tempfile.mkdtemp(prefix="rc", dir="/tmp")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False,
                                                            "temp_dir": temp})
    cluster.add_node(num_cpus=1)

    @ray.remote(num_cpus=0)
    def where():
        return ray.get_runtime_context().get_node_id()

    def placeable():
        """Every alive node placeable (the scheduler's view can lag the node table)."""
        node_ids = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])
        assert ray.get([where.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False)).remote()
                        for n in node_ids], timeout=120) == node_ids
        return node_ids

    try:
        ray.init(address=cluster.address, logging_level="ERROR")
        cluster.wait_for_nodes()
        placeable()
        import raystream as rs

        def node_of(x):
            return ray.get_runtime_context().get_node_id()

        def run(parallelism):
            """Where the job's subtasks ran, reported by themselves: batches of 100 records
            rotate over the subtasks of the rebalanced map, so each processes records."""
            env = rs.StreamEnvironment(parallelism=parallelism)
            env.from_collection(list(range(3000)), batch_size=100).set_parallelism(1).rebalance().map(node_of).collect()
            return collections.Counter(env.execute_and_collect(f"p{parallelism}"))

        first = run(2)
        new = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        nodes = placeable()
        pool = rs.engine.pool.WorkerPool.current()
        idle_before = len(pool.idle_actor_names()["executors"])
        second = run(3)
        print(json.dumps({
            "first_nodes": len(first), "idle_before": idle_before, "nodes": len(nodes),
            "second_nodes": len(second), "new_node_used": new.node_id in second,
            "second_records": sum(second.values()), "reused": pool.reused["executors"],
        }))
        rs.shutdown_workers()
    finally:
        ray.shutdown()
        cluster.shutdown()
''')


def test_a_node_added_to_the_cluster_gets_the_new_executors_of_the_next_job():
    report = run_cluster_script(SCRIPT, timeout_s=600)
    assert report["first_nodes"] == 2 and report["nodes"] == 3
    assert report["idle_before"] == 2 and report["reused"] >= 2  # the p=3 job reused both idle executors
    assert report["second_records"] == 3000
    assert report["new_node_used"] and report["second_nodes"] == 3
