"""The agent's release store: verified, read-only releases and an atomic ``current``.

Layout under the store root (all names are part of the on-disk contract)::

    .lock                                  flock'd by the process that owns the store
    current -> releases/NAME/VERSION-ID12  relative symlink, swapped atomically
    releases/NAME/VERSION-ID12/            an installed release, read-only
    releases/NAME/VERSION-ID12.manifest    its canonical manifest; written LAST, so a
                                           release is complete iff this file exists
    incoming/PACKAGE_ID.fwpkg              uploaded packages waiting to be staged
    staging/                               extraction scratch space, wiped by recover()
    state/ledger.json                      name -> version -> package id, forever (gc
                                           never shrinks it) + install order
    state/history.json                     releases that were current, oldest first
    state/journal.json                     the operation in progress, if any
    state/bad.json                         releases that failed (see knownbad.py)
    state/pins.json                        package ids of pinned releases (gc keeps them)

Crash safety: staging first writes ``journal.json`` (temp file, fsync, rename,
directory fsync), and every step is atomic or idempotent. ``current``
only ever names a complete release, because a release becomes complete (its
``.manifest`` appears) before any switch can name it, and the switch itself is a
single ``rename(2)`` of a temporary symlink over ``current``; the history records the
old current before the rename and the new one after it, so ``previous()`` is right
whichever side of the rename a crash falls. ``recover()`` reads the journal after a
crash, finishes or undoes what was in flight, and removes staging and temporaries.

Mutating methods do not lock: callers hold :meth:`ReleaseStore.lock` around them.
The state files are read and written by :mod:`statefiles`; a release's record and its
sidecar manifest are :mod:`release`.

Test-only crash injection: when the environment variable ``FLEETWAVE_TEST_CRASH_AT``
equals one of :data:`CRASH_POINTS`, the process SIGKILLs itself at that step. It is
read at each step and has no other effect; never set it in production.

Constructing a store and reading ``current`` must stay cheap (every agent RPC session
does it), so the package reader, the extractor and ``ctypes`` are imported where they
are used. Tree walks and removals (:mod:`tree`) never recurse: a package's depth is
its author's choice.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from fleetwave_agent.errors import (
    ImmutableVersionError,
    PackageError,
    ReleaseNotFoundError,
    StoreError,
)
from fleetwave_agent.knownbad import KnownBad
from fleetwave_agent.release import Release, load_release, sidecar
from fleetwave_agent.statefiles import (
    read_history,
    read_json,
    read_ledger,
    record_history,
    record_install,
    write_bytes,
    write_json,
)
from fleetwave_agent.tree import drift, remove_tree, seal_dirs
from fleetwave_core.errors import LockedError
from fleetwave_core.fsutil import TMP_PREFIX, fsync_dir

TYPE_CHECKING = False  # `typing` is not imported at run time (agent start-up cost)
if TYPE_CHECKING:
    from fleetwave_agent.digests import PayloadDigest
    from fleetwave_agent.keys import Keyring
    from fleetwave_agent.manifest import Manifest
    from fleetwave_agent.package import Limits

CRASH_ENV = "FLEETWAVE_TEST_CRASH_AT"
CRASH_POINTS = (
    "stage:journaled",
    "stage:extracting",
    "stage:extracted",
    "stage:ledger",
    "stage:renamed",
    "stage:sealed",
    "stage:complete",
    "switch:prepared",
    "switch:linked",
    "switch:renamed",
    "switch:recorded",
)
_PACKAGE_ID_RE = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class GcResult:
    """What :meth:`ReleaseStore.gc` removed, and the bytes that freed (apparent size)."""

    releases: tuple[Release, ...]
    uploads: tuple[str, ...]  # package ids whose uploaded file was removed
    freed_bytes: int


def _crash_point(step: str) -> None:
    if os.environ.get(CRASH_ENV) == step:
        import signal  # tests only: not on every session's start-up path

        os.kill(os.getpid(), signal.SIGKILL)


class ReleaseStore:
    """Installs verified packages as read-only releases and switches ``current``."""

    def __init__(self, root: Path, *, keep: int = 3, create: bool = True) -> None:
        """``create=False`` (read-only commands) creates nothing: a missing root is a
        StoreError, and missing subdirectories read as empty."""
        if keep < 2:
            raise StoreError(f"keep must be at least 2 (current and previous), got {keep}")
        self.root = Path(root)
        self.keep = keep
        self.releases_dir = self.root / "releases"
        self.incoming_dir = self.root / "incoming"
        self.staging_dir = self.root / "staging"
        self.state_dir = self.root / "state"
        self.current_link = self.root / "current"
        self._journal = self.state_dir / "journal.json"
        self._ledger = self.state_dir / "ledger.json"
        self._history = self.state_dir / "history.json"
        self._pins = self.state_dir / "pins.json"
        self.known_bad = KnownBad(self.state_dir / "bad.json")
        if not create:
            if not self.root.is_dir():
                raise StoreError(
                    f"{self.root}: no agent root here (nothing was ever installed); "
                    "check --root or the config's root"
                )
            return
        try:
            for directory in (
                self.root,
                self.releases_dir,
                self.incoming_dir,
                self.staging_dir,
                self.state_dir,
            ):
                directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"{self.root}: cannot create the release store: {exc}") from None

    # ------------------------------------------------------------------ locking

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold an exclusive ``flock`` on ``ROOT/.lock``; LockedError names the holder."""
        path = self.root / ".lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise StoreError(f"{path}: cannot lock: {exc.strerror}") from None
                holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
                raise LockedError(f"release store {self.root} is locked by pid {holder}") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            try:
                yield
            finally:
                os.ftruncate(fd, 0)
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    # ------------------------------------------------------------------ queries

    def incoming_path(self, package_id: str) -> Path:
        """Where an uploaded package with this id is stored."""
        if not _PACKAGE_ID_RE.fullmatch(package_id):
            raise PackageError(f"not a package id: {package_id!r}")
        return self.incoming_dir / f"{package_id}.fwpkg"

    def has_package(self, package_id: str) -> bool:
        """True if this package is installed or already uploaded to ``incoming/``."""
        if self.incoming_path(package_id).is_file():
            return True
        return any(r.package_id == package_id for r in self.releases())

    def releases(self) -> list[Release]:
        """Every complete release, oldest install first."""
        order: dict[str, int] = read_ledger(self._ledger)["installed"]
        found: list[Release] = []
        for name_dir in sorted(self._listdir(self.releases_dir)):
            parent = self.releases_dir / name_dir
            for entry in sorted(self._listdir(parent)):
                if entry.endswith(".manifest") and not entry.startswith(TMP_PREFIX):
                    path = parent / entry.removesuffix(".manifest")
                    if path.is_dir() and not path.is_symlink():
                        found.append(load_release(path))
        found.sort(key=lambda r: (order.get(r.package_id, -1), r.name, r.version))
        return found

    def current(self) -> Release | None:
        """The release ``current`` points at, or None before the first switch."""
        try:
            target = os.readlink(self.current_link)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"{self.current_link}: cannot read: {exc.strerror}") from None
        return load_release(self._resolve(target))

    def previous(self, *, include_bad: bool = False) -> Release | None:
        """The most recent release that was current before the current one.

        Known-bad releases (:mod:`knownbad`) are skipped unless ``include_bad``: the
        previous release is the last *good* one.
        """
        current = self.current()
        bad = set() if include_bad else {b.package_id for b in self.known_bad.all()}
        for rel in reversed(read_history(self._history)):
            path = self._resolve(rel)
            if current is not None and path == current.path:
                continue
            if self._is_complete(path):
                release = load_release(path)
                if release.package_id not in bad:
                    return release
        return None

    def get(self, version: str, name: str | None = None) -> Release:
        """The installed release with this version (and name, when several packages share it)."""
        matches = [
            r for r in self.releases() if r.version == version and (name is None or r.name == name)
        ]
        if not matches:
            what = f"{name} {version}" if name else f"version {version}"
            raise ReleaseNotFoundError(f"no installed release {what} in {self.root}")
        if len(matches) > 1:
            names = ", ".join(sorted({r.name for r in matches}))
            raise ReleaseNotFoundError(
                f"version {version} is installed for several packages ({names}); give the name"
            )
        return matches[0]

    def installed_at(self, release: Release) -> float | None:
        """When ``release`` was installed: its manifest sidecar is written last."""
        try:
            return sidecar(release.path).stat().st_mtime
        except FileNotFoundError:
            return None

    def verify_installed(self, release: Release) -> list[str]:
        """Drift since install: ``changed:``, ``mode:``, ``added:``, ``removed:`` lines."""
        return drift(
            release.path, {f.path: (f.mode, f.size, f.sha256) for f in release.manifest.files}
        )

    # ------------------------------------------------------------------ install

    def stage(
        self,
        package: Path,
        keyring: Keyring,
        *,
        now: float,
        limits: Limits | None = None,
        payload_digest: PayloadDigest | None = None,
    ) -> Release:
        """Verify ``package`` and install it as a read-only release (not yet current).

        Idempotent for a package id already installed (the file is still fully
        verified). ImmutableVersionError if its
        name and version were ever installed with another package id. Nothing outside
        ``staging/`` changes unless the whole install succeeds. ``limits`` defaults to
        ``package.DEFAULT_LIMITS``.

        ``payload_digest``, if given, is this process's own hash of ``package``'s payload
        (see :mod:`digests`); it replaces hashing the payload again only while the file
        is unchanged, and a digest that differs from the manifest's is a ChecksumError.
        """
        from fleetwave_agent.extract import extract_payload
        from fleetwave_agent.package import DEFAULT_LIMITS, check_payload_digest, verify_header

        limits = DEFAULT_LIMITS if limits is None else limits
        header = verify_header(package, keyring, now=now, limits=limits)
        manifest = header.manifest
        package_id = manifest.package_id
        known = read_ledger(self._ledger)["versions"].get(manifest.name, {}).get(manifest.version)
        if known is not None and known != package_id:
            raise ImmutableVersionError(
                f"{manifest.name} {manifest.version} was already installed as package "
                f"{known[:12]}; this package is {package_id[:12]}; versions are immutable"
            )
        target = self._release_path(manifest)
        if self._is_complete(target):
            # Nothing to extract, but a tampered copy must still be refused.
            if payload_digest is None or not payload_digest.vouches_for(package, manifest):
                check_payload_digest(package, header)
            return load_release(target)
        staging = self.staging_dir / f"{package_id[:12]}-{os.urandom(4).hex()}"
        write_json(
            self._journal,
            {"op": "stage", "staging": self._rel(staging), "target": self._rel(target)},
        )
        _crash_point("stage:journaled")
        try:
            staging.mkdir()
            first = [True]

            def on_file(_: str) -> None:
                if first[0]:
                    first[0] = False
                    _crash_point("stage:extracting")

            # One syncfs after sealing replaces a fsync per file (see _flush_tree).
            extract_payload(
                package,
                manifest,
                staging,
                limits,
                readonly=True,
                fsync=False,
                on_file=on_file,
                payload_digest=payload_digest,
            )
        except BaseException:
            remove_tree(staging)
            self._clear_journal()
            raise
        _crash_point("stage:extracted")
        try:
            self._finish_stage(manifest, staging, target)
        except BaseException:
            # Undo now rather than leave it to recover(): the ledger entry may stay,
            # it binds this version to this very package id.
            with contextlib.suppress(OSError, StoreError):
                remove_tree(staging)
                if not self._is_complete(target):
                    remove_tree(target)
                self._clear_journal()
            raise
        self._clear_journal()
        return load_release(target)

    def _finish_stage(self, manifest: Manifest, staging: Path, target: Path) -> None:
        try:
            record_install(self._ledger, manifest)
            _crash_point("stage:ledger")
            if target.exists() or target.is_symlink():
                remove_tree(target)  # an incomplete leftover: recover() would remove it too
            target.parent.mkdir(parents=True, exist_ok=True)
            os.rename(staging, target)
            fsync_dir(target.parent)
            fsync_dir(self.staging_dir)
            _crash_point("stage:renamed")
            seal_dirs(target)
            _crash_point("stage:sealed")
            write_bytes(sidecar(target), manifest.canonical_bytes())
            _crash_point("stage:complete")
        except OSError as exc:
            raise StoreError(f"{target}: cannot install release: {exc}") from None

    def switch(self, release: Release) -> Release | None:
        """Point ``current`` at ``release`` atomically; return what was current before."""
        if not self._is_complete(release.path) or release.path.parent.parent != self.releases_dir:
            raise ReleaseNotFoundError(f"{release.path} is not a complete release of {self.root}")
        old = self.current()
        if old is not None and old.path == release.path:
            return old
        target = self._rel(release.path)
        # No journal needed: the rename is the only step that matters, and history is
        # written so that previous() is right whether or not we crash around it.
        if old is not None:
            record_history(self._history, self._rel(old.path))
        _crash_point("switch:prepared")
        tmp = self.root / f"{TMP_PREFIX}current-{os.getpid()}-{os.urandom(4).hex()}"
        try:
            os.symlink(target, tmp)
            _crash_point("switch:linked")
            os.replace(tmp, self.current_link)
            fsync_dir(self.root)
            _crash_point("switch:renamed")
        except OSError as exc:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise StoreError(f"{self.current_link}: cannot switch: {exc}") from None
        record_history(self._history, target)
        _crash_point("switch:recorded")
        return old

    def gc(self) -> GcResult:
        """Keep ``keep`` releases, remove the others, and drop uploads already installed.

        The kept ones are the current, the previous (last good) and every pinned
        release, whatever their number, then the most recently installed others until
        ``keep`` are kept. An uploaded package file (``incoming/``) whose release is
        installed is removed: the release is immutable and the package can be uploaded
        again. Uploads not installed yet (a package on its way) are left alone.
        """
        releases = self.releases()
        pinned = set(self.pins())
        protected = {r.path for r in (self.current(), self.previous()) if r is not None}
        protected |= {r.path for r in releases if r.package_id in pinned}
        room = max(0, self.keep - len(protected))
        removed: list[Release] = []
        for release in reversed(releases):  # newest install first
            if release.path in protected:
                continue
            if room > 0:
                room -= 1
                continue
            # The sidecar goes first: from then on the release is incomplete and
            # recover() finishes the removal if we crash half-way.
            sidecar(release.path).unlink()
            fsync_dir(release.path.parent)
            remove_tree(release.path)
            removed.append(release)
        removed.reverse()
        freed = sum(r.size_bytes for r in removed)
        installed = {r.package_id for r in releases}
        uploads: list[str] = []
        for package_id, path, size in self.uploads():
            if package_id in installed:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    uploads.append(package_id)
                    freed += size
        if uploads:
            fsync_dir(self.incoming_dir)
        return GcResult(tuple(removed), tuple(uploads), freed)

    def drop_upload(self, package_id: str) -> bool:
        """Remove the uploaded file of ``package_id``; True if there was one."""
        try:
            self.incoming_path(package_id).unlink()
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise StoreError(f"{self.incoming_dir}: cannot remove an upload: {exc}") from None
        fsync_dir(self.incoming_dir)
        return True

    def uploads(self) -> list[tuple[str, Path, int]]:
        """Uploaded package files: (package id, path, size in bytes), by id."""
        found: list[tuple[str, Path, int]] = []
        for entry in sorted(self._listdir(self.incoming_dir)):
            package_id = entry.removesuffix(".fwpkg")
            if entry.endswith(".fwpkg") and _PACKAGE_ID_RE.fullmatch(package_id):
                path = self.incoming_dir / entry
                try:
                    found.append((package_id, path, path.stat().st_size))
                except FileNotFoundError:
                    continue
        return found

    # ------------------------------------------------------------------ pins

    def pins(self) -> list[str]:
        """Package ids of pinned releases (gc never removes them), sorted."""
        data = read_json(self._pins, [])
        if not isinstance(data, list) or not all(
            isinstance(x, str) and _PACKAGE_ID_RE.fullmatch(x) for x in data
        ):
            raise StoreError(f"{self._pins}: not a list of package ids")
        return sorted(data)

    def set_pinned(self, release: Release, pinned: bool) -> bool:
        """Pin or unpin ``release``; True if that changed anything."""
        pins = set(self.pins())
        if (release.package_id in pins) == pinned:
            return False
        pins.symmetric_difference_update({release.package_id})
        write_json(self._pins, sorted(pins))
        return True

    def recover(self) -> list[str]:
        """Finish or undo the journaled operation, then clear staging and leftovers.

        Never fails because of a leftover it cannot remove (too deep, a path over
        PATH_MAX, a permission problem): that is reported in the returned actions and
        retried next time, so one bad package cannot block every later operation.
        """
        actions: list[str] = []
        try:
            journal = read_json(self._journal, None)
        except StoreError:
            journal = "unreadable"
        if isinstance(journal, dict) and journal.get("op") == "stage":
            try:
                target: Path | None = self._resolve(str(journal.get("target", "")))
            except StoreError:
                target = None
            if target is None:
                actions.append("discarded a journal naming no release")
            elif self._is_complete(target):
                actions.append(f"stage of {self._rel(target)} had completed")
            elif target.exists() or target.is_symlink():
                self._remove(target, "incomplete release", actions)
            else:
                actions.append(f"abandoned stage of {self._rel(target)}")
        elif journal is not None:
            actions.append("discarded an unreadable journal")
        for entry in sorted(self._listdir(self.staging_dir)):
            self._remove(self.staging_dir / entry, "", actions)
        for directory in (self.root, self.state_dir):
            for entry in sorted(self._listdir(directory)):
                if entry.startswith(TMP_PREFIX):
                    self._remove(directory / entry, "", actions)
        self._sweep_releases(actions)
        current = self.current()
        if current is not None and record_history(self._history, self._rel(current.path)):
            actions.append(f"recorded {self._rel(current.path)} as current in the history")
        if journal is not None:
            self._clear_journal()
        return actions

    # ------------------------------------------------------------------ internals

    def _remove(self, path: Path, what: str, actions: list[str]) -> None:
        """Remove a leftover and say so; a failure is reported, never raised."""
        name = f"{what} {self._rel(path)}" if what else self._rel(path)
        try:
            remove_tree(path)
        except OSError as exc:
            actions.append(f"could not remove {name}: {exc.strerror}")
        else:
            actions.append(f"removed {name}")

    def _sweep_releases(self, actions: list[str]) -> None:
        """Remove release directories without a sidecar, and sidecars without a directory."""
        current = os.path.realpath(self.current_link) if self.current_link.is_symlink() else None
        for name_dir in sorted(self._listdir(self.releases_dir)):
            parent = self.releases_dir / name_dir
            for entry in sorted(self._listdir(parent)):
                path = parent / entry
                if entry.startswith(TMP_PREFIX):
                    self._remove(path, "", actions)
                elif entry.endswith(".manifest"):
                    if not path.with_name(entry.removesuffix(".manifest")).is_dir():
                        path.unlink()
                        actions.append(f"removed orphan {self._rel(path)}")
                elif not sidecar(path).exists() and os.path.realpath(path) != current:
                    self._remove(path, "incomplete release", actions)

    def _release_path(self, manifest: Manifest) -> Path:
        return self.releases_dir / manifest.name / f"{manifest.version}-{manifest.package_id[:12]}"

    def _rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def _resolve(self, rel: str) -> Path:
        """Map a stored relative path back to a release directory, refusing anything else."""
        parts = rel.split("/")
        if len(parts) != 3 or parts[0] != "releases" or any(p in ("", ".", "..") for p in parts):
            raise StoreError(f"{self.root}: {rel!r} is not a release path")
        return self.root.joinpath(*parts)

    def _is_complete(self, path: Path) -> bool:
        return sidecar(path).is_file() and path.is_dir() and not path.is_symlink()

    def _listdir(self, path: Path) -> list[str]:
        try:
            return os.listdir(path)
        except FileNotFoundError:
            return []

    def _clear_journal(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._journal.unlink()
            fsync_dir(self.state_dir)
