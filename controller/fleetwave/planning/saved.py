"""Saved plans: ``fleetwave plan --out FILE`` and ``fleetwave deploy --plan FILE``.

A saved plan is the plan ``deploy`` executes (the planning codec's JSON) plus what it
was made for: the SHA-256 of every pipeline file of the ``extends:`` chain, of the
topology file, and the package's name, version and package id. ``deploy --plan``
recomputes those inputs and refuses the file when any differs (:func:`check_fresh`),
so what was reviewed is what runs.

:func:`inputs_of` reads files (the digests); everything else here is pure.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from fleetwave.errors import ConfigError
from fleetwave.planning.codec import plan_from_dict, plan_to_dict
from fleetwave.planning.model import Plan

SAVED_FORMAT = 1
#: A saved plan larger than this is refused unread (a 1,824-host plan is ~1 MB).
MAX_SAVED_BYTES = 64 * 2**20


@dataclass(frozen=True)
class FileDigest:
    path: str  # absolute
    sha256: str


@dataclass(frozen=True)
class PackageRef:
    name: str
    version: str
    package_id: str

    def describe(self) -> str:
        return f"{self.name} {self.version} ({self.package_id[:12]})"


@dataclass(frozen=True)
class PlanInputs:
    """What a plan was made from."""

    pipeline: tuple[FileDigest, ...]  # the file named by -f, then its extends: parents
    topology: FileDigest
    package: PackageRef


@dataclass(frozen=True)
class SavedPlan:
    inputs: PlanInputs
    plan: Plan
    saved_at: datetime
    start: datetime | None  # the --at the shown timeline was estimated from


def digest(path: Path) -> FileDigest:
    """The SHA-256 of a file's bytes, under its absolute path."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return FileDigest(str(path.resolve()), hashlib.sha256(data).hexdigest())


def inputs_of(pipeline_files: Sequence[Path], topology: Path, package: PackageRef) -> PlanInputs:
    """Digest the pipeline chain and the topology (reads the files)."""
    return PlanInputs(tuple(digest(p) for p in pipeline_files), digest(topology), package)


def changes(saved: PlanInputs, current: PlanInputs) -> list[str]:
    """What differs between the inputs a plan was made for and the current ones."""
    out: list[str] = []
    old = {f.path: f.sha256 for f in saved.pipeline}
    new = {f.path: f.sha256 for f in current.pipeline}
    if list(old) != list(new):
        out.append(
            "the pipeline's extends: chain is now "
            + " -> ".join(Path(p).name for p in new)
            + " (was "
            + " -> ".join(Path(p).name for p in old)
            + ")"
        )
    else:
        out += [f"pipeline file {p} changed" for p in new if old[p] != new[p]]
    if saved.topology != current.topology:
        if saved.topology.path != current.topology.path:
            out.append(f"the topology is now {current.topology.path} (was {saved.topology.path})")
        else:
            out.append(f"topology {current.topology.path} changed")
    if saved.package != current.package:
        out.append(
            f"the package is {current.package.describe()}, "
            f"the plan was made for {saved.package.describe()}"
        )
    return out


def check_fresh(path: Path, saved: SavedPlan, current: PlanInputs) -> None:
    """Raise ConfigError (one line) when ``saved`` was made for other inputs."""
    found = changes(saved.inputs, current)
    if found:
        raise ConfigError(
            f"{path}: saved plan is stale: {'; '.join(found)}: "
            "make a new one with `fleetwave plan --out`"
        )


def _file(d: FileDigest) -> dict[str, str]:
    return {"path": d.path, "sha256": d.sha256}


def saved_to_dict(saved: SavedPlan) -> dict[str, Any]:
    """The JSON form of a saved plan."""
    i = saved.inputs
    return {
        "fleetwave_saved_plan": SAVED_FORMAT,
        "saved_at": saved.saved_at.isoformat(),
        "start": saved.start.isoformat() if saved.start else None,
        "inputs": {
            "pipeline": [_file(f) for f in i.pipeline],
            "topology": _file(i.topology),
            "package": {
                "name": i.package.name,
                "version": i.package.version,
                "package_id": i.package.package_id,
            },
        },
        "plan": plan_to_dict(saved.plan),
    }


def write_saved(path: Path, saved: SavedPlan, extra: dict[str, Any] | None = None) -> None:
    """Write ``saved`` (plus ``extra`` keys for readers, e.g. the timeline) atomically."""
    from fleetwave_core.fsutil import atomic_write

    doc = {**saved_to_dict(saved), **(extra or {})}
    atomic_write(path, json.dumps(doc, indent=1, sort_keys=False) + "\n")


def _bad(path: Path, what: str) -> ConfigError:
    return ConfigError(f"{path}: not a saved plan: {what}")


def _str(data: Any, key: str, path: Path, where: str) -> str:
    value = data.get(key) if isinstance(data, dict) else None
    if not isinstance(value, str) or not value:
        raise _bad(path, f"{where}.{key} missing or not a string")
    return value


def _digest(data: Any, path: Path, where: str) -> FileDigest:
    return FileDigest(_str(data, "path", path, where), _str(data, "sha256", path, where))


def read_saved(path: Path) -> SavedPlan:
    """Load a saved plan; ConfigError (one line, naming the file) when it is not one."""
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_SAVED_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the saved plan: {exc.strerror or exc}") from None
    if len(raw) > MAX_SAVED_BYTES:
        raise _bad(path, f"larger than {MAX_SAVED_BYTES} bytes")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise _bad(path, f"invalid JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("fleetwave_saved_plan") != SAVED_FORMAT:
        raise _bad(path, f"expected fleetwave_saved_plan: {SAVED_FORMAT}")
    inputs = data.get("inputs")
    if not isinstance(inputs, dict):
        raise _bad(path, "inputs missing")
    chain = inputs.get("pipeline")
    if not isinstance(chain, list) or not chain:
        raise _bad(path, "inputs.pipeline missing")
    package = inputs.get("package")
    ref = PackageRef(
        _str(package, "name", path, "inputs.package"),
        _str(package, "version", path, "inputs.package"),
        _str(package, "package_id", path, "inputs.package"),
    )
    plan_data = data.get("plan")
    if not isinstance(plan_data, dict):
        raise _bad(path, "plan missing")
    try:
        plan = plan_from_dict(plan_data)
        saved_at = datetime.fromisoformat(_str(data, "saved_at", path, "$"))
        start_text = data.get("start")
        start = datetime.fromisoformat(start_text) if isinstance(start_text, str) else None
    except ValueError as exc:  # PlanError is a ValueError too
        raise _bad(path, str(exc)) from None
    return SavedPlan(
        PlanInputs(
            tuple(_digest(f, path, f"inputs.pipeline[{i}]") for i, f in enumerate(chain)),
            _digest(inputs.get("topology"), path, "inputs.topology"),
            ref,
        ),
        plan,
        saved_at,
        start,
    )
