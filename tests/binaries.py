"""Tests that need a system binary: in CI (``CI=true``) a missing one is a failure,
never a skip, because scripts/bootstrap.sh installs it; elsewhere it is a skip that
says how to install it."""

from __future__ import annotations

import os
import shutil

import pytest


def in_ci() -> bool:
    """True when running under CI (``CI=true``, as .ci/run is started)."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_binary(name: str, apt_package: str) -> str:
    """The path of ``name``; fail in CI, skip elsewhere, when it is not on PATH."""
    path = shutil.which(name)
    if path is not None:
        return path
    message = (
        f"{name} is not installed (apt-get install {apt_package}; scripts/bootstrap.sh installs it)"
    )
    if in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)
