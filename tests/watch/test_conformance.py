"""Both metric sources pass tests/watch/conformance.py against real servers: the agent
source over in-process SSH to the real agent RPC, the Prometheus source against a real
Prometheus scraping a real agent exporter on loopback."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from fleetwave.config.settings import SshSettings
from fleetwave.errors import MetricQueryError, MetricSourceUnavailableError
from fleetwave.transport.ssh import SshTransport
from fleetwave.watch.agent_source import AgentSource
from fleetwave.watch.prometheus_source import PrometheusSource
from fleetwave_agent.appmetrics import AccessLogCollector
from fleetwave_agent.config import AccessLogSource, AgentConfig, AppConfig, ExporterConfig
from fleetwave_agent.daemon import start_http_server
from fleetwave_agent.operations import Agent
from fleetwave_agent.rpc import RpcServer
from tests.inproc.fleet import start_fleet
from tests.lab.prometheus import LabPrometheus
from tests.watch.conformance import Harness, check_source, write_traffic

pytestmark = pytest.mark.integration

SETTINGS = SshSettings(user="deploy", connect_timeout_s=5.0, command_timeout_s=20.0)


def agent_config(root: Path, log: Path) -> AgentConfig:
    log.touch()
    return AgentConfig(
        root=root,
        app=AppConfig(metrics=AccessLogSource(log)),
        exporter=ExporterConfig(health_interval_s=3600.0),
    )


def test_agent_source_conformance_over_real_rpc(tmp_path: Path) -> None:
    log = tmp_path / "access.log"

    async def main() -> None:
        fleet = await start_fleet(
            1, tmp_path / "hosts", lambda root: RpcServer(Agent(agent_config(root, log)))
        )
        try:
            transport = SshTransport(
                SETTINGS, client_keys=[fleet.client_key], known_hosts=fleet.known_hosts()
            )
            host = fleet.hosts[0]
            source = AgentSource(transport, [host.ref()], clock=time.time)

            async def settle() -> float:
                await asyncio.sleep(0.3)  # snapshots must have distinct times
                report = await source.poll()
                assert report.failed == {}
                return time.time()

            harness = Harness(source, host.name, lambda t: write_traffic(log, t), settle)
            async with asyncio.timeout(60):
                await check_source(harness)
                # One session per host, of its own, reused across polls.
                assert host.connections == 1
                assert set(host.requests) == {"snapshot"}
            await source.close()
            await transport.close()
        finally:
            await fleet.close()

    asyncio.run(main())


@pytest.fixture
def prometheus(tmp_path: Path):
    if shutil.which("prometheus") is None:
        pytest.skip("needs the prometheus binary")
    prom = LabPrometheus(tmp_path / "prom")
    prom.start()
    try:
        yield prom
    finally:
        prom.stop()


def test_prometheus_source_conformance_against_real_prometheus(tmp_path, prometheus) -> None:
    log = tmp_path / "access.log"
    log.touch()
    # The agent exporter's own collector for an access log, served as `serve` serves it.
    collector = AccessLogCollector(AccessLogSource(log))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    server, thread = start_http_server("127.0.0.1", 0, registry)
    port = server.server_port
    try:
        prometheus.set_targets("agents", [f"127.0.0.1:{port}"], {"host": "h1"})
        prometheus.wait_for('fleetwave_agent_app_requests_total{host="h1"}', timeout=40)
        source = PrometheusSource(prometheus.url)

        async def settle() -> float:
            await asyncio.sleep(3.0)  # three scrapes at 1 s
            return time.time()

        harness = Harness(source, "h1", lambda t: write_traffic(log, t), settle)
        asyncio.run(asyncio.wait_for(check_source(harness), 90))
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        collector.tailer.close()


def test_prometheus_alerts_firing_not_pending_and_typed_errors(tmp_path, prometheus) -> None:
    rules = tmp_path / "rules.yml"
    rules.write_text(
        json.dumps(
            {
                "groups": [
                    {
                        "name": "t",
                        "rules": [
                            {"alert": "AlwaysFiring", "expr": "vector(1)"},
                            {"alert": "OnlyPending", "expr": "vector(1)", "for": "1h"},
                        ],
                    }
                ]
            }
        )
    )
    config = json.loads(prometheus.config_path.read_text())
    config["rule_files"] = [str(rules)]
    prometheus.config_path.write_text(json.dumps(config))
    request = urllib.request.Request(f"{prometheus.url}/-/reload", method="POST")
    with urllib.request.urlopen(request, timeout=5):
        pass
    prometheus.wait_for('ALERTS{alertname="AlwaysFiring", alertstate="firing"}', timeout=30)
    prometheus.wait_for('ALERTS{alertname="OnlyPending"}', timeout=30)
    source = PrometheusSource(prometheus.url)

    async def checks() -> None:
        assert await source.alert_firing("AlwaysFiring") is True
        assert await source.alert_firing("OnlyPending") is False  # pending never fires
        assert await source.alert_firing("NoSuchRule") is False
        with pytest.raises(MetricQueryError) as info:
            await source.instant("sum(")
        assert info.value.error_type == "bad_data"
        nan = await source.range("0/0", time.time() - 2, time.time(), 1.0)
        assert all(v != v for v in nan.values())  # NaN reaches clean(), which drops it
        down = PrometheusSource("http://127.0.0.1:1", timeout_s=1.0)
        with pytest.raises(MetricSourceUnavailableError):
            await down.instant("up")

    asyncio.run(checks())
