"""Hook runner: environment, cwd, output kept and capped, timeouts kill the process group."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from fleetwave_agent.errors import HookError
from fleetwave_agent.hooks import HookContext, hook_env, raise_for, run_hook
from fleetwave_agent.manifest import HookSpec

pytestmark = pytest.mark.integration


def _ctx(tmp_path: Path) -> HookContext:
    release = tmp_path / "release"
    release.mkdir(exist_ok=True)
    return HookContext(
        operation="install",
        operation_id="op1",
        root=tmp_path / "root",
        name="app",
        version="2.0",
        package_id="ab" * 32,
        release_dir=release,
        previous_version="1.0",
    )


def _sh(script: str, timeout_ms: int = 10_000) -> HookSpec:
    return HookSpec(argv=("sh", "-c", script), timeout_ms=timeout_ms)


def test_environment_and_cwd(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    log = tmp_path / "logs" / "start.log"
    result = run_hook(
        "start", _sh("env | grep ^FLEETWAVE_ | sort; pwd"), ctx, log, max_output_bytes=1 << 16
    )
    assert result.ok
    text = log.read_text()
    expected = hook_env("start", ctx, base={})
    for key, value in expected.items():
        if key.startswith("FLEETWAVE_"):
            assert f"{key}={value}\n" in text
    assert "FLEETWAVE_PREVIOUS_VERSION=1.0" in text
    assert text.rstrip().endswith(str(ctx.release_dir))
    assert (ctx.root / "run").is_dir()


def test_failure_is_reported_with_output(tmp_path: Path) -> None:
    log = tmp_path / "validate.log"
    result = run_hook(
        "validate",
        _sh("echo checking; echo broken >&2; exit 3"),
        _ctx(tmp_path),
        log,
        max_output_bytes=4096,
    )
    assert not result.ok
    assert result.exit_code == 3
    assert "broken" in log.read_text()
    with pytest.raises(HookError, match=r"validate.*status 3.*broken"):
        raise_for(result)


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    marker = tmp_path / "child.pid"
    # The hook forks a child that would outlive it; both must die on timeout.
    script = f"sleep 60 & echo $! > {marker}; wait"
    result = run_hook(
        "start", _sh(script, timeout_ms=300), _ctx(tmp_path), tmp_path / "l", max_output_bytes=4096
    )
    assert result.timed_out
    assert not result.ok
    assert result.exit_code is None
    child = int(marker.read_text())
    for _ in range(100):  # bounded wait for the kernel to reap
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        with open(f"/proc/{child}/stat") as fh:
            if fh.read().split()[2] == "Z":
                break
        time.sleep(0.05)
    else:
        pytest.fail("child of a timed-out hook survived")


def test_detached_child_does_not_hang_the_runner(tmp_path: Path) -> None:
    pidfile = tmp_path / "app.pid"
    # A backgrounded app holding the hook's stdout: with a pipe, the runner would hang.
    script = f"setsid sleep 30 & echo $! > {pidfile}; echo started"
    result = run_hook(
        "start", _sh(script, timeout_ms=5000), _ctx(tmp_path), tmp_path / "l", max_output_bytes=4096
    )
    try:
        assert result.ok
        assert not result.timed_out
        assert "started" in (tmp_path / "l").read_text()
    finally:
        os.kill(int(pidfile.read_text()), 9)


def test_output_is_capped_to_the_tail(tmp_path: Path) -> None:
    log = tmp_path / "big.log"
    result = run_hook(
        "start",
        _sh("i=0; while [ $i -lt 3000 ]; do echo line$i; i=$((i+1)); done"),
        _ctx(tmp_path),
        log,
        max_output_bytes=2048,  # ~26 KB of output stays under the 32 KB runaway limit
    )
    assert result.ok
    data = log.read_bytes()
    assert len(data) < 2200
    assert b"earlier bytes dropped" in data
    assert data.rstrip().endswith(b"line2999")


def test_missing_program_is_a_failed_hook(tmp_path: Path) -> None:
    spec = HookSpec(argv=("./bin/nope",), timeout_ms=1000)
    result = run_hook("start", spec, _ctx(tmp_path), tmp_path / "l", max_output_bytes=1024)
    assert result.exit_code == 127
    assert not result.ok
    assert "cannot run" in result.output_tail
