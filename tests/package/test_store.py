"""The release store: staging, switching, history, gc, drift and locking."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from fleetwave_agent import store as store_module
from fleetwave_agent.errors import ChecksumError, PackageError, ReleaseNotFoundError, StoreError
from fleetwave_agent.store import ReleaseStore
from fleetwave_agent.tree import remove_tree
from fleetwave_core.errors import LockedError
from fleetwave_core.fsutil import TMP_PREFIX

from .conftest import NOW, Keys
from .craft import Member, craft

pytestmark = pytest.mark.integration


def install(store: ReleaseStore, package: Path, keys: Keys):
    with store.lock():
        release = store.stage(package, keys.keyring, now=NOW)
        store.switch(release)
    return release


def test_stage_installs_read_only_release_named_by_version_and_digest(
    tmp_path: Path, keys: Keys, build
) -> None:
    store = ReleaseStore(tmp_path / "root")
    package = build("1.0")
    release = store.stage(package, keys.keyring, now=NOW)
    assert release.path == store.root / "releases" / "app" / f"1.0-{release.package_id[:12]}"
    assert (release.path / "a.txt").read_bytes() == b"version 1.0\n"
    assert os.stat(release.path / "a.txt").st_mode & 0o777 == 0o444
    assert os.stat(release.path / "bin" / "run").st_mode & 0o777 == 0o555
    assert os.stat(release.path / "bin").st_mode & 0o777 == 0o555
    assert store.current() is None
    assert store.verify_installed(release) == []
    assert store.has_package(release.package_id)


def test_stage_is_idempotent_for_the_same_package(tmp_path: Path, keys: Keys, build) -> None:
    store = ReleaseStore(tmp_path / "root")
    package = build("1.0")
    first = store.stage(package, keys.keyring, now=NOW)
    assert store.stage(package, keys.keyring, now=NOW) == first
    assert len(store.releases()) == 1


def test_restaging_a_tampered_copy_of_an_installed_package_fails(
    tmp_path: Path, keys: Keys, build
) -> None:
    store = ReleaseStore(tmp_path / "root")
    package = build("1.0")
    store.stage(package, keys.keyring, now=NOW)
    data = bytearray(package.read_bytes())
    data[-20] ^= 0xFF
    tampered = tmp_path / "tampered.fwpkg"
    tampered.write_bytes(bytes(data))
    with pytest.raises(ChecksumError):
        store.stage(tampered, keys.keyring, now=NOW)


def test_switch_returns_old_current_and_tracks_previous(tmp_path: Path, keys: Keys, build) -> None:
    store = ReleaseStore(tmp_path / "root")
    one = store.stage(build("1.0"), keys.keyring, now=NOW)
    two = store.stage(build("2.0"), keys.keyring, now=NOW)
    assert store.switch(one) is None
    assert store.previous() is None
    assert store.switch(two) == one
    assert store.current() == two
    assert store.previous() == one
    assert os.readlink(store.current_link) == f"releases/app/{two.path.name}"
    # rolling back makes the release we left the previous one
    assert store.switch(one) == two
    assert store.previous() == two
    assert (store.current_link / "a.txt").read_bytes() == b"version 1.0\n"


def test_get_finds_by_version_and_name(tmp_path: Path, keys: Keys, build) -> None:
    store = ReleaseStore(tmp_path / "root")
    app = store.stage(build("1.0"), keys.keyring, now=NOW)
    other = store.stage(build("1.0", name="other"), keys.keyring, now=NOW)
    assert store.get("1.0", "app") == app
    assert store.get("1.0", "other") == other
    with pytest.raises(ReleaseNotFoundError, match="several packages"):
        store.get("1.0")
    with pytest.raises(ReleaseNotFoundError, match=r"9\.9"):
        store.get("9.9")


def test_gc_keeps_newest_and_never_current_or_previous(tmp_path: Path, keys: Keys, build) -> None:
    store = ReleaseStore(tmp_path / "root", keep=3)
    releases = [store.stage(build(f"{i}.0"), keys.keyring, now=NOW) for i in range(1, 6)]
    store.switch(releases[0])
    store.switch(releases[1])  # current 2.0, previous 1.0: both old, both protected
    removed = store.gc().releases
    # Three kept: current and previous, then the newest other one.
    assert [r.version for r in removed] == ["3.0", "4.0"]
    assert [r.version for r in store.releases()] == ["1.0", "2.0", "5.0"]
    assert not releases[2].path.exists()
    # the ledger survives gc: the version is still bound to its digest
    assert store.stage(build("3.0"), keys.keyring, now=NOW).package_id == releases[2].package_id


def test_verify_installed_reports_drift(tmp_path: Path, keys: Keys, build) -> None:
    store = ReleaseStore(tmp_path / "root")
    release = store.stage(
        build("1.0", {"a.txt": b"a", "b.txt": b"b", "c.txt": b"c", "bin/run": b"x"}),
        keys.keyring,
        now=NOW,
    )
    os.chmod(release.path, 0o755)
    (release.path / "a.txt").chmod(0o644)
    (release.path / "a.txt").write_bytes(b"changed")
    (release.path / "b.txt").unlink()
    (release.path / "c.txt").chmod(0o400)
    (release.path / "new.txt").write_bytes(b"n")
    drift = store.verify_installed(release)
    assert "changed: a.txt" in drift
    assert any(d.startswith("mode: a.txt") for d in drift)
    assert any(d.startswith("mode: c.txt") for d in drift)
    assert "removed: b.txt" in drift
    assert "added: new.txt" in drift
    assert len(drift) == 5


def test_lock_is_exclusive_and_names_the_holder(tmp_path: Path) -> None:
    store = ReleaseStore(tmp_path / "root")
    other = ReleaseStore(tmp_path / "root")
    with store.lock(), pytest.raises(LockedError, match=f"pid {os.getpid()}"), other.lock():
        pass
    with other.lock():
        pass


def test_incoming_path_and_has_package(tmp_path: Path) -> None:
    store = ReleaseStore(tmp_path / "root")
    package_id = "ab" * 32
    assert not store.has_package(package_id)
    store.incoming_path(package_id).write_bytes(b"upload")
    assert store.has_package(package_id)
    assert store.incoming_path(package_id).parent == store.root / "incoming"
    with pytest.raises(Exception, match="not a package id"):
        store.incoming_path("../../etc/passwd")


def test_switch_refuses_an_incomplete_release(tmp_path: Path, keys: Keys, build) -> None:
    store = ReleaseStore(tmp_path / "root")
    release = store.stage(build("1.0"), keys.keyring, now=NOW)
    release.path.with_name(release.path.name + ".manifest").unlink()
    with pytest.raises(ReleaseNotFoundError):
        store.switch(release)
    assert store.current() is None


def test_recover_removes_leftovers(tmp_path: Path, keys: Keys, build) -> None:
    store = ReleaseStore(tmp_path / "root")
    install(store, build("1.0"), keys)
    (store.staging_dir / "junk").mkdir()
    (store.staging_dir / "junk" / "f").write_bytes(b"x")
    half = store.releases_dir / "app" / "9.9-000000000000"
    half.mkdir()
    actions = store.recover()
    assert "removed staging/junk" in actions
    assert any("incomplete release" in a for a in actions)
    assert not half.exists()
    assert list(store.staging_dir.iterdir()) == []
    assert store.recover() == []


def test_keep_must_protect_current_and_previous(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="keep"):
        ReleaseStore(tmp_path / "root", keep=1)


DEPTH = 1_100  # deeper than Python's default recursion limit


@pytest.fixture
def deep_cleanup(tmp_path: Path):
    """pytest's own tmp_path cleanup recurses: remove deep trees without recursion."""
    yield
    remove_tree(tmp_path)


def _deep(root: Path, depth: int = DEPTH) -> Path:
    """Make ``root/d/d/.../d`` ``depth`` levels deep; return the innermost directory."""
    root.mkdir(parents=True, exist_ok=True)
    inner = str(root)
    for _ in range(depth):  # os.makedirs recurses once per level
        inner = os.path.join(inner, "d")
        os.mkdir(inner)
    Path(inner, "f").write_bytes(b"deep\n")
    return Path(inner)


@pytest.mark.usefixtures("deep_cleanup")
def test_deeply_nested_signed_package_never_bricks_the_store(
    tmp_path: Path, keys: Keys, build
) -> None:
    store = ReleaseStore(tmp_path / "root")
    install(store, build("1.0"), keys)
    deep = tmp_path / "deep.fwpkg"
    craft(deep, [Member("d/" * DEPTH + "f", b"deep\n")], keys.private, version="2.0")
    with store.lock():
        try:  # refusing it (a depth limit) is as good as installing it; a crash is not
            release = store.stage(deep, keys.keyring, now=NOW)
        except PackageError:
            pass
        else:
            assert store.verify_installed(release) == []
            store.switch(release)
            store.switch(store.get("1.0"))
        store.recover()
        store.gc()
    install(store, build("3.0"), keys)
    assert store.current() is not None
    assert store.current().version == "3.0"  # type: ignore[union-attr]


@pytest.mark.usefixtures("deep_cleanup")
def test_recover_clears_deep_leftovers_and_atomic_write_temporaries(tmp_path: Path) -> None:
    store = ReleaseStore(tmp_path / "root")
    _deep(store.staging_dir / "junk")
    half = store.releases_dir / "app" / "9.9-000000000000"
    _deep(half)
    for sealed in (half, half / "d"):
        sealed.chmod(0o555)
    (store.state_dir / f"{TMP_PREFIX}ledger.json-1-abcd").write_bytes(b"{")
    (store.state_dir / "journal.json").write_text(
        '{"op": "stage", "staging": "staging/junk", "target": "releases/app/9.9-000000000000"}'
    )
    actions = store.recover()
    assert "removed staging/junk" in actions
    assert f"removed state/{TMP_PREFIX}ledger.json-1-abcd" in actions
    assert not half.exists()
    assert list(store.staging_dir.iterdir()) == []
    assert store.recover() == []


def test_recover_reports_a_leftover_it_cannot_remove_and_carries_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ReleaseStore(tmp_path / "root")
    (store.staging_dir / "stuck").mkdir()

    def refuse(path: Path) -> None:
        raise OSError(errno.ENAMETOOLONG, "File name too long")

    monkeypatch.setattr(store_module, "remove_tree", refuse)
    actions = store.recover()
    assert actions == ["could not remove staging/stuck: File name too long"]
