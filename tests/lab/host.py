"""One lab host: a network namespace with its own hostname, a private tmpfs at /srv
(the host's disk), a real sshd, and helpers to run commands in it and break it.

The host's namespaces are held by a small *anchor* process (``sleep infinity`` run
through ``unshare``) rather than by sshd, so a test can kill and restart sshd while the
host's disk, hostname and everything started over SSH stay put, as on a real machine.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

from ._proc import LabError, log_tail, port_open, run, ssh_keygen, stop_process, wait_until

_NFT_TABLE = "fwlab"


class LabHost:
    """A running host. Built and torn down by :class:`tests.lab.fleet.Fleet`."""

    def __init__(
        self,
        *,
        index: int,
        netns: str,
        ip: str,
        host_dir: Path,
        user: str,
        sshd_config: Path,
    ):
        self.index = index
        self.name = f"h{index:02d}"
        self.netns = netns
        self.ip = ip
        self.host_dir = host_dir
        self.user = user
        self.sshd_config = sshd_config
        self.sshd_log = host_dir / "sshd.log"
        self.host_key = host_dir / "ssh_host_ed25519_key"
        self._anchor: subprocess.Popen[bytes] | None = None
        self._sshd: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"LabHost({self.name}, {self.ip}, netns={self.netns})"

    # -- life cycle -------------------------------------------------------------------

    def start_anchor(self, setup_script: str) -> None:
        """Enter fresh UTS and mount namespaces inside the host's netns and run
        ``setup_script`` (as root) there; it must end by touching ``host_dir/ready``."""
        err = (self.host_dir / "anchor.err").open("wb")
        self._anchor = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                self.netns,
                "unshare",
                "--uts",
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                setup_script,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        err.close()

    def wait_anchor(self, timeout: float = 10.0) -> None:
        """Wait for the setup script to finish; LabError with its stderr if it died."""

        def ready() -> bool:
            if self._anchor is not None and self._anchor.poll() is not None:
                raise LabError(
                    f"{self.name}: host setup failed: {log_tail(self.host_dir / 'anchor.err')}"
                )
            return (self.host_dir / "ready").exists()

        wait_until(ready, timeout=timeout, what=f"{self.name} setup")

    @property
    def anchor_pid(self) -> int:
        if self._anchor is None or self._anchor.poll() is not None:
            raise LabError(f"{self.name}: host is not running")
        return self._anchor.pid

    @property
    def running_anchor_pid(self) -> int | None:
        """The anchor's pid, None when it is not running."""
        if self._anchor is None or self._anchor.poll() is not None:
            return None
        return self._anchor.pid

    @property
    def sshd_pid(self) -> int | None:
        """The sshd listener's pid, None while it is stopped."""
        if self._sshd is None or self._sshd.poll() is not None:
            return None
        return self._sshd.pid

    def start_sshd(self) -> None:
        """Start sshd in the host's namespaces (returns at once; see :meth:`wait_sshd`)."""
        if self.sshd_pid is not None:
            return
        self._sshd = subprocess.Popen(
            [
                *self._nsenter(),
                *("/usr/sbin/sshd", "-D", "-f", str(self.sshd_config), "-E", str(self.sshd_log)),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def wait_sshd(self, timeout: float = 10.0) -> None:
        """Wait until port 22 accepts connections; LabError with sshd's log if it died."""

        def listening() -> bool:
            if self._sshd is None or self._sshd.poll() is not None:
                raise LabError(f"{self.name}: sshd exited: {log_tail(self.sshd_log)}")
            return port_open(self.ip, 22)

        wait_until(listening, timeout=timeout, what=f"sshd on {self.name} ({self.ip})")

    def kill_sshd(self, sig: signal.Signals = signal.SIGKILL) -> None:
        """Kill the sshd listener (sessions already open keep their own processes)."""
        if self._sshd is not None and self._sshd.poll() is None:
            self._sshd.send_signal(sig)
            self._sshd.wait(timeout=5)

    def restart_sshd(self, timeout: float = 10.0) -> None:
        """Stop sshd if running, start it again, wait until it listens."""
        if self._sshd is not None:
            stop_process(self._sshd)
        self._sshd = None
        self.start_sshd()
        self.wait_sshd(timeout)

    def regenerate_host_key(self) -> str:
        """Give the host a new SSH host key (a "changed host key") and restart sshd.
        Returns the new public key line; the lab's known_hosts is NOT updated."""
        for path in (self.host_key, self.host_key.with_suffix(".pub")):
            path.unlink(missing_ok=True)
        public = ssh_keygen(self.host_key, self.name)
        self.restart_sshd()
        return public

    def stop(self) -> None:
        """Stop sshd and the anchor (reaping both). Other processes are the fleet's job."""
        for proc in (self._sshd, self._anchor):
            if proc is not None:
                stop_process(proc, timeout=3)

    # -- running things inside --------------------------------------------------------

    def _nsenter(self) -> list[str]:
        return ["nsenter", "-t", str(self.anchor_pid), "-n", "-u", "-m", "--"]

    def _as_user(self) -> list[str]:
        user = self.user
        return [
            "setpriv",
            f"--reuid={user}",
            f"--regid={user}",
            "--init-groups",
            "--reset-env",
            "--",
        ]

    def command(self, cmd: Sequence[str] | str, *, root: bool = False) -> list[str]:
        """The argv that runs ``cmd`` inside the host (as the test user unless ``root``).
        A string is run by ``sh -c``."""
        argv = ["sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        return self._nsenter() + ([] if root else self._as_user()) + argv

    def exec(
        self,
        cmd: Sequence[str] | str,
        *,
        root: bool = False,
        check: bool = True,
        timeout: float = 30.0,
        input_text: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` to completion inside the host; LabError on non-zero exit if ``check``."""
        try:
            return run(
                self.command(cmd, root=root), check=check, timeout=timeout, input_text=input_text
            )
        except LabError as exc:
            raise LabError(f"{self.name}: {exc}") from None

    def path(self, inside: str | Path) -> Path:
        """Where an absolute path of the host's own view (e.g. ``/srv/x``) can be read
        from the root namespace, through the anchor's ``/proc/<pid>/root``."""
        inside = Path(inside)
        if not inside.is_absolute():
            raise LabError(f"{self.name}: path must be absolute: {inside}")
        return Path(f"/proc/{self.anchor_pid}/root") / inside.relative_to("/")

    def read_text(self, inside: str | Path) -> str:
        return self.path(inside).read_text()

    def read_bytes(self, inside: str | Path) -> bytes:
        return self.path(inside).read_bytes()

    def hostname(self) -> str:
        return self.exec(["cat", "/proc/sys/kernel/hostname"], root=True).stdout.strip()

    # -- faults -----------------------------------------------------------------------

    def _nft(self, rules: str) -> None:
        script = (
            f"table inet {_NFT_TABLE}\ndelete table inet {_NFT_TABLE}\n"
            f"table inet {_NFT_TABLE} {{\n chain input {{\n"
            f"  type filter hook input priority 0; policy accept;\n{rules}\n }}\n}}\n"
        )
        run(["ip", "netns", "exec", self.netns, "nft", "-f", "-"], input_text=script)

    def drop_ssh(self) -> None:
        """Blackhole port 22 (clients time out)."""
        self._nft("  tcp dport 22 drop")

    def reject_ssh(self) -> None:
        """Reject port 22 with a TCP reset (clients see connection refused)."""
        self._nft("  tcp dport 22 reject with tcp reset")

    def packet_loss(self, percent: int) -> None:
        """Drop ``percent`` % of the host's incoming packets at random."""
        if not 0 <= percent <= 100:
            raise LabError(f"{self.name}: packet loss must be 0..100, got {percent}")
        self._nft(f"  numgen random mod 100 < {percent} drop")

    def clear_faults(self) -> None:
        """Remove every nftables fault of this host."""
        run(
            ["ip", "netns", "exec", self.netns, "nft", "delete", "table", "inet", _NFT_TABLE],
            check=False,
        )

    def fill_disk(self, leave_bytes: int = 0, *, max_bytes: int = 1 << 30) -> int:
        """Fill the host's /srv tmpfs, leaving about ``leave_bytes`` free; returns bytes written."""
        fill = self.path("/srv/.lab-fill")
        stat = os.statvfs(self.path("/srv"))
        target = min(max(stat.f_bavail * stat.f_frsize - leave_bytes, 0), max_bytes)
        written = 0
        chunk = b"\0" * (1 << 20)
        with fill.open("ab", buffering=0) as fh:
            while written < target:
                try:
                    written += fh.write(chunk[: min(len(chunk), target - written)])
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
        return written

    def free_disk(self) -> None:
        """Undo :meth:`fill_disk`."""
        with contextlib.suppress(FileNotFoundError):
            self.path("/srv/.lab-fill").unlink()
