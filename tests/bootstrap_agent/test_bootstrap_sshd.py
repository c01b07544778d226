"""Bootstrap against a real OpenSSH sshd on a loopback port (needs root and sshd).

Offline by design: the host venv is created with ``--system-site-packages`` and the
wheel installed with ``--no-index --no-deps``, so nothing is fetched from PyPI; the
test checks what bootstrap owns (venv + wheel, keys, config, pinned authorized_keys,
idempotence, strict host keys), not the agent's dependencies.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import pytest

from fleetwave.bootstrap import (
    AdminAccess,
    BootstrapOptions,
    HostStatus,
    install_agent,
)
from fleetwave.bootstrap.install import AUTHORIZED_KEY_MARK
from fleetwave.planning.model import HostRef

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("sshd", path="/usr/sbin:/usr/bin") is None,
        reason="needs root and OpenSSH sshd",
    ),
]

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[tuple[int, Path, Path]]:
    d = tmp_path / "sshd"
    d.mkdir()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", d / "host"], check=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", d / "admin"], check=True)
    (d / "authorized").write_text((d / "admin.pub").read_text())
    port = free_port()
    cfg = d / "sshd_config"
    cfg.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host'}\n"
        f"AuthorizedKeysFile {d / 'authorized'}\nPermitRootLogin prohibit-password\n"
        "UsePAM no\nUseDNS no\nPasswordAuthentication no\nStrictModes no\n"
        f"PidFile {d / 'pid'}\nSubsystem sftp internal-sftp\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True)
    proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-f", str(cfg), "-E", str(d / "log")])
    for _ in range(100):  # bounded wait for the listener
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.05)
    known = d / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} {(d / 'host.pub').read_text()}")
    try:
        yield port, d / "admin", known
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            "python",
            "-m",
            "pip",
            "wheel",
            str(ROOT),
            "-w",
            str(out),
            "--no-deps",
            "--quiet",
            "--disable-pip-version-check",
        ],
        check=True,
    )
    return next(out.glob("fleetwave-*.whl"))


def test_install_is_idempotent_and_pins_the_key(tmp_path, sshd, wheel):
    port, admin_key, known = sshd
    host_dir = tmp_path / "host"
    signer = tmp_path / "signer.pub"
    signer.write_text("fake-but-only-copied\n")
    auth = host_dir / "home/.ssh/authorized_keys"
    auth.parent.mkdir(parents=True)
    auth.write_text("ssh-rsa AAAAkeepme admin\n")
    options = BootstrapOptions(
        local_wheel=wheel,
        local_trusted_keys=(signer,),
        deploy_public_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAITEST ci",
        python="/usr/bin/python3",
        venv=PurePosixPath(host_dir / "opt/venv"),
        config_path=PurePosixPath(host_dir / "etc/agent.yaml"),
        keys_dir=PurePosixPath(host_dir / "etc/keys"),
        agent_root=PurePosixPath(host_dir / "var"),
        authorized_keys=PurePosixPath(auth),
        pip_args=("--no-index", "--no-deps"),
        system_site_packages=True,
        resident=False,  # session mode; resident mode: test_bootstrap_installed.py
    )
    access = AdminAccess(user="root", identity=admin_key, known_hosts=known)
    host = HostRef("h1", "127.0.0.1", "r", "a", ssh_port=port)

    first = install_agent([host], options, access)
    assert first[0].status is HostStatus.CHANGED, first[0].line()
    assert (host_dir / "opt/venv/bin/fleetwave-agent").exists()
    assert (host_dir / "etc/keys/signer.pub").read_text() == "fake-but-only-copied\n"
    assert f"{host_dir}/etc/keys/signer.pub" in (host_dir / "etc/agent.yaml").read_text()
    lines = auth.read_text().splitlines()
    assert lines[0] == "ssh-rsa AAAAkeepme admin"
    assert lines[1].startswith(
        f'command="{host_dir}/opt/venv/bin/fleetwave-agent --config {host_dir}/etc/agent.yaml rpc",'
        "restrict "
    )
    assert lines[1].endswith(AUTHORIZED_KEY_MARK)

    second = install_agent([host], options, access)
    assert second[0].status is HostStatus.OK, second[0].line()
    assert auth.read_text().splitlines() == lines


def test_unknown_host_key_is_refused(tmp_path, sshd, wheel):
    port, admin_key, _known = sshd
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    signer = tmp_path / "signer.pub"
    signer.write_text("k\n")
    options = BootstrapOptions(
        local_wheel=wheel,
        local_trusted_keys=(signer,),
        deploy_public_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAITEST ci",
        authorized_keys=PurePosixPath(tmp_path / "never"),
    )
    result = install_agent(
        [HostRef("h1", "127.0.0.1", "r", "a", ssh_port=port)],
        options,
        AdminAccess(user="root", identity=admin_key, known_hosts=empty),
    )
    assert result[0].status is HostStatus.FAILED
    assert "known_hosts" in result[0].message
    assert not (tmp_path / "never").exists()
