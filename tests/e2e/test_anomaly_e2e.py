"""End-to-end: the anomaly detector alone rolls a bad one-box back. ``fleetwave
deploy`` runs as a subprocess against the namespace lab (real sshd, agents reading
the demo app's own ``/metrics``, HAProxy), under client load, with no alarm in the
pipeline at all: a release serving 2% errors where the old one served none is caught
at the one-box, before any second host is drained, and explained in the trail."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.e2e.test_watch_e2e import WatchLab, watch_lab  # noqa: F401  (the fixture)
from tests.engine.test_e2e_lab import DEPLOY_TIMEOUT_S

pytestmark = pytest.mark.e2e


def test_errors_0_to_2_percent_on_the_onebox_are_rolled_back_by_the_detector(
    watch_lab: Callable[..., WatchLab],  # noqa: F811
) -> None:
    env = watch_lab(hosts=4)
    data = json.loads(env.pipeline.read_text())
    for key in ("alarms", "rollback_alarm", "onebox_alarm"):
        data.pop(key, None)  # no alarm configured: only the detector can roll back
    data.pop("anomaly")  # the alarm tests turn detection off; here it is on, the default
    data.update(
        {
            "watch": {"source": "agent", "interval": "5s"},
            "onebox": {"bake": {"time": "60s"}},
            "stage_bake": {"time": "5s"},
        }
    )
    env.pipeline.write_text(json.dumps(data))
    env.first_install()
    env.settled("1.0.0")
    bad = env.package("2.0.0", error_rate=0.02)
    with env.fleet.load(workers=6, pause_s=0.005, max_seconds=DEPLOY_TIMEOUT_S) as load:
        load.wait_requests(100)
        proc = env.deploy(bad)
        load.stop()
    assert proc.returncode == 20, proc.stdout + proc.stderr
    status = env.latest()
    assert status["deployment"]["reason"].startswith("anomaly detected in "), status
    trail, steps = env.explain(status["deployment"]["id"])
    judged = [e for e in trail if e["type"] == "AnomalyJudged" and e["outcome"] == "fail"]
    assert judged, trail
    failed: list[dict[str, Any]] = judged[0]["evidence"]["findings"]
    errors = next(f for f in failed if f["check"] == "errors")
    assert errors["outcome"] == "fail"
    assert errors["basis"] == "old_release"
    assert errors["p"] <= errors["threshold"]
    drained = {s["host"] for s in steps if s["kind"] == "intent" and s["name"] == "DrainHost"}
    assert len(drained) == 1, drained  # the one-box only
    text = env.cli("explain", status["deployment"]["id"], check=True).stdout
    assert "anomaly " in text
    assert "vs threshold" in text
    env.settled("1.0.0")
