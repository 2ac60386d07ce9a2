"""Checkpoint storage that is a directory of each node's own, on a multi-node cluster.

Tasks write their state files where they run and the job master reads them on its node when
it restores, so with a ``checkpoint_dir`` on each node's own disk (``/tmp/chk``, or the default
``<tmp>/raystream-checkpoints``) every checkpoint "completed" and none could be restored:
before 2026-12-07 the job ran until its first failure (a lost node, a killed executor) and
then failed for good with ``CheckpointError: checkpoints completed ... but none can be read
back``, nothing naming the cause. Now the submission is refused with a ``ConfigError`` naming
the directory, the nodes and the remedy (a shared file system or an object store URI).

The nodes of ``ray.cluster_utils.Cluster`` share this machine's disk, so a node-local
directory is simulated by a ``pyarrow`` filesystem whose root is a directory per Ray node (the
node of the process that uses it). As in ``test_cluster_two_nodes``: this pytest process
already drives the session's local Ray, so the cluster and its driver run in a subprocess,
which prints one JSON report.
"""

from __future__ import annotations

import textwrap

from tests.cluster_script import run_cluster_script

SCRIPT = textwrap.dedent('''
    import json, os, tempfile
    import pyarrow.fs as pafs
    import ray
    from ray.cluster_utils import Cluster
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy


    class NodeLocal(pafs.FileSystemHandler):
        """A local directory of each Ray node's own: <root>/<node id>/..."""

        def __init__(self, root):
            self.root = root

        def _fs(self):
            d = os.path.join(self.root, ray.get_runtime_context().get_node_id()[:12])
            os.makedirs(d, exist_ok=True)
            return pafs.SubTreeFileSystem(d, pafs.LocalFileSystem())

        def __eq__(self, other):
            return isinstance(other, NodeLocal) and other.root == self.root

        def __ne__(self, other):
            return not self == other

        def get_type_name(self): return "nodelocal"
        def normalize_path(self, p): return p
        def get_file_info(self, paths): return self._fs().get_file_info(paths)
        def get_file_info_selector(self, sel): return self._fs().get_file_info(sel)
        def create_dir(self, p, recursive): return self._fs().create_dir(p, recursive=recursive)
        def delete_dir(self, p): return self._fs().delete_dir(p)
        def delete_dir_contents(self, p, missing_dir_ok=False):
            return self._fs().delete_dir_contents(p, missing_dir_ok=missing_dir_ok)
        def delete_root_dir_contents(self): return self._fs().delete_dir_contents("", accept_root_dir=True)
        def delete_file(self, p): return self._fs().delete_file(p)
        def move(self, s, d): return self._fs().move(s, d)
        def copy_file(self, s, d): return self._fs().copy_file(s, d)
        def open_input_stream(self, p): return self._fs().open_input_stream(p)
        def open_input_file(self, p): return self._fs().open_input_file(p)
        def open_output_stream(self, p, metadata): return self._fs().open_output_stream(p, metadata=metadata)
        def open_append_stream(self, p, metadata): return self._fs().open_append_stream(p, metadata=metadata)


    temp = tempfile.mkdtemp(prefix="rc", dir="/tmp")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False,
                                                            "temp_dir": temp})
    cluster.add_node(num_cpus=1)
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
        import raystream as rs

        def job(checkpoint_dir):
            env = rs.StreamEnvironment(parallelism=2)
            env.enable_checkpointing(100, checkpoint_dir=checkpoint_dir)
            env.from_collection(list(range(100))).map(lambda x: x * 2).collect()
            return env

        report = {"nodes": len(node_ids)}
        local_root = tempfile.mkdtemp()
        try:
            job((pafs.PyFileSystem(NodeLocal(local_root)), "chk")).execute("node-local")
            report["local"] = "ran"
        except rs.ConfigError as exc:
            report["local"] = str(exc)
        # probe files left behind on any node
        report["probes_left"] = [f for _, _, files in os.walk(local_root) for f in files
                                 if f.startswith("_raystream-probe-")]
        # the same driver, its pool intact: a shared directory runs (and is checked once)
        shared = tempfile.mkdtemp()
        out = job(shared).execute_and_collect("shared")
        report["shared_correct"] = sorted(out) == [x * 2 for x in range(100)]
        out = job(shared).execute_and_collect("shared-again")
        report["again_correct"] = sorted(out) == [x * 2 for x in range(100)]
        report["shared_probes_left"] = [f for f in os.listdir(shared) if f.startswith("_raystream-probe-")]
        print(json.dumps(report))
        rs.shutdown_workers()
    finally:
        ray.shutdown()
        cluster.shutdown()
''')


def test_a_checkpoint_dir_of_each_nodes_own_is_refused_at_submit_naming_it_and_the_remedy():
    report = run_cluster_script(SCRIPT, timeout_s=600)
    assert report["nodes"] == 2
    error = report["local"]
    assert error != "ran", "a job checkpointing into a directory of each node's own was not refused"
    assert "'chk' (on a py::nodelocal filesystem) is not shared by the nodes" in error, error
    assert "object store URI" in error and "same path" in error, error
    assert report["probes_left"] == []
    assert report["shared_correct"] and report["again_correct"]
    assert report["shared_probes_left"] == []
