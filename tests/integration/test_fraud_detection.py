"""The fraud-detection job on Ray at parallelism 2 equals the plain-Python reference."""

from __future__ import annotations

import raystream as rs
from raystream.jobs import fraud_detection as fd


def test_fraud_detection_job_on_ray():
    args = fd.parse_args(["--transactions", "20000"])
    env = rs.StreamEnvironment(parallelism=2)
    alerts = fd.build(env, args).execute_and_collect("fraud")
    expected = fd.reference_alerts(fd.transaction(i) for i in range(20_000))
    assert expected
    key = lambda a: (a["ts"], a["account"])  # noqa: E731
    assert sorted(alerts, key=key) == sorted(expected, key=key)
