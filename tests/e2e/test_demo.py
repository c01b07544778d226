"""End-to-end: the story of ``scripts/demo`` (``examples/fleet-demo/demo.py``), run as a
subprocess the way the script runs it.

- As root on the namespace fleet (HAProxy, Prometheus): it must exit 0 in under
  3 minutes, tell each act as it happened, and leave no process, namespace or
  temporary file behind.
- Interrupted with Ctrl-C (SIGINT to its process group, as a terminal sends it) in the
  middle of the v2 deployment: it must exit 130 and leave nothing behind either.
- Without root on in-process hosts, with no HAProxy on PATH (so behind the ``none``
  balancer): the same story, exit 0. As the unprivileged user ``nobody`` (``runuser``)
  when it can run this interpreter, else forced with ``FLEETWAVE_DEMO_NONROOT=1``.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.lab import lab_unavailable_reason

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
DRIVER = REPO / "examples" / "fleet-demo" / "demo.py"
#: The bound only stops a hung run. The demo's time (3 minutes at most) is measured,
#: not asserted: it prints it in its summary, and the README quotes it.
TIMEOUT_S = 300
#: The line the Ctrl-C test waits for: the v2 deployment has started.
MARKER = "$ fleetwave deploy pkgs/demo-app-2.0.0.fwpkg"
UNPRIVILEGED = "nobody"


def _env(tmpdir: Path, **extra: str) -> dict[str, str]:
    # A private TMPDIR: whatever the demo leaves in "the temp directory" shows here.
    return {**os.environ, "TMPDIR": str(tmpdir), **extra}


def _processes_naming(path: Path) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if str(path).encode() in cmdline:
                text = cmdline.replace(b"\0", b" ").decode(errors="replace")
                found.append(f"{proc.name}: {text[:200]}")
    return found


def _netns() -> str:
    return subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, check=True, timeout=10
    ).stdout


def _assert_nothing_left(out: str, work: Path, tmpdir: Path) -> None:
    assert not _processes_naming(work), _processes_naming(work)
    assert list(tmpdir.iterdir()) == [], list(tmpdir.iterdir())
    prefixes = set(re.findall(r"netns (\S+)-h\d+", out))
    for prefix in prefixes:
        assert prefix not in _netns()


@pytest.fixture(scope="module")
def root_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, Path]:
    """(stdout, work dir, TMPDIR) of one root run, shared by this module's root tests."""
    reason = lab_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    base = tmp_path_factory.mktemp("demo-root")
    work, tmpdir = base / "demo-out" / "fleet", base / "tmp"
    tmpdir.mkdir()
    proc = subprocess.run(
        [sys.executable, str(DRIVER), "--work", str(work)],
        capture_output=True, text=True, timeout=TIMEOUT_S, stdin=subprocess.DEVNULL,
        cwd=base, env=_env(tmpdir),
    )  # fmt: skip
    assert proc.returncode == 0, f"{proc.stdout[-6000:]}\n{proc.stderr[-2000:]}"
    assert re.search(r"==> Summary \(\d+ s\)", proc.stdout)
    return proc.stdout, work, tmpdir


def test_the_story_as_root(root_run: tuple[str, Path, Path]) -> None:
    out, _work, _tmp = root_run
    assert "network-namespace hosts (real sshd) behind HAProxy" in out
    assert re.search(r"Prometheus http://127\.0\.0\.1:\d+ scrapes every agent exporter", out)
    assert len(re.findall(r"^\s+host-\S+|^\s+h\d\d\s+\S+\s+demo-az\d", out, re.M)) >= 4
    assert len(re.findall(r"controller metrics: http://127\.0\.0\.1:\d+/metrics", out)) == 4
    assert out.count("exit status 20: rolled_back") == 2
    assert out.count("exit status 0: succeeded") == 2
    # v2 and v3: only the one-box got them, and the one-box alarm or anomaly detection
    # (whichever judged first) said why.
    caught = r"(onebox alarm 'demo-onebox' went to ALARM|anomaly detection .* judged it bad)"
    assert re.search(rf"check: only h01 got 2\.0\.0; {caught}", out)
    assert re.search(rf"check: only h01 got 3\.0\.0; {caught}", out)
    assert "check: the one-box bake was under way" in out
    # Through HAProxy the only failed requests are the bad one-box's own 500s, and v4
    # rolled out with none at all.
    loads = re.findall(r"client load: \d+ requests, failed: (.*)", out)
    assert len(loads) == 3, loads
    assert all(re.fullmatch(r"\d+ HTTP 500", f) for f in loads[:2]), loads
    assert loads[2] == "none"
    assert re.search(r"Prometheus: requests per host, scraped from the agents: h01 \d+", out)
    final = out[out.index("Act 6:") :]
    assert len(re.findall(r"release 4\.0\.0  HAProxy UP", final)) == 4, final
    # The decision trails, with the alarm's values that decided.
    trail = out[out.index("Act 7:") :]
    assert trail.count("decision trail:") == 2
    assert re.search(r"onebox-5xx ALARM \[stage:w1/demo-1/onebox\]", trail)
    assert trail.count("=> finished rolled_back") == 2
    assert "leftovers: none" in out


def test_the_root_run_leaves_nothing_behind(root_run: tuple[str, Path, Path]) -> None:
    out, work, tmpdir = root_run
    _assert_nothing_left(out, work, tmpdir)


def test_ctrl_c_in_the_middle_leaves_nothing_behind(tmp_path: Path) -> None:
    reason = lab_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    work, tmpdir = tmp_path / "demo-out" / "fleet", tmp_path / "tmp"
    tmpdir.mkdir()
    proc = subprocess.Popen(
        [sys.executable, str(DRIVER), "--work", str(work)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        stdin=subprocess.DEVNULL, cwd=tmp_path, env=_env(tmpdir),
        start_new_session=True,  # its own process group, like a terminal's foreground job
    )  # fmt: skip
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + TIMEOUT_S
        for line in proc.stdout:  # bounded: the driver's own CLI timeouts end it
            lines.append(line)
            if line.startswith(MARKER) or time.monotonic() > deadline:
                break
        assert any(line.startswith(MARKER) for line in lines), "".join(lines[-40:])
        time.sleep(3.0)  # into the v2 deployment: the one-box is being drained or baked
        os.killpg(proc.pid, signal.SIGINT)
        rest, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    out = "".join(lines) + rest
    assert proc.returncode == 130, out[-4000:]
    assert "demo: interrupted; torn down, leftovers: none" in out, out[-4000:]
    _assert_nothing_left(out, work, tmpdir)


def _unprivileged_can_run_python() -> bool:
    """Whether the unprivileged user can run this interpreter (not so when it lives
    under a private directory, e.g. a pyenv Python in a 0700 /root)."""
    if os.geteuid() != 0 or shutil.which("runuser") is None:
        return False
    probe = subprocess.run(
        ["runuser", "-u", UNPRIVILEGED, "--", sys.executable, "-c", "import fleetwave_agent"],
        capture_output=True, timeout=60, check=False, cwd="/",
    )  # fmt: skip
    return probe.returncode == 0


def test_the_story_without_root_on_in_process_hosts_behind_no_balancer() -> None:
    """The non-root mode with haproxy off PATH: in-process hosts behind the ``none``
    balancer. As the unprivileged user (``runuser``) when it can run this interpreter;
    otherwise forced with ``FLEETWAVE_DEMO_NONROOT=1``."""
    unprivileged = _unprivileged_can_run_python()
    # Not under pytest's tmp dirs: they are private to root.
    base = Path(tempfile.mkdtemp(prefix="fw-demo-nonroot-"))
    try:
        base.chmod(0o755)
        tmpdir = base / "tmp"
        tmpdir.mkdir()
        if unprivileged:
            user = pwd.getpwnam(UNPRIVILEGED)
            for d in (base, tmpdir):
                os.chown(d, user.pw_uid, user.pw_gid)
        _run_nonroot(base, tmpdir, unprivileged=unprivileged)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _run_nonroot(base: Path, tmpdir: Path, *, unprivileged: bool) -> None:
    work = base / "demo-out" / "fleet"
    path = os.pathsep.join(
        d for d in os.environ["PATH"].split(os.pathsep) if not (Path(d) / "haproxy").exists()
    )
    env = [f"PATH={path}", f"TMPDIR={tmpdir}"]
    if unprivileged:
        argv = ["runuser", "-u", UNPRIVILEGED, "--", "env", *env, "HOME=/nonexistent"]
        expected_reason = "the namespace lab needs root"
    else:
        argv = ["env", *env, "FLEETWAVE_DEMO_NONROOT=1"]
        expected_reason = "forced by --nonroot/FLEETWAVE_DEMO_NONROOT"
    proc = subprocess.run(
        [*argv, sys.executable, str(DRIVER), "--work", str(work)],
        capture_output=True, text=True, timeout=TIMEOUT_S, stdin=subprocess.DEVNULL, cwd=base,
    )  # fmt: skip
    out = proc.stdout
    assert proc.returncode == 0, f"{out[-6000:]}\n{proc.stderr[-2000:]}"
    assert f"in-process hosts ({expected_reason})" in out
    assert "the pipeline uses the 'none' driver" in out
    assert out.count("exit status 20: rolled_back") == 2
    assert out.count("exit status 0: succeeded") == 2
    assert re.search(r"check: only host-00200 got 2\.0\.0; (onebox alarm|anomaly)", out)
    assert re.search(r"check: only host-00200 got 3\.0\.0; (onebox alarm|anomaly)", out)
    assert out.count("decision trail:") == 2
    assert "leftovers: none" in out
    assert not _processes_naming(work)
    assert list(tmpdir.iterdir()) == []
