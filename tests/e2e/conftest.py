"""Fixtures for the end-to-end tests: fleets of namespace hosts (``tests.lab``).

Every fleet a test makes is torn down when the test ends, pass or fail. The tests
skip, with the reason, only where the lab cannot exist: not root, or no ``ip netns``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.lab import Fleet, LabConfig, lab_unavailable_reason

DEMO_APP = Path(__file__).resolve().parents[2] / "examples" / "demo-app"


def require_lab() -> None:
    """Skip the calling test when the namespace lab cannot run on this machine."""
    reason = lab_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture
def fleet_factory() -> Iterator[Callable[..., Fleet]]:
    """``make(hosts=6, srv_size="4m", ...)`` -> a running :class:`Fleet` (LabConfig
    fields as keywords, or ``config=LabConfig(...)``); all torn down after the test."""
    require_lab()
    with contextlib.ExitStack() as stack:

        def make(config: LabConfig | None = None, **fields: Any) -> Fleet:
            return stack.enter_context(Fleet(config or LabConfig(**fields)))

        yield make


@pytest.fixture
def fleet(fleet_factory: Callable[..., Fleet]) -> Fleet:
    """Three hosts behind HAProxy, no Prometheus."""
    return fleet_factory(hosts=3)


@pytest.fixture(scope="module")
def module_fleet() -> Iterator[Fleet]:
    """Three hosts behind HAProxy, with Prometheus, shared by a module's tests."""
    require_lab()
    with Fleet(LabConfig(hosts=3, prometheus=True)) as built:
        yield built


@pytest.fixture
def demo_app_dir() -> Path:
    """The demo app's package source directory."""
    return DEMO_APP
