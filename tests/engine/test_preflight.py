"""``deploy`` verifies the package against the pipeline's ``deploy.trust`` keys before
it touches anything: no journal row, no lock, no host."""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import pytest

from fleetwave.cli import main
from fleetwave.cli.deploy_build import verify_for_deploy
from fleetwave.config.pipeline import load_pipeline
from fleetwave.errors import ConfigError, PackageRefusedError
from fleetwave.rollout.journal import Journal
from fleetwave_agent.keys import generate_keypair
from fleetwave_agent.package import build_package
from fleetwave_core.exitcodes import ExitCode

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def pipeline(tmp_path: Path) -> Path:
    for name in ("pipeline.yaml", "topology.yaml"):
        shutil.copy(REPO / "examples" / "lab" / name, tmp_path / name)
    generate_keypair(tmp_path / "keys", "release")
    return tmp_path / "pipeline.yaml"


def _package(work: Path, private: Path, *, expires: int | None = None) -> Path:
    src = work / "src"
    src.mkdir(parents=True)
    (src / "app.txt").write_text("app\n")
    return build_package(
        src, name="demo", version="1.0.0", private_key=private, out_dir=work, expires=expires
    )


def _deploy(pipeline: Path, pkg: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    # Without --yes and without a TTY, today's code stops at the confirmation rule (exit 2)
    # only after reading the package; the check must come first.
    stdin = sys.stdin
    sys.stdin = open(os.devnull)  # noqa: SIM115 - closed below
    try:
        code = main(["deploy", "-f", str(pipeline), str(pkg)])
    finally:
        sys.stdin.close()
        sys.stdin = stdin
    return code, capsys.readouterr().err


def _no_rows(pipeline: Path) -> None:
    state = pipeline.parent / ".fleetwave"
    if (state / "journal.db").exists():
        j = Journal(state / "journal.db")
        try:
            assert j.history("lab-app", "lab") == []
        finally:
            j.close()
    lock = state / "locks" / "lab-app@lab.lock"
    assert not lock.exists() or lock.read_text() == ""


def test_untrusted_signer_is_refused_before_anything(
    pipeline: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    private, _ = generate_keypair(tmp_path / "other", "intruder")
    code, err = _deploy(pipeline, _package(tmp_path / "pkg", private), capsys)
    assert code == ExitCode.INTEGRITY
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "not in the trusted keyring" in lines[0]
    assert lines[0].startswith("fleetwave: error: package refused before touching any host")
    _no_rows(pipeline)


def test_corrupt_payload_is_refused(
    pipeline: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pkg = _package(tmp_path / "pkg", pipeline.parent / "keys" / "release.key")
    data = bytearray(pkg.read_bytes())
    data[-1] ^= 0xFF
    pkg.write_bytes(bytes(data))
    code, err = _deploy(pipeline, pkg, capsys)
    assert code == ExitCode.INTEGRITY
    assert "sha256" in err or "checksum" in err.lower(), err
    _no_rows(pipeline)


def test_expired_package_is_refused(
    pipeline: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pkg = _package(
        tmp_path / "pkg", pipeline.parent / "keys" / "release.key", expires=int(time.time()) - 60
    )
    code, err = _deploy(pipeline, pkg, capsys)
    assert code == ExitCode.PACKAGE_REFUSED
    assert "expired" in err, err
    _no_rows(pipeline)


def test_missing_trust_is_refused_with_the_fix(
    pipeline: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = pipeline.read_text().replace("  trust: [keys/release.pub]\n", "")
    pipeline.write_text(text)
    pkg = _package(tmp_path / "pkg", pipeline.parent / "keys" / "release.key")
    code, err = _deploy(pipeline, pkg, capsys)
    assert code == ExitCode.CONFIG
    assert "deploy.trust names no key" in err
    assert "trust: [" in err
    _no_rows(pipeline)


def test_trusted_package_passes_and_trust_is_relative_to_the_pipeline(
    pipeline: Path, tmp_path: Path
) -> None:
    p = load_pipeline(pipeline)
    assert p.deploy.trust == (pipeline.parent / "keys" / "release.pub",)
    pkg = _package(tmp_path / "pkg", pipeline.parent / "keys" / "release.key")
    assert verify_for_deploy(p, pkg, now=time.time()).name == "demo"


def test_refusal_types(pipeline: Path, tmp_path: Path) -> None:
    p = load_pipeline(pipeline)
    private, _ = generate_keypair(tmp_path / "other", "intruder")
    with pytest.raises(PackageRefusedError) as info:
        verify_for_deploy(p, _package(tmp_path / "pkg", private), now=time.time())
    assert info.value.exit_code == ExitCode.INTEGRITY
    pipeline.write_text(pipeline.read_text().replace("trust: [keys/release.pub]", "trust: []"))
    with pytest.raises(ConfigError):
        verify_for_deploy(load_pipeline(pipeline), tmp_path / "x", now=time.time())
