"""``UserProfile`` of the flink-statefun-playground showcase (``showcase_custom_types.proto``),
as ``protoc --python_out`` would generate it, for the showcase tests.

The message is built at import from its descriptor, like a generated ``_pb2`` module, but in
a private descriptor pool (no clash with any other registration of the same full name). The
classes get this module as ``__module__``, so they pickle by reference (Ray task actors
import this module to run embedded functions that use them).

The playground's ``.proto`` spells the fields ``favourite_*`` while its ``__main__.py`` sets
``favorite_*``; here the fields are named as the code uses them.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.internal import builder as _builder

__all__ = ["UserProfile", "DESCRIPTOR"]

PACKAGE = "org.apache.flink.statefun.playground.showcase"


def _file() -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto(name="showcase_custom_types.proto", package=PACKAGE, syntax="proto3")
    message = proto.message_type.add(name="UserProfile")
    for number, name in enumerate(("name", "favorite_ice_cream", "favorite_tv_show"), start=1):
        message.field.add(
            name=name,
            number=number,
            type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
            label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
            json_name=name,
        )
    return proto


DESCRIPTOR = descriptor_pool.DescriptorPool().AddSerializedFile(_file().SerializeToString())
_globals: dict = {}
_builder.BuildMessageAndEnumDescriptors(DESCRIPTOR, _globals)
_builder.BuildTopDescriptorsAndMessages(DESCRIPTOR, __name__, _globals)
UserProfile = _globals["UserProfile"]
