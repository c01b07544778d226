"""Kill an install (stage + switch) at every step; recover() must leave a good current."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fleetwave_agent.store import CRASH_ENV, CRASH_POINTS, ReleaseStore

from .conftest import NOW, Keys

pytestmark = pytest.mark.integration

INSTALL = """
import sys
from pathlib import Path
from fleetwave_agent.keys import Keyring
from fleetwave_agent.store import ReleaseStore
store = ReleaseStore(Path(sys.argv[1]))
keyring = Keyring.from_paths([Path(sys.argv[3])])
with store.lock():
    store.switch(store.stage(Path(sys.argv[2]), keyring, now=float(sys.argv[4])))
"""


def run_install(root: Path, package: Path, keys: Keys, crash_at: str | None):
    env = dict(os.environ)
    env.pop(CRASH_ENV, None)
    if crash_at:
        env[CRASH_ENV] = crash_at
    return subprocess.run(
        [sys.executable, "-c", INSTALL, str(root), str(package), str(keys.public_path), str(NOW)],
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("step", CRASH_POINTS)
def test_kill_at_each_step_then_recover_leaves_complete_current(
    step: str, tmp_path: Path, keys: Keys, build
) -> None:
    root = tmp_path / "root"
    files = {f"data/f{i}": os.urandom(2000) for i in range(5)}
    old_pkg = build("1.0", {**files, "a.txt": b"one\n"})
    new_pkg = build("2.0", {**files, "a.txt": b"two\n"})
    assert run_install(root, old_pkg, keys, None).returncode == 0

    result = run_install(root, new_pkg, keys, step)
    assert result.returncode == -signal.SIGKILL, result.stderr.decode()

    store = ReleaseStore(root)
    with store.lock():
        store.recover()
    current = store.current()
    assert current is not None
    assert current.version in ("1.0", "2.0")
    assert store.verify_installed(current) == []
    assert (root / "current" / "a.txt").read_bytes() in (b"one\n", b"two\n")
    assert list(store.staging_dir.iterdir()) == []
    assert not (store.state_dir / "journal.json").exists()
    assert [p.name for p in root.iterdir() if p.name.startswith(".tmp")] == []
    for release in store.releases():
        assert store.verify_installed(release) == []
    if step.startswith("switch:renamed") or step == "switch:recorded":
        assert current.version == "2.0"
        previous = store.previous()
        assert previous is not None
        assert previous.version == "1.0"

    # The interrupted install can simply be run again.
    assert run_install(root, new_pkg, keys, None).returncode == 0
    store = ReleaseStore(root)
    current, previous = store.current(), store.previous()
    assert current is not None
    assert current.version == "2.0"
    assert previous is not None
    assert previous.version == "1.0"
