"""End-to-end: ``fleetwave deploy`` as a subprocess against namespace hosts with real
sshd, the real agent, the demo app and HAProxy, under steady client load.

Each test builds its own fleet (``tests.lab``) and tears it down. The controller runs
as ``python -m fleetwave.cli`` so SIGKILL kill points (``FLEETWAVE_TEST_KILL_AT``,
test-only) hit a real process.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fleetwave_agent.keys import generate_keypair
from fleetwave_agent.package import build_package
from tests.lab import Fleet, LabConfig, lab_unavailable_reason

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
DEMO_APP = REPO / "examples" / "demo-app"
AGENT_ROOT = "/srv/fleetwave/agent"
TRUST = "/srv/fleetwave/trusted.pub"
DEPLOY_TIMEOUT_S = 240


class Lab:
    """A fleet plus a pipeline for it, packages, and a way to run the CLI."""

    def __init__(
        self,
        fleet: Fleet,
        work: Path,
        *,
        budget: int = 0,
        bake: str = "1s",
        min_healthy: str = "50%",
    ) -> None:
        self.fleet = fleet
        self.work = work
        self.private, self.public = generate_keypair(work / "keys", "lab")
        for host in fleet.hosts:
            dest = host.path(TRUST)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.public, dest)
            dest.chmod(0o644)
        self.pipeline = self._write_pipeline(budget, bake, min_healthy)

    def _write_pipeline(self, budget: int, bake: str, min_healthy: str) -> Path:
        fleet = self.fleet
        assert fleet.haproxy is not None
        half = (len(fleet.hosts) + 1) // 2
        azs: dict[str, list[dict[str, str]]] = {"lab-az1": [], "lab-az2": []}
        for i, h in enumerate(fleet.hosts):
            azs["lab-az1" if i < half else "lab-az2"].append(
                {"name": h.name, "address": h.ip, "lb": f"lab:{fleet.haproxy.backend}/{h.name}"}
            )
        topology = {"regions": {"lab-1": {"traffic": "low", "timezone": "UTC", "azs": azs}}}
        agent = f"{fleet.agent_path} --root {AGENT_ROOT} --trust {TRUST} rpc"
        pipeline: dict[str, Any] = {
            "name": "lab-app",
            "service": "demo-app",
            "environment": "lab",
            "topology": "topology.yaml",
            "deploy": {
                "ssh": {
                    "user": fleet.config.user,
                    "identity": str(fleet.client_key),
                    "known_hosts": str(fleet.known_hosts),
                    "connect_timeout": "5s",
                    "command_timeout": "2m",
                    "agent_command": agent,
                },
                "load_balancers": [
                    {
                        "name": "lab",
                        "driver": "haproxy",
                        "options": {"socket": str(fleet.haproxy.socket_path)},
                    }
                ],
                "drain_timeout": "10s",
                "state_dir": "state",
                "trust": [str(self.public)],
            },
            "unit": "az",
            "rolling": {
                "max_batch": 1,
                "min_healthy": min_healthy,
                "rollback_batch": "50%",
                "failure_budget": budget,
            },
            "onebox": {"bake": {"time": bake}},
            "stage_bake": {"time": bake},
            "windows": {"default": {"days": ["all"], "hours": "00:00-24:00"}},
            "waves": [{"name": "lab", "regions": ["lab-1"], "bake": {"time": "1s"}}],
            # The default 10s round would stretch each 1s bake to a round's length.
            "watch": {"interval": "1s"},
        }
        (self.work / "topology.yaml").write_text(json.dumps(topology))
        path = self.work / "pipeline.yaml"
        path.write_text(json.dumps(pipeline))  # JSON is YAML
        # The same pipeline (name, state, lock) with no bakes and one batch: a test's
        # setup install is not what it tests, so it need not wait.
        quick = {
            **pipeline,
            "rolling": {"max_batch": "100%", "min_healthy": "0%", "failure_budget": budget},
            "onebox": {"bake": {"time": "0s"}},
            "stage_bake": {"time": "0s"},
            "waves": [{"name": "lab", "regions": ["lab-1"], "bake": {"time": "0s"}}],
        }
        (self.work / "pipeline-quick.yaml").write_text(json.dumps(quick))
        return path

    def package(
        self,
        version: str,
        *,
        health_deadline: str = "",
        hook_prefix: dict[str, str] | None = None,
        **behaviour: object,
    ) -> Path:
        src = self.work / f"src-{version}"
        shutil.copytree(DEMO_APP, src)
        for name, prefix in (hook_prefix or {}).items():  # fault injection: runs first
            hook = src / "bin" / name
            hook.write_text(prefix + hook.read_text().split("\n", 1)[1])
        if health_deadline:  # a failing release fails sooner: keeps crash loops short
            spec = src / "fleetwave-package.yaml"
            text = spec.read_text()
            assert "deadline: 20s" in text
            spec.write_text(text.replace("deadline: 20s", f"deadline: {health_deadline}"))
        data = json.loads((src / "behaviour.json").read_text())
        data.update({"version": version, **behaviour})
        (src / "behaviour.json").write_text(json.dumps(data))
        return build_package(
            src, name="demo-app", version=version, private_key=self.private, out_dir=self.work
        )

    def cli(
        self, *args: str, env: dict[str, str] | None = None, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        full_env = self._env(env)
        proc = subprocess.run(
            [sys.executable, "-m", "fleetwave.cli", *args, "-f", str(self.pipeline)],
            capture_output=True,
            text=True,
            env=full_env,
            timeout=DEPLOY_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"{args}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    def start(self, *args: str) -> subprocess.Popen[str]:
        """``fleetwave ARGS -f pipeline`` in the background (stdin not a TTY)."""
        return subprocess.Popen(
            [sys.executable, "-m", "fleetwave.cli", *args, "-f", str(self.pipeline)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self._env(),
            stdin=subprocess.DEVNULL,
        )

    def _env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        path = os.pathsep.join([str(REPO / "controller"), str(REPO / "agent"), str(REPO)])
        return {**os.environ, "PYTHONPATH": path, **(extra or {})}

    def deploy(self, pkg: Path, **kw: object) -> subprocess.CompletedProcess[str]:
        return self.cli("deploy", str(pkg), "--yes", **kw)  # type: ignore[arg-type]

    def first_install(self, version: str = "1.0.0") -> Path:
        """Set up: ``version`` on every host at once, with no bakes, every host UP."""
        pkg = self.package(version)
        quick = self.work / "pipeline-quick.yaml"
        proc = subprocess.run(
            [sys.executable, "-m", "fleetwave.cli", "deploy", str(pkg), "--yes", "-f", str(quick)],
            capture_output=True,
            text=True,
            env=self._env(),
            timeout=DEPLOY_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
        if proc.returncode != 0:
            raise AssertionError(f"first install: exit {proc.returncode}\n{proc.stderr}")
        self.wait_all_up()
        return pkg

    def versions(self) -> dict[str, str | None]:
        out: dict[str, str | None] = {}
        for h in self.fleet.hosts:
            current = h.path(f"{AGENT_ROOT}/current")
            # The link target is a path inside the host's mount namespace: read, not resolve.
            target = os.readlink(current) if current.is_symlink() else None
            out[h.name] = Path(target).name.split("-")[0] if target else None
        return out

    def all_ready(self) -> bool:
        assert self.fleet.haproxy is not None
        return all(
            self.fleet.haproxy.server_status(h.name).startswith("UP") for h in self.fleet.hosts
        )

    def wait_all_up(self) -> None:
        assert self.fleet.haproxy is not None
        for h in self.fleet.hosts:
            self.fleet.haproxy.wait_status(h.name, "UP", timeout=30)

    def app_healthy(self, name: str) -> bool:
        """The host's app answers its health URL (what HAProxy checks), read directly."""
        host = self.fleet.host(name)
        try:
            with urllib.request.urlopen(f"http://{host.ip}:8080/health", timeout=2) as r:
                return bool(r.status == 200)
        except (OSError, ValueError):
            return False

    def check_rotation(self, settle_s: float = 10.0) -> None:
        """Issue 8's teardown check: once a deployment has ended (succeeded, rolled
        back, aborted or stopped by SIGTERM), every healthy host is UP in the balancer
        and every host that is not UP is named in the result (``status``'s
        ``out_of_rotation`` and ``failed``, the same list the result prints)."""
        assert self.fleet.haproxy is not None
        if not (self.work / "state" / "journal.db").exists():
            return  # no deployment was made
        status = json.loads(self.cli("status", "--json", check=True).stdout)
        row = status.get("deployment") or {}
        if row.get("state") not in ("finished", "interrupted", "aborted"):
            return  # still running (a SIGKILL the test did not resume): nothing ended
        named = set(status.get("out_of_rotation", {})) | set(status.get("failed", {}))
        # A healthy host out of rotation must be named too (an operator's MAINT host
        # is healthy and named), so both halves come to: not UP => named.
        deadline = time.monotonic() + settle_s  # HAProxy's checks need ~2 s to rise
        while True:
            states = {h.name: self.fleet.haproxy.server_status(h.name) for h in self.fleet.hosts}
            wrong = [n for n, st in states.items() if not st.startswith("UP") and n not in named]
            if not wrong:
                return
            if time.monotonic() > deadline:
                detail = [(n, states[n], "healthy" if self.app_healthy(n) else "unhealthy")
                          for n in wrong]  # fmt: skip
                raise AssertionError(
                    f"deployment {row.get('id')} ({row.get('state')} {row.get('result')}): "
                    f"hosts out of rotation and not named in the result: {detail}; "
                    f"named: {sorted(named)}"
                )
            time.sleep(0.5)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Callable[..., Lab]]:
    """``make(budget=0, **LabConfig fields)`` -> a Lab; every fleet is torn down."""
    reason = lab_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    made: list[Lab] = []
    with contextlib.ExitStack() as stack:

        def make(
            *, budget: int = 0, bake: str = "1s", min_healthy: str = "50%", **fields: Any
        ) -> Lab:
            fields.setdefault("hosts", 4)
            fleet = stack.enter_context(Fleet(LabConfig(**fields)))
            made.append(Lab(fleet, tmp_path, budget=budget, bake=bake, min_healthy=min_healthy))
            return made[-1]

        yield make
        for env in made:  # before the fleet goes: the check of every e2e deployment
            env.check_rotation()


def test_rolling_deployment_under_load_loses_no_request(lab: Callable[..., Lab]) -> None:
    env = lab()
    env.first_install()
    v2 = env.package("2.0.0")
    with env.fleet.load(workers=2, max_seconds=DEPLOY_TIMEOUT_S) as load:
        load.wait_requests(50)
        env.deploy(v2, check=True)
        load.wait_requests(50)  # 50 more after the deployment
        report = load.stop()
    assert report.failures == []
    assert set(env.versions().values()) == {"2.0.0"}
    assert env.all_ready()
    # The structured event log of both runs: every host step, and how each run ended.
    log = (env.work / "state" / "events.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in log]
    ends = [e["result"] for e in events if e["event"] == "DeploymentChanged" and e.get("result")]
    assert ends == ["succeeded", "succeeded"]
    installed = {e["host"] for e in events if e["event"] == "HostStep" and e["step"] == "install"}
    assert installed == {h.name for h in env.fleet.hosts}


def test_bad_release_past_budget_rolls_back_without_failed_requests(
    lab: Callable[..., Lab],
) -> None:
    env = lab(budget=0)
    env.first_install()
    bad = env.package("2.0.0", health="fail")
    with env.fleet.load(workers=2, max_seconds=DEPLOY_TIMEOUT_S) as load:
        load.wait_requests(50)
        proc = env.deploy(bad)
        report = load.stop()
    assert proc.returncode == 20, proc.stderr
    assert report.failures == []
    assert set(env.versions().values()) == {"1.0.0"}
    env.wait_all_up()
    history = env.cli("history", check=True).stdout
    assert "rolled_back" in history


def test_full_disk_on_one_host_fails_it_inside_the_budget(lab: Callable[..., Lab]) -> None:
    # min_healthy 0%: a full disk makes the victim's agent unusable (it cannot open a
    # session), so the probe counts it as not serving; the floor is not under test.
    env = lab(budget=1, srv_size="16m", min_healthy="0%")
    env.first_install()
    victim = env.fleet.hosts[-1]
    v2 = env.package("2.0.0")
    victim.fill_disk()
    try:
        proc = env.deploy(v2)
    finally:
        victim.free_disk()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"failed host {victim.name}" in proc.stderr
    versions = env.versions()
    assert versions[victim.name] == "1.0.0"
    assert {v for h, v in versions.items() if h != victim.name} == {"2.0.0"}


def test_changed_host_key_fails_that_host_and_never_touches_it(lab: Callable[..., Lab]) -> None:
    env = lab(budget=1)
    victim = env.fleet.hosts[-1]
    victim.regenerate_host_key()
    proc = env.deploy(env.package("1.0.0"))
    assert proc.returncode == 0, proc.stderr
    assert "HostKeyError" in proc.stderr
    assert env.versions()[victim.name] is None
    assert not victim.path(AGENT_ROOT).exists() or not any(victim.path(AGENT_ROOT).iterdir())


def test_sshd_dropping_connections_is_survived_by_retries(lab: Callable[..., Lab]) -> None:
    env = lab(max_startups="1:90:2")
    env.deploy(env.package("1.0.0"), check=True)
    assert set(env.versions().values()) == {"1.0.0"}


# Every kind of journal write a forward run and a rollback make (the runner's
# intents, outcomes, facts and the engine's events): the controller is SIGKILLed right
# after each, then `fleetwave resume` must leave every host ready in HAProxy on exactly
# one complete release.
FORWARD_KILL_POINTS = (
    "event:DeploymentStarted",
    "intent:ProbeStage",
    "event:StageProbed",
    "intent:DrainHost",
    "outcome:DrainHost",
    "event:HostDrained",
    "intent:InstallOnHost",
    "fact:before",
    "outcome:InstallOnHost",
    "event:HostInstalled",
    "intent:ReturnHost",
    "outcome:ReturnHost",
    "event:HostReturned",
    "intent:WaitUntil",
    "event:TimerElapsed",
)
ROLLBACK_KILL_POINTS = (
    "event:HostFailed",
    "intent:RollbackHost",
    "outcome:RollbackHost",
    "event:HostRolledBack",
)


def _kill_then_resume(env: Lab, pkg: Path, point: str) -> subprocess.CompletedProcess[str]:
    proc = env.deploy(pkg, env={"FLEETWAVE_TEST_KILL_AT": point})
    assert proc.returncode == -9, f"{point}: not killed (exit {proc.returncode}): {proc.stderr}"
    status = json.loads(env.cli("status", "--json", check=True).stdout)
    lock_id = status["lock"]["lock_id"] if status["lock"] else None
    args = ["resume"] + (["--force-unlock", lock_id] if lock_id else [])
    return env.cli(*args)


def test_sigkill_after_every_forward_step_then_resume(lab: Callable[..., Lab]) -> None:
    env = lab(hosts=3)
    env.first_install()
    for number, point in enumerate(FORWARD_KILL_POINTS, start=2):
        version = f"{number}.0.0"
        resumed = _kill_then_resume(env, env.package(version), point)
        assert resumed.returncode == 0, f"{point}: resume: {resumed.stderr}"
        env.wait_all_up()
        assert set(env.versions().values()) == {version}, point


# The release fails to start on the host marked /srv/fail-start only: the hosts before
# it are updated, then its failure (budget 0) rolls them back with RollbackHost. (A
# release failing everywhere fails on the first host, whose agent undoes the install
# by itself: nothing would be rolled back by the controller.)
_FAIL_START_IF_MARKED = """#!/usr/bin/env python3
import sys as _sys
from pathlib import Path as _Path
if _Path("/srv/fail-start").exists():
    _sys.exit("start: this host is marked to fail")
"""


def test_sigkill_after_every_rollback_step_then_resume(lab: Callable[..., Lab]) -> None:
    env = lab(hosts=3)
    env.first_install()
    env.fleet.hosts[-1].path("/srv/fail-start").write_text("")
    for number, point in enumerate(ROLLBACK_KILL_POINTS, start=2):
        prefix = {"start": _FAIL_START_IF_MARKED}
        bad = env.package(f"{number}.0.0", health_deadline="3s", hook_prefix=prefix)
        resumed = _kill_then_resume(env, bad, point)
        assert resumed.returncode == 20, f"{point}: resume should finish the rollback: {resumed}"
        env.wait_all_up()
        assert set(env.versions().values()) == {"1.0.0"}, point


def _wait_for(proc: subprocess.Popen[str], lab: Lab, phase: str, timeout: float = 60.0) -> None:
    """Poll ``fleetwave status --json`` until some host reached ``phase`` (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            _out, err = proc.communicate(timeout=10)
            raise AssertionError(f"controller ended early (exit {proc.returncode}): {err[-3000:]}")
        status = json.loads(lab.cli("status", "--json", check=True).stdout)
        running = status.get("deployment", {}).get("state") == "running"
        if running and status.get("hosts", {}).get(phase):
            return
        time.sleep(0.5)
    raise AssertionError(f"no host reached {phase} within {timeout} s")


def test_ctrl_c_rolls_back_and_double_ctrl_c_aborts_resumably(lab: Callable[..., Lab]) -> None:
    env = lab(hosts=3, bake="10s")
    env.first_install()
    # One Ctrl-C without a TTY: roll back.
    proc = env.start("deploy", str(env.package("2.0.0")), "--yes")
    _wait_for(proc, env, "done")
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=DEPLOY_TIMEOUT_S)
    assert proc.returncode == 20, err
    assert set(env.versions().values()) == {"1.0.0"}
    env.wait_all_up()
    # Two quick Ctrl-Cs: abort without rolling back; resume finishes the deployment.
    proc = env.start("deploy", str(env.package("3.0.0")), "--yes")
    _wait_for(proc, env, "done")
    proc.send_signal(signal.SIGINT)
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    status = json.loads(env.cli("status", "--json", check=True).stdout)
    assert status["deployment"]["state"] == "interrupted"
    assert status["resumable"]
    env.cli("resume", check=True)
    env.wait_all_up()
    assert set(env.versions().values()) == {"3.0.0"}


def test_ctrl_c_at_a_terminal_asks_then_rolls_back(lab: Callable[..., Lab]) -> None:
    """With a terminal on stdin, deploy asks first, and Ctrl-C asks before rolling back."""
    env = lab(hosts=3, bake="10s")
    env.first_install()
    controller, terminal = pty.openpty()
    try:
        package = str(env.package("2.0.0"))
        proc = subprocess.Popen(
            [sys.executable, "-m", "fleetwave.cli", "deploy", package, "-f", str(env.pipeline)],
            stdin=terminal,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env._env(),
        )
        os.close(terminal)
        os.write(controller, b"y\n")  # Deploy? [y/N]
        _wait_for(proc, env, "done")
        proc.send_signal(signal.SIGINT)
        os.write(controller, b"y\n")  # roll back? [y/N]
        out, err = proc.communicate(timeout=DEPLOY_TIMEOUT_S)
    finally:
        os.close(controller)
    assert "Deploy? [y/N]" in out
    assert "roll back? [y/N]" in err
    assert proc.returncode == 20, err
    assert set(env.versions().values()) == {"1.0.0"}
    env.wait_all_up()


# -- issue 8: faults survived, operators' choices kept, a clean stop -------------------


def _host_in_step(env: Lab, step: str, timeout: float = 60.0) -> str:
    """The host whose ``step`` has started last and not ended (from the event log)."""
    log = env.work / "state" / "events.jsonl"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        open_steps: dict[str, str] = {}
        for line in log.read_text().splitlines() if log.exists() else []:
            e = json.loads(line)
            if e.get("event") == "HostStep" and e.get("step") == step:
                if e["outcome"] == "start":
                    open_steps[e["host"]] = e["host"]
                else:
                    open_steps.pop(e["host"], None)
        if open_steps:
            return next(iter(open_steps))
        time.sleep(0.05)
    raise AssertionError(f"no host in {step} within {timeout} s")


def _children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (processes the lab's sshd started), from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, parent in parents.items() if parent == p]
        out += kids
        todo += kids
    return out


def test_sigterm_during_rolling_then_resume_ends_on_one_release_all_up(
    lab: Callable[..., Lab],
) -> None:
    env = lab(hosts=4, bake="5s")
    env.first_install()
    proc = env.start("deploy", str(env.package("2.0.0")), "--yes")
    _wait_for(proc, env, "done")
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=DEPLOY_TIMEOUT_S)
    assert proc.returncode == 130, err
    status = json.loads(env.cli("status", "--json", check=True).stdout)
    assert status["deployment"]["state"] == "interrupted"
    assert status["resumable"]
    env.wait_all_up()  # the steps in flight finished: nothing left drained by the stop
    versions = set(env.versions().values())
    assert versions <= {"1.0.0", "2.0.0"}
    assert len(versions) == 2  # it really stopped mid-way
    resumed = env.cli("resume")
    assert resumed.returncode == 0, resumed.stderr
    env.wait_all_up()
    assert set(env.versions().values()) == {"2.0.0"}


def test_an_operators_maint_host_stays_in_maint_on_its_old_release(
    lab: Callable[..., Lab],
) -> None:
    env = lab(hosts=4, min_healthy="0%")
    env.first_install()
    assert env.fleet.haproxy is not None
    victim = env.fleet.hosts[1].name
    env.fleet.haproxy.admin(f"set server {env.fleet.haproxy.backend}/{victim} state maint")
    env.fleet.haproxy.wait_status(victim, "MAINT")
    proc = env.deploy(env.package("2.0.0"))
    assert proc.returncode == 0, proc.stderr
    assert f"out of rotation: {victim}" in proc.stderr
    versions = env.versions()
    assert versions[victim] == "1.0.0"
    assert {v for h, v in versions.items() if h != victim} == {"2.0.0"}
    assert env.fleet.haproxy.server_status(victim).startswith("MAINT")
    status = json.loads(env.cli("status", "--json", check=True).stdout)
    assert victim in status["skipped"]


def test_sshd_killed_for_seconds_mid_rolling_is_survived_without_a_new_deployment(
    lab: Callable[..., Lab],
) -> None:
    env = lab(hosts=4, bake="2s")
    env.first_install()
    proc = env.start("deploy", str(env.package("2.0.0")), "--yes")
    victim = env.fleet.host(_host_in_step(env, "install"))
    listener = victim.sshd_pid
    assert listener is not None
    # the listener and every session it started (the agent's too): a lost session
    for pid in [*_children(listener), listener]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    victim.kill_sshd()
    time.sleep(3)
    victim.start_sshd()
    victim.wait_sshd()
    _out, err = proc.communicate(timeout=DEPLOY_TIMEOUT_S)
    env.wait_all_up()
    versions = set(env.versions().values())
    assert len(versions) == 1, (versions, err)
    assert proc.returncode in (0, 20), err  # forward or rolled back, never split


# The stop hook of the release being replaced kills its agent once, after the app
# stopped and before the switch (the agent checkpointed "stopping").
_KILL_AGENT_ONCE = """#!/usr/bin/env python3
import atexit as _atexit, os as _os, signal as _signal
from pathlib import Path as _Path
_m = _Path("/srv/kill-agent-once")
if _m.exists() and _m.read_text() == "armed":
    _m.write_text("fired")
    _atexit.register(lambda: _os.kill(_os.getppid(), _signal.SIGKILL))
"""


def test_agent_killed_between_its_stop_hook_and_the_switch_recovers(
    lab: Callable[..., Lab],
) -> None:
    env = lab(hosts=4, bake="2s")
    v1 = env.package("1.0.0", hook_prefix={"stop": _KILL_AGENT_ONCE})
    env.deploy(v1, check=True)
    env.wait_all_up()
    victim = env.fleet.hosts[0]
    marker = victim.path("/srv/kill-agent-once")
    marker.write_text("armed")
    marker.chmod(0o666)
    proc = env.deploy(env.package("2.0.0"))
    assert marker.read_text() == "fired", "the fault was not injected"
    env.wait_all_up()
    versions = set(env.versions().values())
    assert len(versions) == 1, (versions, proc.stderr)
    assert proc.returncode in (0, 20), proc.stderr
