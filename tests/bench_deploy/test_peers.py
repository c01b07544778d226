"""The peer workloads' generated files and command lines, and the CLI's argument checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bench.deploy import peers

pytestmark = pytest.mark.unit


def make_job(tmp_path: Path, tool: str) -> peers.Job:
    return peers.Job(
        tool=tool,
        hosts=(("n001", "10.0.0.11"), ("n002", "10.0.0.12")),
        release="r001-x",
        tarball=tmp_path / "r.tar.gz",
        sha256="ab" * 32,
        user="fwdeploy",
        client_key=tmp_path / "id",
        known_hosts=tmp_path / "known_hosts",
        run_dir=tmp_path,
        peers_python=tmp_path / "venv" / "bin" / "python",
    )


def test_remote_script_checks_extracts_and_switches_atomically(tmp_path: Path) -> None:
    script = make_job(tmp_path, "scp").remote_script()
    steps = script.split(" && ")
    assert steps[0] == "cd /srv/bench/scp"
    assert "sha256sum -c --status" in steps[1]
    assert "ab" * 32 in steps[1]
    assert steps.index("mv -T current.tmp current") > steps.index(
        "tar -xzf incoming/r001-x.tar.gz -C releases/r001-x"
    )
    assert steps[-1] == "test -f current/payload.bin"


def test_scp_uses_curve25519_and_strict_host_keys(tmp_path: Path) -> None:
    argv = peers.scp(make_job(tmp_path, "scp"))
    assert argv[:5] == ["xargs", "-a", str(tmp_path / "hosts.txt"), "-P", "2"]
    one = (tmp_path / "one-host.sh").read_text()
    assert "KexAlgorithms=curve25519-sha256" in one
    assert "StrictHostKeyChecking=yes" in one
    assert (tmp_path / "hosts.txt").read_text() == "10.0.0.11\n10.0.0.12\n"


def test_ansible_forks_pipelining_no_facts(tmp_path: Path) -> None:
    job = make_job(tmp_path, "ansible")
    peers.ansible(job)
    cfg = (tmp_path / "ansible.cfg").read_text()
    assert "forks = 2" in cfg
    assert "pipelining = True" in cfg
    (play,) = json.loads((tmp_path / "deploy.yml").read_text())
    assert play["gather_facts"] is False
    modules = [next(k for k in t if k.startswith("ansible.")) for t in play["tasks"]]
    assert modules[0] == "ansible.builtin.copy"
    assert "ansible.builtin.unarchive" in modules
    assert peers.ansible_env(job)["ANSIBLE_CONFIG"] == str(tmp_path / "ansible.cfg")


def test_pyinfra_parallel_n_and_deploy_file(tmp_path: Path) -> None:
    argv = peers.pyinfra(make_job(tmp_path, "pyinfra"))
    assert argv[1:3] == ["--parallel", "2"]
    deploy = (tmp_path / "deploy.py").read_text()
    assert "files.put(" in deploy
    assert "server.shell(" in deploy


def test_python_peers_get_the_job_as_json(tmp_path: Path) -> None:
    argv = peers.asyncssh(make_job(tmp_path, "asyncssh"))
    job = json.loads(Path(argv[-1]).read_text())
    assert job["hosts"] == ["10.0.0.11", "10.0.0.12"]
    assert job["remote_tarball"] == "/srv/bench/asyncssh/incoming/r001-x.tar.gz"


def test_quick_and_bad_arguments() -> None:
    from bench.bench_deploy import parse_args

    quick = parse_args(["--quick"])
    assert (quick.host_list, quick.size_list, quick.runs) == ([10, 50], [1], 3)
    with pytest.raises(SystemExit):
        parse_args(["--tools", "fleetwave,chef"])
    with pytest.raises(SystemExit):
        parse_args(["--hosts", "ten"])
