"""Fixtures for the agent runtime tests: keys, real signed packages, agent roots."""

from __future__ import annotations

import contextlib
import http.server
import os
import socket
import stat
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from fleetwave_agent.config import AgentConfig, StopFailurePolicy
from fleetwave_agent.keys import generate_keypair
from fleetwave_agent.operations import Agent
from fleetwave_agent.package import build_package

AGENT_DIR = Path(__file__).resolve().parents[2] / "agent"

#: Appends "HOOK VERSION" to ROOT/run/trace, so tests can assert the order hooks ran in.
TRACE = 'echo "$FLEETWAVE_HOOK $FLEETWAVE_VERSION" >> "$FLEETWAVE_RUN_DIR/trace"\n'


@pytest.fixture(autouse=True)
def _private_config_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the agent's config cache (``$XDG_CACHE_HOME``) out of the real home."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def agent_env() -> dict[str, str]:
    """Environment for a `python -m fleetwave_agent.cli` subprocess using this checkout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(AGENT_DIR) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("FLEETWAVE_AGENT_CONFIG", None)
    return env


AGENT_CMD = [sys.executable, "-m", "fleetwave_agent.cli"]


@pytest.fixture(scope="session")
def keypair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return generate_keypair(tmp_path_factory.mktemp("keys"), "test")


PackageBuilder = Callable[..., Path]


@pytest.fixture
def make_package(tmp_path: Path, keypair: tuple[Path, Path]) -> PackageBuilder:
    """Build a real signed package whose hooks are shell snippets (each traced)."""

    def build(
        version: str,
        hooks: Mapping[str, str] | None = None,
        checks: Sequence[dict[str, Any]] = (),
        files: Mapping[str, str] | None = None,
        name: str = "app",
        timeouts: Mapping[str, str] | None = None,
        scripts: Mapping[str, str] | None = None,
    ) -> Path:
        src = tmp_path / "src" / f"{name}-{version}"
        (src / "bin").mkdir(parents=True)
        for rel, text in (files or {"VERSION": version}).items():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            (src / rel).write_text(text)
        config: dict[str, Any] = {"hooks": {}, "health_checks": list(checks)}
        for hook, body in (hooks or {}).items():
            script = src / "bin" / hook
            script.write_text("#!/bin/sh\n" + TRACE + body + "\n")
            script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
            spec: dict[str, Any] = {"argv": [f"./bin/{hook}"]}
            if timeouts and hook in timeouts:
                spec["timeout"] = timeouts[hook]
            config["hooks"][hook] = spec
        for script_name, body in (scripts or {}).items():
            script = src / "bin" / script_name
            script.write_text("#!/bin/sh\n" + body + "\n")
            script.chmod(0o755)
        (src / "fleetwave-package.yaml").write_text(yaml.safe_dump(config))
        return build_package(
            src,
            name=name,
            version=version,
            private_key=keypair[0],
            out_dir=tmp_path / "pkgs",
        )

    return build


@pytest.fixture
def make_agent(tmp_path: Path, keypair: tuple[Path, Path]) -> Callable[..., Agent]:
    def make(**overrides: Any) -> Agent:
        settings: dict[str, Any] = {
            "root": tmp_path / "root",
            "trusted_keys": (keypair[1],),
            "stop_failure": StopFailurePolicy.CONTINUE,
        }
        settings.update(overrides)
        return Agent(AgentConfig(**settings))

    return make


def trace(root: Path) -> list[str]:
    path = root / "run" / "trace"
    return path.read_text().splitlines() if path.exists() else []


class _LoopbackHttpServer(http.server.HTTPServer):
    def server_bind(self) -> None:  # skip getfqdn(): it can hang without DNS
        self.socket.bind(self.server_address)
        self.server_name, self.server_port = "127.0.0.1", self.socket.getsockname()[1]


@contextlib.contextmanager
def loopback_http(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[int]:
    """Serve ``handler`` on 127.0.0.1 (a free port) in a thread; yields the port."""
    server = _LoopbackHttpServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
