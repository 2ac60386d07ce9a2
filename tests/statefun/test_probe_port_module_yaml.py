"""A StateFun module.yaml ported as it is: its fields mean what they mean on StateFun.

StateFun reads every duration of an endpoint (``timeouts``, ``transport.call``,
``transport.connect``, ``transport.pool_ttl``) as text through Flink's
``TimeUtils.parseDuration`` (``StateFunObjectMapper.DurationJsonDeserializer``), so a bare
number, quoted or not, is milliseconds: ``call: 120000`` is two minutes.
"""

from __future__ import annotations

import pytest

from raystream.engine.errors import ConfigError
from raystream.statefun_api.endpoints import load_module_yaml, parse_module_yaml

NUMBERS = """\
kind: io.statefun.endpoints.v2/http
spec:
  functions: example/*
  urlPathTemplate: http://functions:8000/statefun
  transport:
    type: io.statefun.transports.v1/async
    call: 120000
    connect: 2000
    pool_ttl: 15000
"""


def test_a_bare_number_of_milliseconds_in_a_module_yaml_is_milliseconds(tmp_path):
    path = tmp_path / "module.yaml"
    path.write_text(NUMBERS)
    (endpoint,) = load_module_yaml(path)
    # as on StateFun: 2 min, 2 s, 15 s (it used to be 120,000 s, 2,000 s and 15,000 s)
    assert (endpoint.call_timeout_s, endpoint.connect_timeout_s, endpoint.pool_ttl_s) == (120.0, 2.0, 15.0)
    quoted = NUMBERS.replace("120000", "'120000'").replace("2000\n", "'2000'\n").replace("15000", "'15000'")
    (same,) = parse_module_yaml(quoted)
    assert (same.call_timeout_s, same.connect_timeout_s, same.pool_ttl_s) == (120.0, 2.0, 15.0)


@pytest.mark.parametrize(
    "section",
    [
        "  timeouts:\n    call: 90000\n    connect: 500\n    read: 3000\n    write: 4000\n",
        "  transport:\n    type: io.statefun.transports.v1/okhttp\n    timeouts:\n      call: 90000\n      connect: 500\n      read: 3000\n      write: 4000\n",
    ],
)
def test_bare_numbers_in_timeouts_are_milliseconds(section):
    text = "kind: io.statefun.endpoints.v2/http\nspec:\n  functions: example/*\n  urlPathTemplate: http://f:8000/statefun\n" + section
    (endpoint,) = parse_module_yaml(text)
    assert (endpoint.call_timeout_s, endpoint.connect_timeout_s, endpoint.read_timeout_s, endpoint.write_timeout_s) == (
        90.0,
        0.5,
        3.0,
        4.0,
    )


def test_a_legacy_module_and_the_backoff_read_bare_numbers_as_milliseconds():
    legacy = """\
version: "3.0"
module:
  meta:
    type: remote
  spec:
    endpoints:
      - endpoint:
          meta:
            kind: http
          spec:
            functions: example/*
            urlPathTemplate: http://functions:8000/statefun
            timeouts:
              call: 60000
            backoff:
              initial: 20
              max: 1000
"""
    (endpoint,) = parse_module_yaml(legacy)
    assert (endpoint.call_timeout_s, endpoint.backoff_initial_s, endpoint.backoff_max_s) == (60.0, 0.02, 1.0)


def test_a_zero_or_negative_number_is_refused_naming_the_field():
    with pytest.raises(ConfigError, match=r"'spec.transport.call'.*positive"):
        parse_module_yaml(NUMBERS.replace("120000", "0"))
    with pytest.raises(ConfigError, match=r"'spec.transport.connect'.*cannot parse duration '-5'"):
        parse_module_yaml(NUMBERS.replace("2000\n", "-5\n"))
