"""The public surface of statefun_api: what is exported, and that it mirrors the SDK's names."""

from __future__ import annotations

from raystream import statefun_api

# the names `from statefun import *` gives in the official SDK 3.3.0
SDK_NAMES = {
    "TypeSerializer",
    "Type",
    "simple_type",
    "ValueSpec",
    "SdkAddress",
    "BoolType",
    "IntType",
    "FloatType",
    "DoubleType",
    "LongType",
    "StringType",
    "Message",
    "EgressMessage",
    "message_builder",
    "egress_message_builder",
    "kafka_egress_message",
    "kinesis_egress_message",
    "Context",
    "StatefulFunctions",
    "RequestReplyHandler",
    "make_protobuf_type",
    "make_json_type",
}


def test_all_names_exist() -> None:
    for name in statefun_api.__all__:
        assert hasattr(statefun_api, name), name
    assert len(set(statefun_api.__all__)) == len(statefun_api.__all__)


def test_sdk_names_are_exported() -> None:
    assert SDK_NAMES <= set(statefun_api.__all__)


def test_sdk_star_import_is_covered() -> None:
    statefun = __import__("pytest").importorskip("statefun")
    namespace: dict = {}
    exec("from statefun import *", namespace)
    sdk = {k for k, v in namespace.items() if not k.startswith("__") and not isinstance(v, type(statefun))}
    assert sdk - set(statefun_api.__all__) == set(), "names of the SDK missing from statefun_api"


def test_star_import_gives_exactly_all() -> None:
    namespace: dict = {}
    exec("from raystream.statefun_api import *", namespace)
    assert {k for k in namespace if not k.startswith("__")} == set(statefun_api.__all__)


def test_submodules_declare_all() -> None:
    import importlib
    import pkgutil

    for info in pkgutil.iter_modules(statefun_api.__path__):
        module = importlib.import_module(f"statefun_api.{info.name}")
        assert isinstance(getattr(module, "__all__", None), list), info.name


def test_docstring_examples_run() -> None:
    import doctest
    import importlib
    import pkgutil

    for info in pkgutil.iter_modules(statefun_api.__path__):
        module = importlib.import_module(f"statefun_api.{info.name}")
        failures, _ = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert failures == 0, info.name
    assert doctest.testmod(statefun_api)[0] == 0
