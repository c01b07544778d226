"""Real agents and real signed packages for the in-process fleet."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fleetwave_agent.config import AgentConfig
from fleetwave_agent.keys import generate_keypair
from fleetwave_agent.operations import Agent
from fleetwave_agent.package import build_package, read_manifest
from fleetwave_agent.rpc import RpcServer

from .fleet import AgentFactory


def real_agent_factory(trusted_key: Path) -> AgentFactory:
    """Each host gets the real agent (``operations.Agent`` behind ``RpcServer``) on its
    own root, trusting ``trusted_key``."""

    def make(root: Path) -> RpcServer:
        return RpcServer(Agent(AgentConfig(root=root, trusted_keys=(trusted_key,))))

    return make


@dataclass(frozen=True)
class SignedPackage:
    path: Path
    package_id: str
    version: str
    public_key: Path
    private_key: Path


def make_package(
    work: Path,
    *,
    version: str = "1.0.0",
    payload_bytes: int = 4096,
    keys: tuple[Path, Path] | None = None,
) -> SignedPackage:
    """Build and sign a small app package under ``work``."""
    private, public = keys or generate_keypair(work / "keys", "signer")
    src = work / f"src-{version}"
    src.mkdir(parents=True)
    (src / "app.txt").write_text(f"app {version}\n")
    (src / "blob.bin").write_bytes(bytes(i % 251 for i in range(payload_bytes)))
    path = build_package(
        src, name="demo", version=version, private_key=private, out_dir=work / "dist"
    )
    return SignedPackage(path, read_manifest(path).package_id, version, public, private)
