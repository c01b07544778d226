"""A reader looping through ``current/`` never sees it missing across 1,000 switches."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fleetwave_agent.store import ReleaseStore

from .conftest import NOW, Keys

pytestmark = pytest.mark.integration

SWITCHES = 1000

READER = """
import sys, time
from pathlib import Path
target = Path(sys.argv[1]) / "current" / "a.txt"
stop = Path(sys.argv[2])
deadline = time.monotonic() + 120  # bound the loop even if the test dies
reads = errors = 0
bad = set()
target.read_bytes()
print("ready", flush=True)
while not stop.exists() and time.monotonic() < deadline:
    try:
        data = target.read_bytes()
        if data not in (b"one\\n", b"two\\n"):
            bad.add(data)
        reads += 1
    except OSError as exc:
        errors += 1
print(reads, errors, sorted(bad))
"""


def test_current_never_missing_during_switches(tmp_path: Path, keys: Keys, build) -> None:
    store = ReleaseStore(tmp_path / "root")
    one = store.stage(build("1.0", {"a.txt": b"one\n"}), keys.keyring, now=NOW)
    two = store.stage(build("2.0", {"a.txt": b"two\n"}), keys.keyring, now=NOW)
    store.switch(one)
    stop = tmp_path / "stop"
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(store.root), str(stop)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        # Wait until the reader is reading, so the switches overlap its loop.
        assert reader.stdout is not None
        assert reader.stdout.readline() == "ready\n"
        with store.lock():
            for i in range(SWITCHES):
                store.switch(two if i % 2 == 0 else one)
    finally:
        stop.touch()
        out, _ = reader.communicate(timeout=150)
    reads, errors, bad = out.strip().split(" ", 2)
    assert int(errors) == 0
    assert bad.strip() == "[]"
    assert int(reads) > 0
    assert store.current() == one
