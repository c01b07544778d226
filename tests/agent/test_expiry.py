"""An expired package is refused with its expiry as ISO time (UTC), never epoch seconds."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fleetwave_agent.errors import ExpiredPackageError
from fleetwave_agent.keys import Keyring
from fleetwave_agent.package import build_package, verify_package
from fleetwave_core.timefmt import iso_utc

pytestmark = pytest.mark.unit

EXPIRES = 1_796_119_200  # 2026-12-01T10:00:00Z


def test_iso_utc() -> None:
    assert iso_utc(EXPIRES) == "2026-12-01T10:00:00Z"
    assert iso_utc(EXPIRES + 0.9) == "2026-12-01T10:00:00Z"  # whole seconds, rounded down


def test_expired_package_error_prints_iso_times(tmp_path: Path, keypair: tuple[Path, Path]) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "VERSION").write_text("1")
    package = build_package(
        src,
        name="app",
        version="1",
        private_key=keypair[0],
        out_dir=tmp_path / "out",
        created=EXPIRES - 86_400,
        expires=EXPIRES,
    )
    keyring = Keyring.from_paths([keypair[1]])
    verify_package(package, keyring, now=EXPIRES - 1)  # still good a second before
    with pytest.raises(ExpiredPackageError) as info:
        verify_package(package, keyring, now=EXPIRES + 3600)
    message = str(info.value)
    assert message.endswith("app 1 expired at 2026-12-01T10:00:00Z (now 2026-12-01T11:00:00Z)"), (
        message
    )
    assert not re.search(r"\d{9,}", message)
