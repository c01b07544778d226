"""The top-level Vagrantfile is accepted by ``vagrant validate`` (which catches
misspelled settings), and a misspelled copy is not."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

VAGRANTFILE = Path(__file__).resolve().parents[2] / "Vagrantfile"


def _validate(directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["vagrant", "validate", "--ignore-provider"],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def vagrant_dir(tmp_path: Path) -> Path:
    if shutil.which("vagrant") is None:
        pytest.skip("vagrant is not installed")
    (tmp_path / "Vagrantfile").write_text(VAGRANTFILE.read_text())
    return tmp_path


def test_vagrantfile_validates(vagrant_dir: Path) -> None:
    proc = _validate(vagrant_dir)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_misspelled_setting_is_caught(vagrant_dir: Path) -> None:
    path = vagrant_dir / "Vagrantfile"
    path.write_text(path.read_text().replace("config.vm.hostname", "config.vm.hostnme"))
    assert _validate(vagrant_dir).returncode != 0
