"""The public surface of ``checkpoint``: everything in ``__all__`` exists, nothing uses Ray."""

from __future__ import annotations

import ast
import pathlib

from raystream import checkpoint


def test_all_names_exist():
    for name in checkpoint.__all__:
        assert hasattr(checkpoint, name), name
    assert len(set(checkpoint.__all__)) == len(checkpoint.__all__)


def test_contract_names_are_exported():
    expected = {
        "ValueStateDescriptor", "ListStateDescriptor", "MapStateDescriptor",
        "ReducingStateDescriptor", "AggregatingStateDescriptor", "AggregateFunction",
        "StateTtlConfig", "HeapKeyedStateBackend", "KeyedStateSnapshot",
        "serialize_keyed_snapshot", "deserialize_keyed_snapshot", "OperatorStateStore",
        "encode_blob", "decode_blob", "CheckpointStorage", "StateHandle", "resolve_storage",
    }  # fmt: skip
    assert expected <= set(checkpoint.__all__)


def test_no_checkpoint_module_imports_ray():
    # a static check: ``engine/__init__`` may import Ray, but checkpoint code itself never does
    root = pathlib.Path(checkpoint.__file__).parent
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not any(n == "ray" or n.startswith("ray.") for n in names), path.name
