"""``fleetwave package build --expires-in`` refuses an expiry that is not in the future."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetwave.cli import main

from .conftest import make_source

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("value", ["0", "0s", "0ms", "--expires-in=-5s"])
def test_zero_or_negative_expiry_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    assert main(["keygen", "--out", str(tmp_path / "k")]) == 0
    src = make_source(tmp_path / "src", {"a.txt": b"a"})
    flag = [value] if value.startswith("--") else ["--expires-in", value]
    argv = ["package", "build", str(src), "--name", "app", "--version", "1"]
    argv += ["--key", str(tmp_path / "k" / "fleetwave.key"), "--out", str(tmp_path / "o"), *flag]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("fleetwave: error: --expires-in: ")
    assert err.count("\n") == 1
    assert not (tmp_path / "o").exists()
