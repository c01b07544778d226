"""The release store's state files (``state/*.json``): read with a type check that
names the file, written atomically (readers see the old content or the new).
"""

from __future__ import annotations

import json
from pathlib import Path

from fleetwave_agent.errors import StoreError
from fleetwave_core.fsutil import atomic_write

TYPE_CHECKING = False  # `typing` is not imported at run time (agent start-up cost)
if TYPE_CHECKING:
    from typing import Any

    from fleetwave_agent.manifest import Manifest

#: How many entries ``state/history.json`` keeps.
HISTORY_MAX = 100


def read_ledger(path: Path) -> dict[str, Any]:
    """The ledger (name -> version -> package id, install order), defaults filled in."""
    data = read_json(path, {})
    if not isinstance(data, dict):
        raise StoreError(f"{path}: not a ledger")
    data.setdefault("versions", {})
    data.setdefault("installed", {})
    data.setdefault("next_seq", len(data["installed"]))
    return data


def record_install(path: Path, manifest: Manifest) -> None:
    """Record ``manifest`` as installed (its version's package id, its install order)."""
    ledger = read_ledger(path)
    ledger["versions"].setdefault(manifest.name, {})[manifest.version] = manifest.package_id
    ledger["installed"][manifest.package_id] = ledger["next_seq"]
    ledger["next_seq"] += 1
    write_json(path, ledger)


def read_history(path: Path) -> list[str]:
    """The releases that were current, oldest first (paths relative to the root)."""
    data = read_json(path, [])
    if not isinstance(data, list) or not all(isinstance(x, str) for x in data):
        raise StoreError(f"{path}: not a release history")
    return data


def record_history(path: Path, entry: str) -> bool:
    """Append ``entry`` unless it is already the last one; True if it was appended."""
    history = read_history(path)
    if history and history[-1] == entry:
        return False
    history.append(entry)
    write_json(path, history[-HISTORY_MAX:])
    return True


def read_json(path: Path, default: Any) -> Any:
    """The JSON in ``path``; ``default`` when it does not exist, StoreError when unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return default
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StoreError(f"{path}: unreadable store state: {exc}") from None


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON, atomically."""
    write_bytes(path, json.dumps(data, sort_keys=True, indent=1).encode() + b"\n")


def write_bytes(path: Path, data: bytes) -> None:
    """Readers see the old content or the new, never half (see fsutil.atomic_write)."""
    try:
        atomic_write(path, data)
    except OSError as exc:
        raise StoreError(f"{path}: cannot write: {exc.strerror}") from None
