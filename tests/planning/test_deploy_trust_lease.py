"""``deploy.trust`` and ``deploy.lease_ttl`` in pipeline files."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetwave.config.pipeline import load_pipeline
from fleetwave.errors import ConfigError

from .test_pipeline_files import child, write
from .test_pipeline_files import team as team  # the fixture

pytestmark = pytest.mark.integration


def test_trust_paths_are_relative_to_the_file_that_names_them(team: Path) -> None:
    parent = (team / "team" / "parent.yaml").read_text()
    parent = parent.replace("deploy:\n", "deploy:\n  trust: [keys/old.pub]\n", 1)
    write(team, "team/parent.yaml", parent)
    inherited = load_pipeline(child(team, ""))
    assert inherited.deploy.trust == (team / "team" / "keys" / "old.pub",)
    # A child's list replaces the parent's, relative to the child (a key rotation).
    own = load_pipeline(child(team, "deploy: {trust: [k/old.pub, /etc/keys/new.pub]}\n"))
    assert own.deploy.trust == (team / "svc" / "k" / "old.pub", Path("/etc/keys/new.pub"))


def test_lease_ttl_default_and_bounds(team: Path) -> None:
    assert load_pipeline(child(team, "")).deploy.lease_ttl_s == 120.0
    assert load_pipeline(child(team, "deploy: {lease_ttl: 5m}\n")).deploy.lease_ttl_s == 300.0
    bounds = r"pipeline\.yaml:\d+: deploy\.lease_ttl: lease_ttl must be between 3s and 3600s"
    with pytest.raises(ConfigError, match=bounds):
        load_pipeline(child(team, "deploy: {lease_ttl: 2h}\n"))
