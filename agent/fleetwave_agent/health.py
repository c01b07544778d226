"""Health checks declared by a package: HTTP status, TCP connect, or a command.

:func:`probe` makes one attempt; :func:`run_checks` retries every check each
``interval_ms`` until it passes or its ``deadline_ms`` (counted from when checking
began) has passed. Command checks run in the release directory with the hooks'
environment (``FLEETWAVE_RUN_DIR`` etc., ``FLEETWAVE_HOOK=health``). Only the
standard library is used (urllib, socket, subprocess).

``urllib.request`` (and with it ``http.client``, ``ssl`` and ``email``) is imported on
the first HTTP probe, not with this module: the agent imports this module on every
``rpc`` start, and most sessions never probe over HTTP.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from fleetwave_agent.errors import HealthCheckError
from fleetwave_agent.manifest import HealthCheckSpec

if TYPE_CHECKING:
    import urllib.request


@cache
def _opener() -> urllib.request.OpenerDirector:
    import urllib.request

    # Health URLs are local: never route them through an environment-configured proxy.
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    latency_s: float
    detail: str


@dataclass(frozen=True)
class CheckResult:
    name: str
    kind: str
    ok: bool
    attempts: int
    latency_s: float  # of the last attempt
    detail: str  # of the last attempt

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "kind": self.kind,
            "ok": self.ok,
            "attempts": self.attempts,
            "latency_s": round(self.latency_s, 4),
            "detail": self.detail,
        }


def probe(
    spec: HealthCheckSpec, *, cwd: Path | None = None, env: Mapping[str, str] | None = None
) -> ProbeResult:
    """One attempt of one check; never raises. ``cwd``/``env`` apply to command checks."""
    started = time.monotonic()
    timeout = spec.timeout_ms / 1000
    try:
        if spec.kind == "http":
            ok, detail = _http(spec.url, spec.expect_status, timeout)
        elif spec.kind == "tcp":
            import socket

            with socket.create_connection((spec.host, spec.port), timeout=timeout):
                ok, detail = True, f"connected to {spec.host}:{spec.port}"
        else:
            ok, detail = _command(spec.argv, cwd, env, timeout)
    except OSError as exc:
        ok, detail = False, f"{type(exc).__name__}: {exc.strerror or exc}"
    return ProbeResult(ok, time.monotonic() - started, detail)


def _http(url: str, expect: int, timeout: float) -> tuple[bool, str]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, headers={"User-Agent": "fleetwave-agent"})
    try:
        with _opener().open(request, timeout=timeout) as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        status = exc.code
        exc.close()
    except urllib.error.URLError as exc:
        return False, f"{url}: {exc.reason}"
    except (TimeoutError, ValueError) as exc:
        return False, f"{url}: {exc or type(exc).__name__}"
    if status == expect:
        return True, f"{url}: HTTP {status}"
    return False, f"{url}: HTTP {status}, expected {expect}"


def _command(
    argv: tuple[str, ...], cwd: Path | None, env: Mapping[str, str] | None, timeout: float
) -> tuple[bool, str]:
    first = argv[0]
    if cwd is not None and not os.path.isabs(first) and "/" in first:
        first = str(cwd / first)
    proc = subprocess.Popen(
        [first, *argv[1:]],
        cwd=cwd,
        env=None if env is None else dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return False, f"{argv[0]}: timed out after {timeout:g}s"
    return code == 0, f"{argv[0]}: exit status {code}"


def run_checks(
    checks: Sequence[HealthCheckSpec],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    probe_fn: Callable[[HealthCheckSpec], ProbeResult] | None = None,
) -> list[CheckResult]:
    """Retry each check until it passes or its deadline passes; return every outcome."""
    attempt = probe_fn or (lambda spec: probe(spec, cwd=cwd, env=env))
    began = clock()
    results = []
    for spec in checks:
        deadline = began + spec.deadline_ms / 1000
        attempts = 0
        while True:
            attempts += 1
            outcome = attempt(spec)
            if outcome.ok:
                break
            pause = spec.interval_ms / 1000
            if clock() + pause > deadline:
                break
            sleep(pause)
        results.append(
            CheckResult(
                spec.name, spec.kind, outcome.ok, attempts, outcome.latency_s, outcome.detail
            )
        )
    return results


def raise_for(results: Sequence[CheckResult]) -> None:
    """:class:`HealthCheckError` naming the first failed check, if any failed."""
    for result in results:
        if not result.ok:
            raise HealthCheckError(
                f"health check {result.name!r} failed after {result.attempts} attempts: "
                f"{result.detail}"
            )
