"""An installed release of the store: its record, and how it is read back from its
sidecar manifest (``releases/NAME/VERSION-ID12.manifest``, see :mod:`store`).

The package reader is imported where it is used: constructing a store and reading
``current`` must stay cheap.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fleetwave_agent.errors import PackageError, ReleaseNotFoundError, StoreError

TYPE_CHECKING = False  # `typing` is not imported at run time (agent start-up cost)
if TYPE_CHECKING:
    from typing import Any

TYPE_CHECKING = False  # `typing` is not imported at run time (agent start-up cost)
if TYPE_CHECKING:
    from fleetwave_agent.manifest import Manifest


@dataclass(frozen=True)
class Release:
    """One installed, complete release."""

    name: str
    version: str
    package_id: str
    path: Path
    manifest: Manifest

    @property
    def size_bytes(self) -> int:
        """Bytes of its files (apparent size, from the manifest: no tree walk)."""
        return sum(f.size for f in self.manifest.files)


def load_release(path: Path) -> Release:
    """The complete release at ``path``, read from its sidecar manifest.

    Raises ReleaseNotFoundError when it has none and StoreError when it is unreadable,
    corrupt or does not match the directory name."""
    from fleetwave_agent.package import parse_manifest

    try:
        raw = sidecar(path).read_bytes()
    except FileNotFoundError:
        raise ReleaseNotFoundError(f"{path} is not a complete release") from None
    except OSError as exc:
        raise StoreError(f"{path}: cannot read its manifest: {exc.strerror}") from None
    try:
        manifest = parse_manifest(raw)
    except PackageError as exc:
        raise StoreError(f"{sidecar(path)}: corrupt release manifest: {exc}") from None
    if path.name != f"{manifest.version}-{manifest.package_id[:12]}":
        raise StoreError(f"{path}: directory name does not match its manifest")
    return Release(
        name=manifest.name,
        version=manifest.version,
        package_id=manifest.package_id,
        path=path,
        manifest=manifest,
    )


def sidecar(release_path: Path) -> Path:
    """The canonical manifest written next to a release; it exists iff the release is complete."""
    return release_path.with_name(release_path.name + ".manifest")


def release_summary(release: Release | None) -> dict[str, Any] | None:
    """A release as the CLI's ``--json`` and the RPC results show it."""
    if release is None:
        return None
    return {
        "name": release.name,
        "version": release.version,
        "package_id": release.package_id,
        "path": str(release.path),
    }
