"""fleetwave_core.fsutil and the agent's non-recursive tree walks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fleetwave_agent.tree import remove_tree, walk
from fleetwave_core.fsutil import TMP_PREFIX, atomic_write

pytestmark = pytest.mark.unit


def test_atomic_write_sets_the_exact_mode_and_leaves_no_temporary(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        atomic_write(tmp_path / "f", "one", mode=0o644)
        atomic_write(tmp_path / "f", b"two", mode=0o640, durable=False)
    finally:
        os.umask(old)
    assert (tmp_path / "f").read_bytes() == b"two"
    assert (tmp_path / "f").stat().st_mode & 0o777 == 0o640
    assert os.listdir(tmp_path) == ["f"]


def test_atomic_write_failure_keeps_the_old_file_and_removes_its_temporary(
    tmp_path: Path,
) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"old")
    (tmp_path / "d").mkdir()
    with pytest.raises(IsADirectoryError):
        atomic_write(tmp_path / "d", b"new")  # rename over a directory fails
    assert target.read_bytes() == b"old"
    assert not [n for n in os.listdir(tmp_path) if n.startswith(TMP_PREFIX)]


def test_walk_matches_os_walk_and_does_not_follow_links(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "f").write_text("x")
    (tmp_path / "a" / "b" / "g").write_text("y")
    (tmp_path / "link").symlink_to(tmp_path / "a")
    assert list(walk(tmp_path)) == [
        (str(tmp_path), ["a"], ["link"]),  # a symlink to a directory is not entered
        (str(tmp_path / "a"), ["b"], ["f"]),
        (str(tmp_path / "a" / "b"), [], ["g"]),
    ]


def test_walk_and_remove_tree_survive_depth_beyond_the_recursion_limit(tmp_path: Path) -> None:
    inner = str(tmp_path / "top")
    os.mkdir(inner)
    for _ in range(1_500):
        inner = os.path.join(inner, "d")
        os.mkdir(inner)
    os.chmod(os.path.dirname(inner), 0o555)
    assert sum(1 for _ in walk(tmp_path / "top")) == 1_501
    remove_tree(tmp_path / "top")
    assert not (tmp_path / "top").exists()
