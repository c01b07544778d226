"""The peer tools' workloads, each written as a practitioner would write it.

Every peer does the same work on every host: upload the tarball, check its sha256 on
the host, extract it into a new release directory, switch ``current`` atomically
(``ln -s`` + ``mv -T``) and run a trivial health check. Each function writes whatever
files its tool needs into ``run_dir`` and returns the command line to time.
"""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .lab import PAYLOAD_NAME, PEER_BASE

HERE = Path(__file__).resolve().parent

#: OpenSSH options shared by the OpenSSH-based peers: strict host keys, the deploy key
#: only, and curve25519 instead of 9.x's slower post-quantum default (LAB.md).
KEX = "curve25519-sha256"


@dataclass(frozen=True)
class Job:
    """One deploy of one release by one tool to ``hosts`` (name, ip)."""

    tool: str
    hosts: tuple[tuple[str, str], ...]
    release: str
    tarball: Path
    sha256: str
    user: str
    client_key: Path
    known_hosts: Path
    run_dir: Path
    peers_python: Path

    @property
    def base(self) -> str:
        return f"{PEER_BASE}/{self.tool}"

    @property
    def remote_tarball(self) -> str:
        return f"{self.base}/incoming/{self.release}.tar.gz"

    def remote_script(self) -> str:
        """Everything after the upload, as one shell script."""
        rel = shlex.quote(self.release)
        return " && ".join(
            [
                f"cd {shlex.quote(self.base)}",
                f"echo {self.sha256}'  'incoming/{rel}.tar.gz | sha256sum -c --status",
                f"mkdir releases/{rel}",
                f"tar -xzf incoming/{rel}.tar.gz -C releases/{rel}",
                f"rm incoming/{rel}.tar.gz",
                f"ln -sfn releases/{rel} current.tmp",
                "mv -T current.tmp current",
                f"test -f current/{PAYLOAD_NAME}",
            ]
        )

    def openssh_options(self) -> list[str]:
        return [
            "-F",
            "/dev/null",
            "-i",
            str(self.client_key),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            f"KexAlgorithms={KEX}",
            "-o",
            "ConnectTimeout=10",
        ]


def ansible(job: Job) -> list[str]:
    """ansible-core: forks = N, pipelining, no facts; copy/stat/assert/unarchive/shell."""
    inventory = job.run_dir / "inventory.ini"
    inventory.write_text(
        "[fleet]\n" + "".join(f"{name} ansible_host={ip}\n" for name, ip in job.hosts)
    )
    ssh_args = " ".join(
        [
            # ansible's default ssh_args, plus the kex and strict host keys.
            "-C -o ControlMaster=auto -o ControlPersist=60s",
            f"-o KexAlgorithms={KEX} -o IdentitiesOnly=yes",
            f"-o UserKnownHostsFile={job.known_hosts} -o StrictHostKeyChecking=yes",
        ]
    )
    (job.run_dir / "ansible.cfg").write_text(
        "[defaults]\n"
        f"inventory = {inventory}\n"
        f"forks = {len(job.hosts)}\n"
        f"remote_user = {job.user}\n"
        f"private_key_file = {job.client_key}\n"
        "host_key_checking = True\n"
        "gathering = explicit\n"
        "interpreter_python = /usr/bin/python3\n"
        "timeout = 30\n"
        "[ssh_connection]\n"
        "pipelining = True\n"
        f"ssh_args = {ssh_args}\n"
        f"control_path_dir = {job.run_dir}/cp\n"
    )
    playbook = [
        {
            "hosts": "fleet",
            "gather_facts": False,
            "vars": {"base": job.base, "release": job.release, "sha": job.sha256},
            "tasks": [
                {
                    "name": "upload the release tarball",
                    "ansible.builtin.copy": {
                        "src": str(job.tarball),
                        "dest": "{{ base }}/incoming/{{ release }}.tar.gz",
                        "mode": "0644",
                    },
                },
                {
                    "name": "checksum it on the host",
                    "ansible.builtin.stat": {
                        "path": "{{ base }}/incoming/{{ release }}.tar.gz",
                        "checksum_algorithm": "sha256",
                    },
                    "register": "tarball",
                },
                {
                    "name": "refuse a corrupted upload",
                    "ansible.builtin.assert": {
                        "that": ["tarball.stat.checksum == sha"],
                        "quiet": True,
                    },
                },
                {
                    "name": "release directory",
                    "ansible.builtin.file": {
                        "path": "{{ base }}/releases/{{ release }}",
                        "state": "directory",
                    },
                },
                {
                    "name": "extract",
                    "ansible.builtin.unarchive": {
                        "src": "{{ base }}/incoming/{{ release }}.tar.gz",
                        "dest": "{{ base }}/releases/{{ release }}",
                        "remote_src": True,
                    },
                },
                {
                    "name": "remove the tarball",
                    "ansible.builtin.file": {
                        "path": "{{ base }}/incoming/{{ release }}.tar.gz",
                        "state": "absent",
                    },
                },
                {
                    "name": "switch current atomically",
                    "ansible.builtin.shell": (
                        "ln -sfn releases/{{ release }} current.tmp && mv -T current.tmp current"
                    ),
                    "args": {"chdir": "{{ base }}"},
                },
                {
                    "name": "health check",
                    "ansible.builtin.command": f"test -f {{{{ base }}}}/current/{PAYLOAD_NAME}",
                },
            ],
        }
    ]
    path = job.run_dir / "deploy.yml"
    path.write_text(json.dumps(playbook, indent=1))  # JSON is YAML
    return [str(job.peers_python.parent / "ansible-playbook"), str(path)]


def ansible_env(job: Job) -> dict[str, str]:
    """Keep ansible's config, temp files and control sockets inside the run directory."""
    return {
        "ANSIBLE_CONFIG": str(job.run_dir / "ansible.cfg"),
        "ANSIBLE_HOME": str(job.run_dir / "ansible-home"),
        "ANSIBLE_LOCAL_TEMP": str(job.run_dir / "ansible-tmp"),
        "ANSIBLE_NOCOLOR": "1",
    }


def pyinfra(job: Job) -> list[str]:
    """pyinfra: ``--parallel N``, files.put + server.shell."""
    data = {
        "ssh_user": job.user,
        "ssh_key": str(job.client_key),
        "ssh_known_hosts_file": str(job.known_hosts),
        "ssh_strict_host_key_checking": "yes",
    }
    inventory = job.run_dir / "inventory.py"
    inventory.write_text(
        f"DATA = {data!r}\nhosts = [(ip, dict(DATA)) for ip in {[ip for _, ip in job.hosts]!r}]\n"
    )
    deploy = job.run_dir / "deploy.py"
    deploy.write_text(
        "from pyinfra.operations import files, server\n\n"
        "files.put(\n"
        '    name="upload the release tarball",\n'
        f"    src={str(job.tarball)!r},\n"
        f"    dest={job.remote_tarball!r},\n"
        ")\n"
        "server.shell(\n"
        '    name="verify, extract, switch, check",\n'
        f"    commands=[{job.remote_script()!r}],\n"
        ")\n"
    )
    return [
        str(job.peers_python.parent / "pyinfra"),
        "--parallel",
        str(len(job.hosts)),
        "-y",
        str(inventory),
        str(deploy),
    ]


def fabric(job: Job) -> list[str]:
    """fabric 3: ThreadingGroup put + run (``peer_fabric.py``)."""
    return [str(job.peers_python), str(HERE / "peer_fabric.py"), str(_spec(job))]


def asyncssh(job: Job) -> list[str]:
    """The Python floor: one asyncssh connection per host, SFTP put, one exec."""
    return [str(job.peers_python), str(HERE / "peer_asyncssh.py"), str(_spec(job))]


def scp(job: Job) -> list[str]:
    """OpenSSH scp + ssh per host, ``xargs -P N``."""
    opts = " ".join(shlex.quote(o) for o in job.openssh_options())
    one = job.run_dir / "one-host.sh"
    one.write_text(
        "set -e\n"
        f"scp -q {opts} {shlex.quote(str(job.tarball))} "
        f'"{job.user}@$1:{job.remote_tarball}"\n'
        f'ssh {opts} "{job.user}@$1" {shlex.quote(job.remote_script())}\n'
    )
    ips = "".join(f"{ip}\n" for _, ip in job.hosts)
    (job.run_dir / "hosts.txt").write_text(ips)
    return [
        "xargs",
        "-a",
        str(job.run_dir / "hosts.txt"),
        "-P",
        str(len(job.hosts)),
        "-n",
        "1",
        "sh",
        str(one),
    ]


def _spec(job: Job) -> Path:
    """The job as JSON for the Python peer scripts."""
    path = job.run_dir / "job.json"
    path.write_text(
        json.dumps(
            {
                "hosts": [ip for _, ip in job.hosts],
                "user": job.user,
                "client_key": str(job.client_key),
                "known_hosts": str(job.known_hosts),
                "tarball": str(job.tarball),
                "remote_tarball": job.remote_tarball,
                "script": job.remote_script(),
            }
        )
    )
    return path


#: tool name -> (command builder, extra environment builder)
PEERS: dict[str, tuple[Callable[[Job], list[str]], Callable[[Job], dict[str, str]]]] = {
    "ansible": (ansible, ansible_env),
    "pyinfra": (pyinfra, lambda _job: {}),
    "fabric": (fabric, lambda _job: {}),
    "scp": (scp, lambda _job: {}),
    "asyncssh": (asyncssh, lambda _job: {}),
}

if __name__ == "__main__":  # pragma: no cover - a library module
    sys.exit("run bench/bench_deploy.py")
