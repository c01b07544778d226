#!/usr/bin/env python3
"""The fleet act of ``scripts/demo``: a real rolling deployment and an automatic rollback.

It builds a fleet of network-namespace hosts (real sshd, the real agent, HAProxy in
front; ``tests.lab``), signs three releases of ``examples/demo-app`` with the
``fleetwave`` CLI, deploys v1, rolls v2 out under steady client load, then deploys a v3
whose health check fails on the one-box so the deployment rolls itself back. The fleet
is always torn down, also on error, Ctrl-C or SIGTERM.

Run it as root from the repository's venv: ``python examples/fleet-demo/demo.py``
(``--quick`` for a smaller, faster fleet; ``--work DIR`` for where files go). Exit
status: 0 when every act behaved as shown, 1 otherwise (after teardown). Without root
or ``ip netns`` it prints why and exits 0, as there is nothing it can show.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import string
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # the namespace lab lives in tests/lab

import yaml  # noqa: E402
from tests.lab import Fleet, LabConfig, LoadReport, lab_unavailable_reason  # noqa: E402

HERE = Path(__file__).resolve().parent
DEMO_APP = REPO / "examples" / "demo-app"
TRUST = "/srv/fleetwave/trusted.pub"  # inside each host; the pipeline's agent_command
AGENT_ROOT = "/srv/fleetwave/agent"
CLI_TIMEOUT_S = 240.0
# Exit statuses of `fleetwave deploy` (docs/engine.md, "Results and exit codes").
DEPLOY_RESULTS = {
    0: "succeeded",
    20: "rolled_back: the deployment failed and every touched host was rolled back",
    21: "rollback_incomplete",
    130: "aborted",
}
# The bad release fails its health check; a shorter deadline than the app's 20 s
# keeps the demo brisk without changing what happens.
BAD_HEALTH_DEADLINE = "6s"
# The journal steps of `fleetwave explain` worth showing a newcomer.
EXPLAIN_KEY_STEPS = frozenset(
    {"DeploymentStarted", "before", "HostFailed", "RollbackHost", "HostRolledBack",
     "HostReturned", "Finish"}
)  # fmt: skip


class DemoError(Exception):
    """A step of the demo did not do what it should; the message says which."""


class Interrupted(BaseException):
    """SIGTERM: unwind like Ctrl-C so the fleet is torn down."""


@dataclass(frozen=True)
class Settings:
    hosts: int
    bake: str
    work: Path


def header(text: str) -> None:
    """One bold line per act, so a newcomer can follow the story."""
    bold = sys.stdout.isatty()
    line = f"==> {text}"
    print(f"\n\033[1m{line}\033[0m" if bold else f"\n{line}", flush=True)


def say(text: str = "") -> None:
    print(text, flush=True)


class Demo:
    """The acts, run against one fleet and one work directory."""

    def __init__(self, fleet: Fleet, settings: Settings) -> None:
        self.fleet = fleet
        self.settings = settings
        self.work = settings.work
        self.cli_path = Path(sys.executable).parent / "fleetwave"
        self.pipeline = self.work / "pipeline.yaml"
        self.packages: dict[str, Path] = {}

    # -- running the CLI ------------------------------------------------------------

    def fleetwave(self, *args: str, echo: bool = True, show: bool = True) -> tuple[int, str]:
        """Run ``fleetwave ARGS`` in the work directory, echoing the command and
        streaming its output (stdout and stderr merged) indented; bounded in time."""
        if echo:
            say("$ fleetwave " + " ".join(args))
        proc = subprocess.Popen(
            [str(self.cli_path), *args],
            cwd=self.work,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            # Its own session: Ctrl-C reaches only the driver, which then ends it.
            start_new_session=True,
        )
        lines: list[str] = []

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line.rstrip("\n"))
                if show:
                    say("    " + line.rstrip("\n"))

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            proc.wait(timeout=CLI_TIMEOUT_S)
        except subprocess.TimeoutExpired as exc:
            raise DemoError(f"fleetwave {args[0]} did not finish in {CLI_TIMEOUT_S:.0f} s") from exc
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
            reader.join(timeout=5)
        return proc.returncode, "\n".join(lines)

    def must(self, *args: str, show: bool = True) -> str:
        """``fleetwave ARGS`` that must exit 0; its output otherwise becomes the error."""
        code, out = self.fleetwave(*args, show=show)
        if code != 0:
            # Shown output is already on screen; hidden output's tail goes in the error.
            tail = "" if show else ":\n" + "\n".join(out.splitlines()[-5:])
            raise DemoError(f"fleetwave {' '.join(args)} exited {code}{tail}")
        return out

    # -- acts -----------------------------------------------------------------------

    def show_fleet(self) -> None:
        haproxy = self.fleet.haproxy
        assert haproxy is not None
        half = (len(self.fleet.hosts) + 1) // 2
        for i, host in enumerate(self.fleet.hosts):
            az = "demo-az1" if i < half else "demo-az2"
            say(f"  {host.name:<20} {host.ip:<15} {az}  sshd on :22, netns {host.netns}")
        say(f"  HAProxy frontend {haproxy.frontend_url}/  (backend '{haproxy.backend}',")
        say(f"    runtime API {haproxy.socket_path})")
        say(f"  deploy user '{self.fleet.config.user}' (not root), agent root {AGENT_ROOT}")

    def build_packages(self) -> None:
        self.must("keygen", "--out", "keys", "--name", "demo")
        for version, behaviour, deadline in (
            ("1.0.0", {}, None),
            ("2.0.0", {}, None),
            ("3.0.0", {"health": "fail"}, BAD_HEALTH_DEADLINE),
        ):
            src = self._source(version, behaviour, deadline)
            self.must(
                "package", "build", src.name, "--name", "demo-app", "--version", version,
                "--key", "keys/demo.key", "--out", "pkgs",
            )  # fmt: skip
            found = sorted((self.work / "pkgs").glob(f"demo-app-{version}*.fwpkg"))
            if len(found) != 1:
                raise DemoError(f"package build {version}: expected one .fwpkg, found {found}")
            self.packages[version] = found[0]
        say('  v3.0.0 is the bad one: behaviour.json sets "health": "fail"')

    def _source(self, version: str, behaviour: dict[str, str], deadline: str | None) -> Path:
        src = self.work / f"src-{version}"
        shutil.copytree(DEMO_APP, src)
        data = json.loads((src / "behaviour.json").read_text())
        data.update({"version": version, **behaviour})
        (src / "behaviour.json").write_text(json.dumps(data) + "\n")
        if deadline is not None:
            manifest = src / "fleetwave-package.yaml"
            text = manifest.read_text()
            if "deadline: 20s" not in text:
                raise DemoError(f"{manifest}: no 'deadline: 20s' to shorten for the bad release")
            manifest.write_text(text.replace("deadline: 20s", f"deadline: {deadline}"))
        return src

    def install_trust_and_pipeline(self) -> None:
        public = self.work / "keys" / "demo.pub"
        for host in self.fleet.hosts:
            dest = host.path(TRUST)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(public, dest)
            dest.chmod(0o644)
        say(f"  copied keys/demo.pub to {TRUST} on {len(self.fleet.hosts)} hosts")
        self._render_pipeline()
        say("  rendered pipeline.yaml and topology.yaml from examples/fleet-demo/")

    def _render_pipeline(self) -> None:
        fleet = self.fleet
        assert fleet.haproxy is not None
        half = (len(fleet.hosts) + 1) // 2
        azs: dict[str, list[dict[str, str]]] = {"demo-az1": [], "demo-az2": []}
        for i, host in enumerate(fleet.hosts):
            azs["demo-az1" if i < half else "demo-az2"].append(
                {
                    "name": host.name,
                    "address": host.ip,
                    "lb": f"lab:{fleet.haproxy.backend}/{host.name}",
                }
            )
        topology = {"regions": {"demo-1": {"traffic": "low", "timezone": "UTC", "azs": azs}}}
        (self.work / "topology.yaml").write_text(yaml.safe_dump(topology, sort_keys=False))
        template = string.Template((HERE / "pipeline.yaml.in").read_text())
        self.pipeline.write_text(
            template.substitute(
                user=fleet.config.user,
                identity=fleet.client_key,
                known_hosts=fleet.known_hosts,
                agent=fleet.agent_path,
                haproxy_socket=fleet.haproxy.socket_path,
                bake=self.settings.bake,
            )
        )

    def deploy(self, version: str, *, expect: int) -> str:
        """``fleetwave deploy`` of one package, which must exit ``expect``; its output."""
        pkg = self.packages[version].relative_to(self.work)
        code, out = self.fleetwave("deploy", str(pkg), "-f", "pipeline.yaml", "--yes")
        say(f"  exit status {code}: {DEPLOY_RESULTS.get(code, 'unexpected')}")
        if code != expect:
            raise DemoError(f"deploy of {version} exited {code}, expected {expect}")
        return out

    def deploy_under_load(self, version: str, *, expect: int) -> tuple[LoadReport, str]:
        """:meth:`deploy` with steady client requests through HAProxy from before the
        deployment starts until after it ends."""
        haproxy = self.fleet.haproxy
        assert haproxy is not None
        with self.fleet.load(workers=2, max_seconds=CLI_TIMEOUT_S + 60) as load:
            load.wait_requests(20)
            say(f"  client load: 2 workers -> {haproxy.frontend_url}/")
            out = self.deploy(version, expect=expect)
            load.wait_requests(20)
            return load.stop(), out

    def show_load(self, report: LoadReport) -> None:
        say(f"  load report: {report.requests} requests sent, {len(report.failures)} failed")
        served = ", ".join(f"{name} {n}" for name, n in sorted(report.by_server.items()))
        say(f"  served by: {served or 'nobody'}")
        for failure in report.failures[:5]:
            say(f"    failed at +{failure.at}s: {failure.what}")
        if report.failures:
            raise DemoError(f"{len(report.failures)} client requests failed during the deployment")

    def wait_all_ready(self, timeout: float = 30.0) -> None:
        haproxy = self.fleet.haproxy
        assert haproxy is not None
        for host in self.fleet.hosts:
            haproxy.wait_status(host.name, "UP", timeout=timeout)

    def versions(self) -> dict[str, str | None]:
        """Each host's current release, read from its agent root's ``current`` link."""
        out: dict[str, str | None] = {}
        for host in self.fleet.hosts:
            current = host.path(f"{AGENT_ROOT}/current")
            # The link target is a path in the host's mount namespace: read, not resolve.
            target = os.readlink(current) if current.is_symlink() else None
            out[host.name] = Path(target).name.split("-")[0] if target else None
        return out

    def show_hosts(self, expect_version: str) -> None:
        haproxy = self.fleet.haproxy
        assert haproxy is not None
        self.wait_all_ready()
        versions = self.versions()
        for host in self.fleet.hosts:
            status = haproxy.server_status(host.name)
            say(f"  {host.name:<20} release {versions[host.name]}  HAProxy {status}")
        wrong = {h: v for h, v in versions.items() if v != expect_version}
        if wrong:
            raise DemoError(f"hosts not on {expect_version}: {wrong}")

    def latest_deployment_id(self) -> str:
        _code, out = self.fleetwave(
            "status", "-f", "pipeline.yaml", "--json", echo=False, show=False
        )
        try:
            status = json.loads(out)
            return str(status["deployment"]["id"])
        except (ValueError, KeyError, TypeError) as exc:
            raise DemoError(f"fleetwave status --json: no deployment id in {out[:200]!r}") from exc

    def explain(self, deployment: str) -> None:
        """``fleetwave explain``, trimmed to the steps that tell the story."""
        say(f"$ fleetwave explain {deployment} -f pipeline.yaml   (trimmed to the key steps)")
        code, out = self.fleetwave(
            "explain", deployment, "-f", "pipeline.yaml", echo=False, show=False
        )
        if code != 0:
            raise DemoError(f"fleetwave explain {deployment} exited {code}: {out[-300:]}")
        lines = out.splitlines()
        kept = [
            line
            for line in lines
            # Untimestamped lines are the header and the result; the rest by step name.
            if not line[:1].isdigit() or EXPLAIN_KEY_STEPS.intersection(line.split()[3:4])
        ]
        for line in kept:
            say("    " + (line if len(line) <= 240 else line[:237] + "..."))
        say(f"    ({len(lines) - len(kept)} of {len(lines)} lines left out)")


def run_acts(demo: Demo) -> list[str]:
    """Acts 1-5; returns the summary lines. Raises DemoError on the first surprise."""
    header(f"Act 1: a fleet of {len(demo.fleet.hosts)} hosts in 1 region, 2 AZs, behind HAProxy")
    demo.show_fleet()

    header("Act 2: a signing key, then demo-app v1, v2 (good) and v3 (bad), signed")
    demo.build_packages()

    header("Act 3: trust the key on every host, render the pipeline, show the plan")
    demo.install_trust_and_pipeline()
    demo.must("plan", "-f", "pipeline.yaml")

    header("Act 4: deploy v1 (first install), then v2 under steady client load")
    demo.deploy("1.0.0", expect=0)
    demo.wait_all_ready()
    v2, _ = demo.deploy_under_load("2.0.0", expect=0)
    demo.show_load(v2)
    demo.show_hosts("2.0.0")

    header("Act 5: deploy the bad v3 under load: the one-box fails health, it rolls back")
    v3, out = demo.deploy_under_load("3.0.0", expect=20)
    # A rollback for any other reason (e.g. a broken agent) must not pass for this story.
    failed = [line.strip() for line in out.splitlines() if "install failed" in line]
    if not failed or any("health check" not in line for line in failed):
        raise DemoError(f"v3 was expected to fail its health check, got: {failed or out[-500:]}")
    demo.explain(demo.latest_deployment_id())
    demo.show_load(v3)
    demo.show_hosts("2.0.0")

    return [
        f"fleet: {len(demo.fleet.hosts)} namespace hosts, 2 AZs, HAProxy in front",
        "v1.0.0 installed everywhere; v2.0.0 rolled out one host at a time, "
        f"{v2.requests} client requests, {len(v2.failures)} failed",
        "v3.0.0 failed its health check on the one-box and was rolled back automatically "
        f"(exit 20); {v3.requests} client requests, {len(v3.failures)} failed",
        "every host back on 2.0.0 and UP in HAProxy",
    ]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="3 hosts and 1 s bakes (for tests)")
    parser.add_argument("--hosts", type=int, help="fleet size (default 6, 3 with --quick)")
    parser.add_argument(
        "--check",
        action="store_true",
        help="only say whether the fleet act can run here (exit 0) or why not (exit 3)",
    )
    parser.add_argument("--work", type=Path, default=REPO / "demo-out" / "fleet")
    return parser.parse_args(argv)


def _on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise Interrupted


def main(argv: Sequence[str] | None = None) -> int:
    """Run the fleet demo; see the module docstring for the exit status."""
    args = parse_args(argv)
    reason = lab_unavailable_reason()
    if reason is not None:
        say(
            f"fleet act skipped: {reason} (the fleet act builds network-namespace hosts "
            "with real sshd and HAProxy, which needs root and ip netns)"
        )
        return 3 if args.check else 0
    if args.check:
        return 0
    hosts = args.hosts or (3 if args.quick else 6)
    if not 2 <= hosts <= 20:
        say(f"demo: --hosts must be 2..20, got {hosts}")
        return 2
    work: Path = args.work.resolve()
    settings = Settings(hosts=hosts, bake="1s" if args.quick else "3s", work=work)
    if work.exists():
        shutil.rmtree(work)
    (work / "pkgs").mkdir(parents=True)
    signal.signal(signal.SIGTERM, _on_sigterm)
    started = time.monotonic()
    summary: list[str] = []
    error: str | None = None
    try:
        with Fleet(LabConfig(hosts=hosts)) as fleet:
            try:
                summary = run_acts(Demo(fleet, settings))
            finally:
                header("Act 6: tear the fleet down (namespaces, sshd, apps, HAProxy)")
                fleet.teardown()
                left = {k: v for k, v in fleet.leftovers().items() if v}
                say(f"  leftovers: {left or 'none'}")
                if left:
                    error = f"teardown left {left}"
    except DemoError as exc:
        error = str(exc)
    except (KeyboardInterrupt, Interrupted):
        say("\ndemo: interrupted; the fleet was torn down")
        return 130
    except Exception as exc:  # any failure ends the demo with its one-line message
        error = f"{type(exc).__name__}: {exc}"
    elapsed = time.monotonic() - started
    if error is not None:
        say(f"\ndemo: FAILED: {error}")
        return 1
    header(f"Summary ({elapsed:.0f} s)")
    for line in summary:
        say(f"  - {line}")
    say(f"  - files: {work} (pipeline.yaml, topology.yaml, pkgs/, state/journal.db)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
