"""The command driver's failure modes: each is one LoadBalancerError naming the server."""

from __future__ import annotations

import asyncio
import sys

import pytest

from fleetwave.errors import LoadBalancerError
from fleetwave.lb.base import ServerRef, ServerState
from fleetwave.lb.command import CommandLoadBalancer

pytestmark = pytest.mark.integration

REF = ServerRef("edge", "web", "h7")


def py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def driver(status_code: str, *, timeout_s: float = 10.0) -> CommandLoadBalancer:
    return CommandLoadBalancer(
        "edge",
        drain=py("pass"),
        ready=py("pass"),
        status=py(status_code),
        timeout_s=timeout_s,
    )


def test_placeholders_are_replaced() -> None:
    lb = driver(
        "import sys, json; assert sys.argv[1:] == ['web', 'h7', 'edge'], sys.argv;"
        "print(json.dumps({'state': 'drain', 'sessions': 2, 'healthy': False}))"
    )
    lb._commands["status"] += ("{backend}", "{server}", "{lb}")
    status = asyncio.run(lb.status(REF))
    assert (status.state, status.sessions, status.healthy) == (ServerState.DRAIN, 2, False)


def test_non_zero_exit_carries_stderr_tail() -> None:
    lb = driver("import sys; print('a\\nb\\nbackend web is on fire', file=sys.stderr); sys.exit(3)")
    with pytest.raises(LoadBalancerError, match=r"edge:web/h7: status command exited 3: .*on fire"):
        asyncio.run(lb.status(REF))


@pytest.mark.parametrize(
    "output",
    ["not json", '{"state": "up", "sessions": 0}', '{"state": "ready", "sessions": -1}', "[]"],
)
def test_unreadable_status_output(output: str) -> None:
    lb = driver(f"print({output!r})")
    with pytest.raises(LoadBalancerError, match="edge:web/h7: status command printed"):
        asyncio.run(lb.status(REF))


def test_timeout_kills_the_command() -> None:
    lb = driver("import time; time.sleep(30)", timeout_s=0.3)
    with pytest.raises(LoadBalancerError, match=r"timed out after 0\.3s"):
        asyncio.run(lb.status(REF))


def test_missing_program() -> None:
    lb = CommandLoadBalancer("edge", drain=["/nonexistent/drain"], ready=["r"], status=["s"])
    with pytest.raises(LoadBalancerError, match="drain command '/nonexistent/drain'"):
        asyncio.run(lb.drain(REF, timeout_s=1))
