"""Fixtures for the Debian package tests: one build per session, shared."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUILD_DEB = REPO / "packaging" / "build-deb"


def build_deb(out: Path) -> Path:
    """Run ``packaging/build-deb --out OUT`` and return the .deb it printed."""
    proc = subprocess.run(
        ["bash", str(BUILD_DEB), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    deb = Path(proc.stdout.strip().splitlines()[-1])
    assert deb.is_file()
    assert deb.parent == out
    return deb


@pytest.fixture(scope="session")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb is not installed (apt-get install dpkg)")
    return build_deb(tmp_path_factory.mktemp("deb"))
