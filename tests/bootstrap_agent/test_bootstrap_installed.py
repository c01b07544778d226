"""``fleetwave agent install`` as users run it: from a controller pip-installed from its
wheel into a fresh venv (not this checkout), against a real sshd, in the default
(resident) mode; then a deploy-key session through the pinned relay reaches the
resident agent.

Offline, as test_bootstrap_sshd: the fresh venv sees the dependencies of this
checkout's venv through a ``.pth`` line (that directory's own ``.pth`` files, among
them the editable install's finder, are not processed), and hosts get the agent with
``--no-index --no-deps`` over ``--system-site-packages``. No systemd runs here, so the
resident agent runs under the supervisor, which the test stops at the end.
"""

from __future__ import annotations

import json
import os
import signal
import site
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.bootstrap_agent.test_bootstrap_sshd import ROOT, sshd  # noqa: F401 (fixture)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        os.geteuid() != 0 or not Path("/usr/sbin/sshd").exists(),
        reason="needs root and OpenSSH sshd",
    ),
    pytest.mark.skipif(Path("/run/systemd/system").is_dir(), reason="tests the no-systemd path"),
]


@pytest.fixture(scope="module")
def controller(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with fleetwave installed from its wheel; returns its bin/."""
    work = tmp_path_factory.mktemp("controller")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "-w", str(work), "--no-deps", "-q"],
        check=True,
        timeout=300,
    )
    [wheel] = work.glob("fleetwave-*.whl")
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    [fresh_site] = (venv / "lib").glob("python3*/site-packages")
    (fresh_site / "zz-deps.pth").write_text(site.getsitepackages()[0] + "\n")
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "--python", str(venv / "bin/python"), "install"),
            *("-q", "--no-deps", "--no-index", "--disable-pip-version-check", str(wheel)),
        ],
        check=True,
        timeout=300,
    )
    return venv / "bin"


def fresh_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    return env


def test_the_installed_controller_is_not_the_checkout(controller: Path, tmp_path: Path) -> None:
    probe = (
        "import fleetwave, fleetwave.bootstrap.dist as d, importlib.metadata as m;"
        "print(fleetwave.__file__); print(d.source_tree(m.distribution('fleetwave')))"
    )
    out = subprocess.run(
        [controller / "python", "-c", probe],
        cwd=tmp_path,
        env=fresh_env(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out[0].startswith(str(controller.parent)), out
    assert out[1] == "None"  # an installed wheel: no source tree to build from


def test_repacked_wheel_is_deterministic_and_installable(controller: Path, tmp_path: Path) -> None:
    script = (
        "import sys; from pathlib import Path; from fleetwave.bootstrap.dist import agent_wheel;"
        "print(agent_wheel(Path(sys.argv[1])))"
    )
    wheels = []
    for n in (1, 2):
        out = tmp_path / str(n)
        out.mkdir()
        proc = subprocess.run(
            [controller / "python", "-c", script, str(out)],
            cwd=tmp_path,
            env=fresh_env(),
            capture_output=True,
            text=True,
            check=True,
        )
        wheels.append(Path(proc.stdout.strip()))
    assert wheels[0].name == "fleetwave-0.1.0-py3-none-any.whl"
    assert wheels[0].read_bytes() == wheels[1].read_bytes()
    import zipfile

    names = zipfile.ZipFile(wheels[0]).namelist()
    assert "fleetwave_agent/cli.py" in names
    assert "fleetwave/bootstrap/data/resident.conf" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith("direct_url.json")]
    assert names[-1] == "fleetwave-0.1.0.dist-info/RECORD"


def test_cli_bootstraps_resident_by_default_and_the_deploy_key_reaches_it(
    controller: Path,
    tmp_path: Path,
    sshd: tuple[int, Path, Path],  # noqa: F811
) -> None:
    port, admin_key, known = sshd
    authorized = admin_key.parent / "authorized"  # the sshd's AuthorizedKeysFile
    host = tmp_path / "host"
    deploy = tmp_path / "deploy"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", deploy], check=True)
    signer = tmp_path / "signer.pub"
    subprocess.run([controller / "python", "-c", _KEYGEN, str(tmp_path)], check=True)
    (tmp_path / "topology.yaml").write_text(
        "regions:\n  r1:\n    traffic: low\n    timezone: UTC\n    azs:\n"
        f"      a1: [{{name: h1, address: 127.0.0.1, port: {port}}}]\n"
    )
    (tmp_path / "pipeline.yaml").write_text(
        "name: boot\nservice: app\nenvironment: test\ntopology: topology.yaml\n"
        f"deploy:\n  ssh: {{user: root, identity: {deploy}, known_hosts: {known}}}\n"
        "  load_balancers: [{name: none, driver: none}]\n"
        "waves: [{regions: [r1]}]\n"
    )
    argv = [
        str(controller / "fleetwave"),
        "agent",
        "install",
        "-f",
        "pipeline.yaml",
        "--trust",
        str(signer),
        "--admin-identity",
        str(admin_key),
        "--python",
        "/usr/bin/python3",
        "--venv",
        f"{host}/opt/venv",
        "--agent-config",
        f"{host}/etc/agent.yaml",
        "--keys-dir",
        f"{host}/etc/keys",
        "--agent-root",
        f"{host}/var",
        "--authorized-keys",
        str(authorized),
        "--pip-arg=--no-index",
        "--pip-arg=--no-deps",
        "--system-site-packages",
    ]
    supervisor_pid = host / "var/run/supervise.pid"
    try:
        proc = subprocess.run(
            argv, cwd=tmp_path, env=fresh_env(), capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "h1: changed (" in proc.stdout
        assert "no systemd: started the resident agent under" in proc.stdout
        pinned = authorized.read_text().splitlines()[-1]
        assert pinned.startswith(f'command="{host}/opt/relay",restrict ssh-ed25519 ')
        sock = host / "var/rpc.sock"
        for _ in range(300):  # the supervisor's first serve starts Python: bounded wait
            if sock.is_socket():
                break
            time.sleep(0.1)
        assert sock.is_socket(), (host / "var/run/supervise.log").read_text()
        # A deploy-key session: sshd runs the relay whatever is asked; it reaches the daemon.
        session = subprocess.run(
            [
                *("ssh", "-i", str(deploy), "-p", str(port), "-o", f"UserKnownHostsFile={known}"),
                *("-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "root@127.0.0.1", "ignored"),
            ],
            input=b'{"id": 1, "op": "status", "args": {"probe_health": false}}\n',
            capture_output=True,
            timeout=60,
        )
        lines = session.stdout.splitlines()
        assert json.loads(lines[0])["hello"]["protocol"] == 1, session.stderr
        assert json.loads(lines[1])["result"]["root"] == f"{host}/var"
        # The daemon answered (not a session agent): its pid holds the socket's lock.
        assert (host / "var/rpc.sock.lock").exists()
        again = subprocess.run(
            argv, cwd=tmp_path, env=fresh_env(), capture_output=True, text=True, timeout=300
        )
        assert again.returncode == 0, again.stdout + again.stderr
        assert "h1: ok (nothing to change)" in again.stdout
    finally:
        if supervisor_pid.exists():
            os.kill(int(supervisor_pid.read_text()), signal.SIGTERM)
            for _ in range(100):
                if not supervisor_pid.exists():
                    break
                time.sleep(0.1)


_KEYGEN = (
    "import sys; from pathlib import Path; from fleetwave_agent.keys import generate_keypair;"
    "generate_keypair(Path(sys.argv[1]), 'signer')"
)
