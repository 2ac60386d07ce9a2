"""raystream state and checkpoints: keyed/operator state, snapshot format, storage.

Pure Python (no Ray). The task runtime builds a :class:`HeapKeyedStateBackend` per keyed
operator subtask and an :class:`OperatorStateStore` per operator subtask, snapshots them
at barriers, serializes the snapshots and writes them through a :class:`CheckpointStorage`.

Example:
    >>> import tempfile
    >>> from raystream.engine.keygroups import KeyGroupRange
    >>> backend = HeapKeyedStateBackend(KeyGroupRange(0, 127), 128)
    >>> count = backend.get_state(ValueStateDescriptor("count", default=0))
    >>> backend.set_current_key("a"); count.update(count.value() + 1)
    >>> storage = resolve_storage(tempfile.mkdtemp())
    >>> data = serialize_keyed_snapshot(backend.snapshot(1))
    >>> handle = storage.write_state("job", 1, "counter-0", data)
    >>> storage.write_metadata("job", 1, {"counter": [handle]})
    >>> restored = HeapKeyedStateBackend(KeyGroupRange(0, 127), 128)
    >>> restored.restore([deserialize_keyed_snapshot(storage.read_state(handle))])
    >>> restored.num_keys()
    1
"""

from __future__ import annotations

from raystream.engine.state_backend import register_default_state_backend

from .backend import KeyedStateBackend
from .backends import HeapStateBackend, RocksDBStateBackend, state_backend_by_name
from .descriptors import (
    AggregateFunction,
    AggregatingStateDescriptor,
    ListStateDescriptor,
    MapStateDescriptor,
    ReducingStateDescriptor,
    StateDescriptor,
    StateTtlConfig,
    ValueStateDescriptor,
)
from .format import (
    FORMAT_VERSION,
    MAGIC,
    BlobHeader,
    decode_blob,
    encode_blob,
    read_blob_header,
    sign_blob,
    verify_blob_signature,
)
from .heap import HeapKeyedStateBackend
from .operator_state import (
    DroppableState,
    OperatorListState,
    OperatorStateSnapshot,
    OperatorStateStore,
)
from .rocksdb_backend import RocksDBKeyedStateBackend
from .serde import dumps, loads
from .snapshot import (
    KeyedStateSnapshot,
    StateMeta,
    deserialize_keyed_snapshot,
    serialize_keyed_snapshot,
)
from .state import (
    AggregatingState,
    KeyedState,
    ListState,
    MapState,
    ReducingState,
    ValueState,
)
from .storage import (
    METADATA_FILE,
    SECRET_ENV,
    CheckpointStorage,
    IncrementalStateHandle,
    SavepointReader,
    StateHandle,
    resolve_storage,
)

__all__ = [
    # descriptors
    "StateTtlConfig",
    "AggregateFunction",
    "StateDescriptor",
    "ValueStateDescriptor",
    "ListStateDescriptor",
    "MapStateDescriptor",
    "ReducingStateDescriptor",
    "AggregatingStateDescriptor",
    # state objects
    "KeyedState",
    "ValueState",
    "ListState",
    "MapState",
    "ReducingState",
    "AggregatingState",
    # backends
    "KeyedStateBackend",
    "HeapStateBackend",
    "HeapKeyedStateBackend",
    "RocksDBStateBackend",
    "RocksDBKeyedStateBackend",
    "state_backend_by_name",
    "KeyedStateSnapshot",
    "StateMeta",
    "serialize_keyed_snapshot",
    "deserialize_keyed_snapshot",
    "OperatorListState",
    "OperatorStateSnapshot",
    "OperatorStateStore",
    "DroppableState",
    # format and serialization
    "MAGIC",
    "FORMAT_VERSION",
    "BlobHeader",
    "encode_blob",
    "decode_blob",
    "read_blob_header",
    "sign_blob",
    "verify_blob_signature",
    "dumps",
    "loads",
    # storage
    "METADATA_FILE",
    "StateHandle",
    "IncrementalStateHandle",
    "CheckpointStorage",
    "SavepointReader",
    "resolve_storage",
    "SECRET_ENV",
]

register_default_state_backend(HeapStateBackend)
