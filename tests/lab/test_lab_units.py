"""Pure parts of the lab: names fit the kernel's limits and embed the run id; the
HAProxy config has what the drain tests rely on."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.lab import Backend, LabHaproxy
from tests.lab.net import RunNames

pytestmark = pytest.mark.unit

RUN_IDS = st.text(alphabet="0123456789abcdef", min_size=6, max_size=6)


@given(RUN_IDS, st.integers(min_value=1, max_value=99))
def test_names_fit_and_embed_the_run_id(run_id: str, index: int) -> None:
    names = RunNames(run_id, ipaddress.IPv4Network("10.213.40.0/24"))
    for ifname in (names.bridge, names.veth(index)):
        assert len(ifname) <= 15  # IFNAMSIZ - 1
        assert run_id in ifname
    assert run_id in names.netns(index)
    assert ipaddress.IPv4Address(names.host_ip(index)) in names.subnet
    assert names.host_ip(index) != names.bridge_ip


def test_haproxy_config_checks_health_and_does_not_redispatch() -> None:
    lab = LabHaproxy(Path("/nonexistent"), [Backend("h01", "10.0.0.11", 8080)])
    cfg = lab.render_config()
    assert "option httpchk GET /health" in cfg
    assert "server h01 10.0.0.11:8080" in cfg
    assert "check inter 1s fall 2 rise 2" in cfg
    assert "redispatch" not in cfg
    assert f"bind 127.0.0.1:{lab.frontend_port}" in cfg
