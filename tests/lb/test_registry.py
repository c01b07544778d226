"""Building drivers from settings: each bad option is one ConfigError naming its key."""

from __future__ import annotations

from typing import Any

import pytest

from fleetwave.config.settings import LoadBalancerSettings
from fleetwave.errors import ConfigError
from fleetwave.lb.command import CommandLoadBalancer
from fleetwave.lb.haproxy import HaproxyLoadBalancer, SshChannel, TcpChannel, UnixChannel
from fleetwave.lb.none import NoLoadBalancer
from fleetwave.lb.registry import create_load_balancer

pytestmark = pytest.mark.unit

CMD = {"drain": ["d", "{server}"], "ready": ["r"], "status": ["s"]}


def build(driver: str, options: dict[str, Any]) -> Any:
    return create_load_balancer(LoadBalancerSettings("edge", driver, options))


def test_good_settings_build_each_driver() -> None:
    unix = build("haproxy", {"socket": "/run/haproxy/admin.sock"})
    assert isinstance(unix, HaproxyLoadBalancer)
    assert isinstance(unix.channel, UnixChannel)
    tcp = build("haproxy", {"tcp": "127.0.0.1:9999", "poll_interval_s": 1})
    assert isinstance(tcp.channel, TcpChannel)
    assert (tcp.channel.host, tcp.channel.port) == ("127.0.0.1", 9999)
    ssh = build("haproxy", {"ssh": {"host": "lb1", "user": "ops", "socket": "/run/h.sock"}})
    assert isinstance(ssh.channel, SshChannel)
    assert isinstance(build("command", CMD), CommandLoadBalancer)
    none = build("none", {})
    assert isinstance(none, NoLoadBalancer)
    assert none.name == "edge"


@pytest.mark.parametrize(
    ("driver", "options", "key_path", "fragment"),
    [
        ("f5", {}, "load_balancers.edge.driver", "unknown driver 'f5'"),
        ("haproxy", {}, "load_balancers.edge.options.socket", "exactly one of"),
        (
            "haproxy",
            {"socket": "/a", "tcp": "h:1"},
            "load_balancers.edge.options.socket",
            "exactly one",
        ),
        ("haproxy", {"socket": ""}, "load_balancers.edge.options.socket", "non-empty string"),
        ("haproxy", {"tcp": "nohost"}, "load_balancers.edge.options.tcp", "host:port"),
        ("haproxy", {"tcp": "h:70000"}, "load_balancers.edge.options.tcp", "host:port"),
        (
            "haproxy",
            {"socket": "/a", "sockt": 1},
            "load_balancers.edge.options.sockt",
            "unknown option",
        ),
        (
            "haproxy",
            {"socket": "/a", "poll_interval_s": "1s"},
            "load_balancers.edge.options.poll_interval_s",
            "number",
        ),
        ("haproxy", {"ssh": "lb1"}, "load_balancers.edge.options.ssh", "mapping"),
        (
            "haproxy",
            {"ssh": {"socket": "/s"}},
            "load_balancers.edge.options.ssh.host",
            "required",
        ),
        (
            "haproxy",
            {"ssh": {"host": "h"}},
            "load_balancers.edge.options.ssh.socket",
            "required",
        ),
        (
            "haproxy",
            {"ssh": {"host": "h", "socket": "/s", "port": 0}},
            "load_balancers.edge.options.ssh.port",
            "1..65535",
        ),
        (
            "command",
            {"ready": ["r"], "status": ["s"]},
            "load_balancers.edge.options.drain",
            "required",
        ),
        ("command", {**CMD, "ready": "r"}, "load_balancers.edge.options.ready", "list of strings"),
        ("command", {**CMD, "status": []}, "load_balancers.edge.options.status", "list of strings"),
        ("command", {**CMD, "timeout_s": 0}, "load_balancers.edge.options.timeout_s", "at least"),
        ("command", {**CMD, "timeout_s": True}, "load_balancers.edge.options.timeout_s", "number"),
        ("none", {"x": 1}, "load_balancers.edge.options.x", "unknown option"),
    ],
)
def test_bad_settings(driver: str, options: dict[str, Any], key_path: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        build(driver, options)
    assert info.value.key_path == key_path
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)
