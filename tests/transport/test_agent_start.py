"""The agent's hello has its own deadline (ssh.agent_start_timeout_s).

A real asyncssh server on loopback port 0 whose session never says hello (an agent
stuck starting up, e.g. 100 agents starting at once on 2 CPUs): the transport must
give up after ``agent_start_timeout_s``, not after ``connect_timeout_s``.
"""

from __future__ import annotations

import asyncio

import asyncssh
import pytest

from fleetwave.config.settings import SshSettings
from fleetwave.errors import AgentCallTimeoutError
from fleetwave.planning.model import HostRef
from fleetwave.transport.retry import RetryPolicy
from fleetwave.transport.ssh import ErrorKind, SshTransport
from fleetwave_agent.rpc_protocol import encode_hello

from ..sshserver import start_loopback_ssh

pytestmark = pytest.mark.integration


def test_default_agent_start_timeout_is_separate_from_connect_timeout() -> None:
    settings = SshSettings()
    assert settings.agent_start_timeout_s == 30.0
    assert settings.agent_start_timeout_s > settings.connect_timeout_s


async def _run_against(hello_delay_s: float | None, settings: SshSettings) -> str:
    """Connect to a server whose agent says hello after ``hello_delay_s`` (None: never).

    Returns "hello" or the AgentCallTimeoutError's message.
    """

    async def agent(process: asyncssh.SSHServerProcess[bytes]) -> None:
        if hello_delay_s is None:
            await asyncio.sleep(3600)  # cancelled when the client aborts
        else:
            await asyncio.sleep(hello_delay_s)
            process.stdout.write(encode_hello("0.0.0-test"))
        await process.stdin.read()
        process.exit(0)

    ssh = await start_loopback_ssh(agent)
    transport = SshTransport(
        settings,
        client_keys=[ssh.client_key],
        known_hosts=ssh.known_hosts,
        retry=RetryPolicy(retries=0, base_delay_s=0.01, max_delay_s=0.01),
    )
    host = HostRef("slow", "127.0.0.1", "r", "a", ssh_user="deploy", ssh_port=ssh.port)
    try:
        async with asyncio.timeout(20):  # bound: far below any 3600 s sleep
            try:
                session = await transport.open(host)
            except AgentCallTimeoutError as exc:
                assert transport.errors.count(ErrorKind.TIMEOUT) == 1
                return str(exc)
            assert session.hello["agent_version"] == "0.0.0-test"
            return "hello"
    finally:
        await transport.close()
        await ssh.close()


def test_silent_agent_times_out_under_agent_start_timeout() -> None:
    # connect_timeout_s is long: only agent_start_timeout_s can end this within the bound.
    settings = SshSettings(user="deploy", connect_timeout_s=60.0, agent_start_timeout_s=0.5)
    message = asyncio.run(_run_against(None, settings))
    assert "agent_start_timeout_s" in message
    assert "0.5s" in message


def test_slow_agent_start_within_its_deadline_is_fine() -> None:
    # The hello comes later than a short connect timeout would allow for the agent, but
    # well within agent_start_timeout_s.
    settings = SshSettings(user="deploy", connect_timeout_s=10.0, agent_start_timeout_s=15.0)
    assert asyncio.run(_run_against(0.3, settings)) == "hello"
