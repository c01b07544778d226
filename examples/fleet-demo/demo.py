#!/usr/bin/env python3
"""The story of ``scripts/demo``: a bad change caught on one box by its metrics.

Four releases of ``examples/demo-app`` are signed and deployed with the ``fleetwave``
CLI, under steady client load:

1. v1, the first install, everywhere;
2. v2 answers 50% of requests with 500 while its health check passes: the one-box
   alarm on the agent's error ratio fires and the deployment is rolled back before a
   second host is touched;
3. v3 carries a latent fault (``fault_after_s``): healthy at activation, failing a few
   seconds into the one-box bake, which catches it;
4. v4, good, all the way; then the decision trail (``fleetwave explain``) of v2 and v3.

As root (and with ``ip netns``) the hosts are network namespaces with real sshd behind
HAProxy, with a real Prometheus scraping the agents when it is installed. Otherwise,
or with ``--nonroot`` / ``FLEETWAVE_DEMO_NONROOT=1``, they are in-process SSH hosts
running the real agent code, behind HAProxy if it is on PATH, else behind no balancer.

Everything goes to ``--work`` (default ``demo-out/fleet``); the fleet is torn down on
every exit, Ctrl-C and SIGTERM included. Exit status: 0 when every act behaved as
shown, 1 otherwise, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
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
from pathlib import Path
from types import FrameType
from typing import Any

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
for _path in (REPO, HERE):  # the test fleets live in tests/, the fleet kinds next to us
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import yaml  # noqa: E402
from fleets import (  # noqa: E402
    DemoFleet,
    InprocFleet,
    Load,
    NamespaceFleet,
    current_versions,
)
from tests.lab import LoadReport, free_port, lab_unavailable_reason  # noqa: E402

DEMO_APP = REPO / "examples" / "demo-app"
CLI_TIMEOUT_S = 240.0
#: After Ctrl-C, how long a running ``fleetwave`` gets to abort cleanly.
CLI_ABORT_S = 20.0
# Exit statuses of `fleetwave deploy` (docs/engine.md, "Results and exit codes").
DEPLOY_RESULTS = {0: "succeeded", 20: "rolled_back", 21: "rollback_incomplete", 130: "aborted"}
ONEBOX_BAKE = "15s"
#: The releases: version -> (behaviour.json changes, what it is).
RELEASES: dict[str, tuple[dict[str, Any], str]] = {
    "1.0.0": ({}, "good"),
    "2.0.0": ({"error_rate": 0.5}, "50% of requests answer 500; /health still 200"),
    "3.0.0": (
        {"error_rate": 0.6, "fault_after_s": 5},
        "a latent fault: 60% 500s from 5 s after start, healthy before",
    ),
    "4.0.0": ({}, "good"),
}


class DemoError(Exception):
    """A step did not do what the demo says it does; the message says which."""


class Interrupted(BaseException):
    """SIGTERM: unwind like Ctrl-C so the fleet is torn down."""


def header(text: str) -> None:
    """One bold line per act, so a newcomer can follow the story."""
    line = f"==> {text}"
    print(f"\n\033[1m{line}\033[0m" if sys.stdout.isatty() else f"\n{line}", flush=True)


def say(text: str = "") -> None:
    print(text, flush=True)


class Cli:
    """Runs ``fleetwave`` in the work directory, as a user would."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.path = Path(sys.executable).parent / "fleetwave"

    def run(self, *args: str, show: bool = True, live: bool = False) -> tuple[int, str]:
        """``fleetwave ARGS``; output indented on screen when ``show``. With ``live`` and
        a terminal, the command writes to the terminal itself (its live view)."""
        if show:
            say("$ fleetwave " + " ".join(args))
        inherit = live and sys.stdout.isatty()
        proc = subprocess.Popen(
            [str(self.path), *args],
            cwd=self.work,
            stdout=None if inherit else subprocess.PIPE,
            stderr=None if inherit else subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            # Its own session: Ctrl-C reaches the demo only, which then asks it to abort.
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
        if proc.stdout is not None:
            reader.start()
        try:
            proc.wait(timeout=CLI_TIMEOUT_S)
        except subprocess.TimeoutExpired as exc:
            raise DemoError(f"fleetwave {args[0]} did not finish in {CLI_TIMEOUT_S:.0f} s") from exc
        finally:
            if proc.poll() is None:  # interrupted: let it abort, bounded, then kill it
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=CLI_ABORT_S)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
            if reader.is_alive():
                reader.join(timeout=5)
        return proc.returncode, "\n".join(lines)

    def must(self, *args: str, show: bool = True) -> str:
        code, out = self.run(*args, show=show)
        if code != 0:
            tail = "" if show else ":\n" + "\n".join(out.splitlines()[-5:])
            raise DemoError(f"fleetwave {' '.join(args)} exited {code}{tail}")
        return out

    def json_lines(self, *args: str) -> list[dict[str, Any]]:
        out = self.must(*args, "--json", show=False)
        try:
            return [json.loads(line) for line in out.splitlines() if line.strip()]
        except ValueError as exc:
            raise DemoError(f"fleetwave {args[0]} --json: not JSON lines: {out[:200]!r}") from exc


class Story:
    """The acts, against one fleet and one work directory."""

    def __init__(self, fleet: DemoFleet, cli: Cli, packages: dict[str, Path]) -> None:
        self.fleet = fleet
        self.cli = cli
        self.work = cli.work
        self.packages = packages
        self.deployments: dict[str, str] = {}

    def render_pipeline(self) -> None:
        azs: dict[str, list[dict[str, Any]]] = {"demo-az1": [], "demo-az2": []}
        for h in self.fleet.hosts:
            entry: dict[str, Any] = {"name": h.name, "address": h.address}
            if h.ssh_port:
                entry["port"] = h.ssh_port
            if h.lb:
                entry["lb"] = h.lb
            azs[h.az].append(entry)
        topology = {"regions": {"demo-1": {"traffic": "low", "timezone": "UTC", "azs": azs}}}
        (self.work / "topology.yaml").write_text(yaml.safe_dump(topology, sort_keys=False))
        template = string.Template((HERE / "pipeline.yaml.in").read_text())
        (self.work / "pipeline.yaml").write_text(
            template.substitute(
                ssh=json.dumps(self.fleet.ssh()),
                load_balancers=json.dumps(self.fleet.load_balancers()),
                onebox_bake=ONEBOX_BAKE,
            )
        )

    def show_addresses(self) -> None:
        say("  agent exporters (the agent's standard metrics, Prometheus text):")
        for h in self.fleet.hosts:
            say(f"    {h.name:<16} {h.exporter_url}")
        say("  controller metrics: http://127.0.0.1:PORT/metrics while a deploy runs")
        say("    (fleetwave deploy --metrics-port PORT; each deploy below prints its port)")
        prom = self.fleet.prometheus_url()
        if prom is not None:
            say(f"  Prometheus {prom} scrapes every agent exporter and the controller, every 1 s")
        else:
            say("  no Prometheus here (it runs with the root fleet); scrape the addresses above")

    def deploy(self, version: str, *, expect: int, load: Load | None = None) -> str:
        """``fleetwave deploy`` of one release, which must exit ``expect``; returns the
        deployment id (from ``status --json``)."""
        port = free_port()
        self.fleet.scrape(f"127.0.0.1:{port}")
        say(f"  controller metrics: http://127.0.0.1:{port}/metrics")
        pkg = self.packages[version].relative_to(self.work)
        code, _out = self.cli.run(
            "deploy", str(pkg), "-f", "pipeline.yaml", "--yes", "--metrics-port", str(port),
            live=True,
        )  # fmt: skip
        if load is not None:
            load.wait_requests(10)  # traffic after the deployment too
        say(f"  exit status {code}: {DEPLOY_RESULTS.get(code, 'unexpected')}")
        if code != expect:
            raise DemoError(f"deploy of {version} exited {code}, expected {expect}")
        out = self.cli.must("status", "-f", "pipeline.yaml", "--json", show=False)
        try:
            dep = str(json.loads(out)["deployment"]["id"])
        except (IndexError, KeyError, TypeError) as exc:
            raise DemoError(f"fleetwave status --json: no deployment id in {out[:200]!r}") from exc
        self.deployments[version] = dep
        return dep

    def trail(self, dep: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(decision trail, journal steps) of deployment ``dep``, from ``explain --json``."""
        lines = self.cli.json_lines("explain", dep, "-f", "pipeline.yaml")
        if not lines or "trail" not in lines[0]:
            raise DemoError(f"fleetwave explain {dep} --json: no trail")
        return lines[0]["trail"], lines[1:]

    def hosts_installed(self, steps: list[dict[str, Any]]) -> set[str]:
        return {
            s["host"]
            for s in steps
            if s.get("kind") == "intent" and s.get("name") == "InstallOnHost"
        }

    def check_settled(self, version: str) -> None:
        """Every host on ``version`` (and UP in the balancer, when there is one)."""
        self.fleet.wait_ready()
        versions = current_versions(self.fleet)
        for h in self.fleet.hosts:
            lb = self.fleet.lb_status(h.name)
            say(
                f"  {h.name:<16} release {versions[h.name]}"
                + (f"  {self.fleet.balancer} {lb}" if lb else "")
            )
        wrong = {h: v for h, v in versions.items() if v != version}
        if wrong:
            raise DemoError(f"hosts not on {version}: {wrong}")

    def check_caught_on_onebox(self, version: str, dep: str, *, in_bake: bool) -> str:
        """Rolled back by an alarm or by anomaly detection (whichever judged first) while
        only the one-box had the release; with ``in_bake``, after the one-box bake had
        begun. Returns what fired."""
        trail, steps = self.trail(dep)
        installed = self.hosts_installed(steps)
        if len(installed) != 1:
            raise DemoError(
                f"{version}: installed on {sorted(installed)}, expected the one-box only"
            )
        fired = [
            e for e in trail
            if (e.get("type") == "AlarmChanged" and e.get("state") == "ALARM")
            or (e.get("type") == "AnomalyJudged" and e.get("outcome") == "fail")
        ]  # fmt: skip
        if not fired:
            raise DemoError(
                f"{version}: rolled back, but neither an alarm nor anomaly detection fired"
            )
        first = fired[0]
        if first.get("type") == "AnomalyJudged":
            what = "anomaly detection (no threshold written)"
            say(f"  check: only {installed.pop()} got {version}; {what} judged it bad")
        else:
            what = f"{first.get('role', '?')} alarm '{first.get('alarm')}'"
            say(f"  check: only {installed.pop()} got {version}; {what} went to ALARM")
        if in_bake:
            bakes = [
                e for e in trail
                if e.get("type") == "GateResult" and e.get("purpose") == "bake"
                and e.get("at", 0) < first.get("at", 0)
            ]  # fmt: skip
            if not bakes:
                raise DemoError(f"{version}: it was caught before the one-box bake began")
            say(f"  check: the one-box bake was under way ({len(bakes)} bake verdicts before it)")
        return what

    def check_load(self, report: LoadReport, *, allowed: frozenset[str]) -> None:
        """Client requests: failures other than ``allowed`` fail the demo when a balancer
        drains hosts; without one, restarts cut requests, which is shown, not hidden."""
        kinds: dict[str, int] = {}
        for f in report.failures:
            kinds[f.what.split(":")[0]] = kinds.get(f.what.split(":")[0], 0) + 1
        text = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) or "none"
        say(f"  client load: {report.requests} requests, failed: {text}")
        unexpected = {k: n for k, n in kinds.items() if k not in allowed}
        if unexpected and self.fleet.balancer != "none":
            raise DemoError(f"client requests failed through {self.fleet.balancer}: {unexpected}")
        if unexpected:
            say("  (no balancer: requests to a host while it restarts fail; a drain prevents that)")

    def explain(self, version: str) -> None:
        """``fleetwave explain``: the decision trail in full, the steps counted."""
        dep = self.deployments[version]
        say(f"$ fleetwave explain {dep} -f pipeline.yaml   (the trail; the steps are counted)")
        out = self.cli.must("explain", dep, "-f", "pipeline.yaml", show=False)
        lines = out.splitlines()
        cut = lines.index("steps:") if "steps:" in lines else len(lines)
        for line in lines[:cut]:
            say("    " + (line if len(line) <= 200 else line[:197] + "..."))
        steps = [line for line in lines[cut + 1 :] if line[:1].isdigit()]
        say(f"    steps: {len(steps)} journalled steps (run the command above to see them)")
        say("    " + next((line for line in reversed(lines) if line.startswith("=>")), ""))


def build_packages(cli: Cli, work: Path, inproc: bool) -> dict[str, Path]:
    packages = {}
    for version, (behaviour, what) in RELEASES.items():
        src = work / f"src-{version}"
        shutil.copytree(DEMO_APP, src)
        data = json.loads((src / "behaviour.json").read_text())
        data.update({"version": version, **behaviour})
        (src / "behaviour.json").write_text(json.dumps(data) + "\n")
        if inproc:
            _adapt_for_inproc(src)
        cli.must(
            "package", "build", src.name, "--name", "demo-app", "--version", version,
            "--key", "keys/demo.key", "--out", "pkgs", show=False,
        )  # fmt: skip
        found = sorted((work / "pkgs").glob(f"demo-app-{version}*.fwpkg"))
        if len(found) != 1:
            raise DemoError(f"package build {version}: expected one .fwpkg, found {found}")
        packages[version] = found[0]
        say(f"  {found[0].relative_to(work)}  {what}")
    return packages


def _adapt_for_inproc(src: Path) -> None:
    """In-process hosts share one network stack: the app binds the host's own loopback
    address (from the host's /etc), and the health check asks that address."""
    for name in ("with-host-env", "check-health"):
        shutil.copy2(HERE / "inproc" / "bin" / name, src / "bin" / name)
    manifest = src / "fleetwave-package.yaml"
    spec = yaml.safe_load(manifest.read_text())
    spec["hooks"]["start"]["argv"] = ["./bin/with-host-env", "./bin/start"]
    spec["health_checks"] = [
        {"name": "http", "kind": "command", "argv": ["./bin/check-health"], "deadline": "20s"}
    ]
    manifest.write_text(yaml.safe_dump(spec, sort_keys=False))


def processes_under(path: Path, settle_s: float = 5.0) -> list[str]:
    """Live processes whose command line names ``path`` (what the demo may leave),
    after giving ones that are exiting up to ``settle_s`` to go."""
    needle = str(path).encode()
    mine = _ancestors()  # whoever started us (a shell, runuser, timeout) names it too
    deadline = time.monotonic() + settle_s
    while True:
        found = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or int(proc.name) in mine:
                continue
            with contextlib.suppress(OSError):
                if needle in (proc / "cmdline").read_bytes():
                    found.append(proc.name)
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def _ancestors() -> set[int]:
    """This process and its ancestors, by /proc's parent links."""
    pids, pid = set(), os.getpid()
    while pid > 1 and pid not in pids:
        pids.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return pids


def run_story(fleet: DemoFleet, cli: Cli, packages: dict[str, Path]) -> list[str]:
    """Acts 2-6; returns the summary lines. Raises DemoError on the first surprise."""
    story = Story(fleet, cli, packages)
    header("Act 2: the pipeline, the plan, and where to scrape")
    story.render_pipeline()
    say("  pipeline.yaml: one-box (its own 5xx alarm, bake 15 s AND 20 requests), then each AZ")
    cli.must("validate", "-f", "pipeline.yaml")
    cli.must("plan", "-f", "pipeline.yaml")
    story.show_addresses()

    header("Act 3: deploy v1, the first install, everywhere")
    # Under load from the start: bakes wait for requests served by the new release.
    with fleet.load(CLI_TIMEOUT_S + 60) as load:
        say(f"  client load: {load.target} (requests fail until the first host is up)")
        story.deploy("1.0.0", expect=0, load=load)
        v1 = load.stop()
    say(f"  client load: {v1.requests} requests, {len(v1.failures)} failed before v1 was up")
    story.check_settled("1.0.0")

    header("Act 4: v2's errors rise while its health check passes: caught on the one-box")
    with fleet.load(CLI_TIMEOUT_S + 60) as load:
        load.wait_requests(20)
        say(f"  client load: {load.target}")
        dep = story.deploy("2.0.0", expect=20, load=load)
        v2 = load.stop()
    v2_what = story.check_caught_on_onebox("2.0.0", dep, in_bake=False)
    story.check_load(v2, allowed=frozenset({"HTTP 500"}))
    story.check_settled("1.0.0")

    header("Act 5: v3 hides a latent fault: healthy at first, caught during the bake")
    with fleet.load(CLI_TIMEOUT_S + 60) as load:
        load.wait_requests(20)
        dep = story.deploy("3.0.0", expect=20, load=load)
        v3 = load.stop()
    v3_what = story.check_caught_on_onebox("3.0.0", dep, in_bake=True)
    story.check_load(v3, allowed=frozenset({"HTTP 500"}))
    story.check_settled("1.0.0")

    header("Act 6: v4 is good: all the way, one host at a time")
    with fleet.load(CLI_TIMEOUT_S + 60) as load:
        load.wait_requests(20)
        story.deploy("4.0.0", expect=0, load=load)
        v4 = load.stop()
    story.check_load(v4, allowed=frozenset())
    story.check_settled("4.0.0")
    prom = ""
    if fleet.prometheus_url() is not None:
        rows = fleet.prometheus_query("sum by (host) (fleetwave_agent_app_requests_total)")
        counts = ", ".join(f"{r['metric'].get('host')} {float(r['value'][1]):.0f}" for r in rows)
        say(f"  Prometheus: requests per host, scraped from the agents: {counts}")
        states = fleet.prometheus_query("last_over_time(fleetwave_alarm_state[10m])")
        say(f"  Prometheus: {len(states)} fleetwave_alarm_state series scraped from the controller")
        prom = f"; Prometheus scraped {len(rows)} agents and the controller"

    header("Act 7: why? The decision trail of each verdict")
    story.explain("2.0.0")
    story.explain("3.0.0")

    return [
        f"fleet: {len(fleet.hosts)} {fleet.kind} hosts in 2 AZs, balancer: {fleet.balancer}{prom}",
        "v1.0.0 installed everywhere",
        f"v2.0.0 (50% errors, health passing): rolled back by the {v2_what} "
        "before a second host was touched",
        f"v3.0.0 (latent fault): rolled back during the one-box bake by the {v3_what}",
        f"v4.0.0 rolled out everywhere; {v4.requests} client requests, {len(v4.failures)} failed",
    ]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--hosts", type=int, default=4, help="fleet size, 3..12 (default 4)")
    parser.add_argument(
        "--nonroot",
        action="store_true",
        default=os.environ.get("FLEETWAVE_DEMO_NONROOT", "") not in ("", "0"),
        help="in-process hosts even as root (also FLEETWAVE_DEMO_NONROOT=1)",
    )
    parser.add_argument(
        "--work", type=Path, default=REPO / "demo-out" / "fleet", help="where files go"
    )
    return parser.parse_args(argv)


def _on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise Interrupted


def main(argv: Sequence[str] | None = None) -> int:
    """Run the story; see the module docstring for the exit status."""
    args = parse_args(argv)
    if not 3 <= args.hosts <= 12:
        say(f"demo: --hosts must be 3..12, got {args.hosts}")
        return 2
    reason = (
        "forced by --nonroot/FLEETWAVE_DEMO_NONROOT" if args.nonroot else lab_unavailable_reason()
    )
    work: Path = args.work.resolve()
    if work.exists():
        subprocess.run(["chmod", "-R", "u+w", str(work)], check=False)  # releases are read-only
        shutil.rmtree(work)
    (work / "pkgs").mkdir(parents=True)
    signal.signal(signal.SIGTERM, _on_sigterm)
    started = time.monotonic()
    cli = Cli(work)
    summary: list[str] = []
    error: str | None = None
    interrupted = False
    stack = contextlib.ExitStack()
    fleet: NamespaceFleet | InprocFleet | None = None
    try:
        header("Act 1: a signing key, four signed releases, and a fleet")
        cli.must("keygen", "--out", "keys", "--name", "demo", show=False)
        say("  keys/demo.key signs; keys/demo.pub is what every agent and the controller trust")
        packages = build_packages(cli, work, inproc=reason is not None)
        with stack:
            if reason is None:
                say(f"  as root: {args.hosts} network-namespace hosts (real sshd) behind HAProxy")
                fleet = NamespaceFleet(stack, args.hosts, work / "keys" / "demo.pub")
            else:
                say(f"  in-process hosts ({reason}): asyncssh servers running the real agent")
                fleet = InprocFleet(stack, args.hosts, work / "keys" / "demo.pub", work)
            for line in fleet.describe():
                say(line)
            try:
                summary = run_story(fleet, cli, packages)
            finally:
                header("Teardown: hosts, apps, balancer, Prometheus")
        left = fleet.leftovers() if fleet is not None else {}
        stray = processes_under(work)
        if stray:
            left["processes under the work dir"] = stray
        say(f"  leftovers: {left or 'none'}")
        if left:
            error = f"teardown left {left}"
    except DemoError as exc:
        error = str(exc)
    except (KeyboardInterrupt, Interrupted):
        interrupted = True
    except Exception as exc:  # any failure ends the demo with its one-line message
        error = f"{type(exc).__name__}: {exc}"
    if interrupted:
        left = fleet.leftovers() if fleet is not None else {}
        stray = processes_under(work)
        if stray:
            left["processes under the work dir"] = stray
        say(f"\ndemo: interrupted; torn down, leftovers: {left or 'none'}")
        return 130
    elapsed = time.monotonic() - started
    if error is not None:
        say(f"\ndemo: FAILED: {error}")
        return 1
    header(f"Summary ({elapsed:.0f} s)")
    for line in summary:
        say(f"  - {line}")
    say(f"  - files: {work} (pipeline.yaml, topology.yaml, pkgs/, state/)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
