"""StateFun's request-reply messages as protobuf (upb) classes, for the runtime's remote calls.

The engine's remote-function client (:mod:`statefun_api.remote`) encodes each request and
decodes each reply with the protobuf runtime that comes with Ray (the upb C extension)
rather than with the hand-written :mod:`statefun_api._protowire`: measured on the same
messages, upb encodes a ``ToFunction`` about 3x faster and parses a ``FromFunction`` about
3x faster (``benchmarks/RESULTS.md``, stop 18). The SDK surface (handler, server, testing)
keeps ``_protowire``, so it needs no protobuf runtime.

The classes live in a **private descriptor pool** built from ``request-reply.proto``'s
serialized ``FileDescriptorProto`` (Apache Flink StateFun 3.x, unchanged since 3.0), so
they coexist with the official SDK's own classes of the same full names
(``io.statefun.sdk.reqreply.*``) in one process. The bytes are identical to the SDK's.

Example:
    >>> req = ToFunctionPb()
    >>> req.invocation.target.namespace = "a"
    >>> FromFunctionPb.FromString(b"").WhichOneof("response") is None
    True
"""

from __future__ import annotations

import base64
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

__all__ = ["ToFunctionPb", "FromFunctionPb", "DecodeError", "FILE_DESCRIPTOR", "MODIFY", "DELETE"]

#: ``request-reply.proto`` (package ``io.statefun.sdk.reqreply``), serialized FileDescriptorProto
FILE_DESCRIPTOR = base64.b64decode(
    "ChNyZXF1ZXN0LXJlcGx5LnByb3RvEhhpby5zdGF0ZWZ1bi5zZGsucmVxcmVwbHkiNgoHQWRkcmVzcxIRCgluYW1lc3BhY2UY"
    "ASABKAkSDAoEdHlwZRgCIAEoCRIKCgJpZBgDIAEoCSJACgpUeXBlZFZhbHVlEhAKCHR5cGVuYW1lGAEgASgJEhEKCWhhc192"
    "YWx1ZRgCIAEoCBINCgV2YWx1ZRgDIAEoDCKcBAoKVG9GdW5jdGlvbhJRCgppbnZvY2F0aW9uGGQgASgLMjsuaW8uc3RhdGVm"
    "dW4uc2RrLnJlcXJlcGx5LlRvRnVuY3Rpb24uSW52b2NhdGlvbkJhdGNoUmVxdWVzdEgAGl8KDlBlcnNpc3RlZFZhbHVlEhIK"
    "CnN0YXRlX25hbWUYASABKAkSOQoLc3RhdGVfdmFsdWUYAiABKAsyJC5pby5zdGF0ZWZ1bi5zZGsucmVxcmVwbHkuVHlwZWRW"
    "YWx1ZRp3CgpJbnZvY2F0aW9uEjEKBmNhbGxlchgBIAEoCzIhLmlvLnN0YXRlZnVuLnNkay5yZXFyZXBseS5BZGRyZXNzEjYK"
    "CGFyZ3VtZW50GAIgASgLMiQuaW8uc3RhdGVmdW4uc2RrLnJlcXJlcGx5LlR5cGVkVmFsdWUa1QEKFkludm9jYXRpb25CYXRj"
    "aFJlcXVlc3QSMQoGdGFyZ2V0GAEgASgLMiEuaW8uc3RhdGVmdW4uc2RrLnJlcXJlcGx5LkFkZHJlc3MSQgoFc3RhdGUYAiAD"
    "KAsyMy5pby5zdGF0ZWZ1bi5zZGsucmVxcmVwbHkuVG9GdW5jdGlvbi5QZXJzaXN0ZWRWYWx1ZRJECgtpbnZvY2F0aW9ucxgD"
    "IAMoCzIvLmlvLnN0YXRlZnVuLnNkay5yZXFyZXBseS5Ub0Z1bmN0aW9uLkludm9jYXRpb25CCQoHcmVxdWVzdCK8DQoMRnJv"
    "bUZ1bmN0aW9uElYKEWludm9jYXRpb25fcmVzdWx0GGQgASgLMjkuaW8uc3RhdGVmdW4uc2RrLnJlcXJlcGx5LkZyb21GdW5j"
    "dGlvbi5JbnZvY2F0aW9uUmVzcG9uc2VIABJrCh1pbmNvbXBsZXRlX2ludm9jYXRpb25fY29udGV4dBhlIAEoCzJCLmlvLnN0"
    "YXRlZnVuLnNkay5yZXFyZXBseS5Gcm9tRnVuY3Rpb24uSW5jb21wbGV0ZUludm9jYXRpb25Db250ZXh0SAAa8gEKFlBlcnNp"
    "c3RlZFZhbHVlTXV0YXRpb24SYQoNbXV0YXRpb25fdHlwZRgBIAEoDjJKLmlvLnN0YXRlZnVuLnNkay5yZXFyZXBseS5Gcm9t"
    "RnVuY3Rpb24uUGVyc2lzdGVkVmFsdWVNdXRhdGlvbi5NdXRhdGlvblR5cGUSEgoKc3RhdGVfbmFtZRgCIAEoCRI5CgtzdGF0"
    "ZV92YWx1ZRgDIAEoCzIkLmlvLnN0YXRlZnVuLnNkay5yZXFyZXBseS5UeXBlZFZhbHVlIiYKDE11dGF0aW9uVHlwZRIKCgZE"
    "RUxFVEUQABIKCgZNT0RJRlkQARp3CgpJbnZvY2F0aW9uEjEKBnRhcmdldBgBIAEoCzIhLmlvLnN0YXRlZnVuLnNkay5yZXFy"
    "ZXBseS5BZGRyZXNzEjYKCGFyZ3VtZW50GAIgASgLMiQuaW8uc3RhdGVmdW4uc2RrLnJlcXJlcGx5LlR5cGVkVmFsdWUa0AEK"
    "EURlbGF5ZWRJbnZvY2F0aW9uEh8KF2lzX2NhbmNlbGxhdGlvbl9yZXF1ZXN0GAogASgIEhoKEmNhbmNlbGxhdGlvbl90b2tl"
    "bhgLIAEoCRITCgtkZWxheV9pbl9tcxgBIAEoAxIxCgZ0YXJnZXQYAiABKAsyIS5pby5zdGF0ZWZ1bi5zZGsucmVxcmVwbHku"
    "QWRkcmVzcxI2Cghhcmd1bWVudBgDIAEoCzIkLmlvLnN0YXRlZnVuLnNkay5yZXFyZXBseS5UeXBlZFZhbHVlGnYKDUVncmVz"
    "c01lc3NhZ2USGAoQZWdyZXNzX25hbWVzcGFjZRgBIAEoCRITCgtlZ3Jlc3NfdHlwZRgCIAEoCRI2Cghhcmd1bWVudBgDIAEo"
    "CzIkLmlvLnN0YXRlZnVuLnNkay5yZXFyZXBseS5UeXBlZFZhbHVlGuICChJJbnZvY2F0aW9uUmVzcG9uc2USVgoPc3RhdGVf"
    "bXV0YXRpb25zGAEgAygLMj0uaW8uc3RhdGVmdW4uc2RrLnJlcXJlcGx5LkZyb21GdW5jdGlvbi5QZXJzaXN0ZWRWYWx1ZU11"
    "dGF0aW9uEkwKEW91dGdvaW5nX21lc3NhZ2VzGAIgAygLMjEuaW8uc3RhdGVmdW4uc2RrLnJlcXJlcGx5LkZyb21GdW5jdGlv"
    "bi5JbnZvY2F0aW9uElUKE2RlbGF5ZWRfaW52b2NhdGlvbnMYAyADKAsyOC5pby5zdGF0ZWZ1bi5zZGsucmVxcmVwbHkuRnJv"
    "bUZ1bmN0aW9uLkRlbGF5ZWRJbnZvY2F0aW9uEk8KEW91dGdvaW5nX2VncmVzc2VzGAQgAygLMjQuaW8uc3RhdGVmdW4uc2Rr"
    "LnJlcXJlcGx5LkZyb21GdW5jdGlvbi5FZ3Jlc3NNZXNzYWdlGrgBCg5FeHBpcmF0aW9uU3BlYxJOCgRtb2RlGAEgASgOMkAu"
    "aW8uc3RhdGVmdW4uc2RrLnJlcXJlcGx5LkZyb21GdW5jdGlvbi5FeHBpcmF0aW9uU3BlYy5FeHBpcmVNb2RlEhsKE2V4cGly"
    "ZV9hZnRlcl9taWxsaXMYAiABKAMiOQoKRXhwaXJlTW9kZRIICgROT05FEAASDwoLQUZURVJfV1JJVEUQARIQCgxBRlRFUl9J"
    "TlZPS0UQAhqPAQoSUGVyc2lzdGVkVmFsdWVTcGVjEhIKCnN0YXRlX25hbWUYASABKAkSTgoPZXhwaXJhdGlvbl9zcGVjGAIg"
    "ASgLMjUuaW8uc3RhdGVmdW4uc2RrLnJlcXJlcGx5LkZyb21GdW5jdGlvbi5FeHBpcmF0aW9uU3BlYxIVCg10eXBlX3R5cGVu"
    "YW1lGAMgASgJGnAKG0luY29tcGxldGVJbnZvY2F0aW9uQ29udGV4dBJRCg5taXNzaW5nX3ZhbHVlcxgBIAMoCzI5LmlvLnN0"
    "YXRlZnVuLnNkay5yZXFyZXBseS5Gcm9tRnVuY3Rpb24uUGVyc2lzdGVkVmFsdWVTcGVjQgoKCHJlc3BvbnNlQkAKMG9yZy5h"
    "cGFjaGUuZmxpbmsuc3RhdGVmdW4uc2RrLnJlcXJlcGx5LmdlbmVyYXRlZFABWgouO3Byb3RvY29sYgZwcm90bzM="
)

_pool = descriptor_pool.DescriptorPool()
_pool.Add(descriptor_pb2.FileDescriptorProto.FromString(FILE_DESCRIPTOR))
ToFunctionPb: Any = message_factory.GetMessageClass(_pool.FindMessageTypeByName("io.statefun.sdk.reqreply.ToFunction"))
FromFunctionPb: Any = message_factory.GetMessageClass(_pool.FindMessageTypeByName("io.statefun.sdk.reqreply.FromFunction"))

try:
    from google.protobuf.message import DecodeError
except ImportError:  # pragma: no cover - every protobuf release has it
    DecodeError = ValueError  # type: ignore[misc,assignment]

#: ``FromFunction.PersistedValueMutation.MutationType``
DELETE = 0
MODIFY = 1
