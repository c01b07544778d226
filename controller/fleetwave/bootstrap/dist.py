"""What ``fleetwave agent install`` ships, found from the installed controller.

* The systemd unit and the resident drop-in are package data
  (``fleetwave/bootstrap/data/``, built from ``packaging/``), so a pip-installed
  controller has them.
* The agent wheel is the controller's own distribution (one wheel holds both). From
  a source checkout or an editable install it is built with ``pip wheel`` from the
  source tree; from an installed wheel it is **repacked from the installed files**
  listed in the distribution's ``RECORD`` (compiled files, scripts and install-time
  metadata left out, ``RECORD`` written anew), deterministically: the same installed
  files give the same bytes, so a second bootstrap sees the same wheel digest and
  reinstalls nothing.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
import zipfile
from importlib import metadata, resources
from pathlib import Path

from fleetwave.errors import ConfigError

DIST_NAME = "fleetwave"
#: Install-time files of a dist-info directory that are not part of the wheel.
_INSTALL_ONLY = frozenset({"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"})
_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip can hold: fixed for determinism


def packaged_file(name: str) -> Path:
    """A file shipped in ``fleetwave/bootstrap/data`` (the unit, the drop-in)."""
    path = Path(str(resources.files("fleetwave.bootstrap") / "data" / name))
    if not path.is_file():
        raise ConfigError(
            f"{path}: missing from the installed fleetwave (reinstall it, or give the file)"
        )
    return path


def source_tree(dist: metadata.Distribution | None) -> Path | None:
    """The source directory the controller runs from: a checkout (no install, or an
    editable or directory install); None for an installed wheel."""
    here = Path(__file__).resolve().parents[3]  # controller/fleetwave/bootstrap/dist.py
    if (here / "pyproject.toml").is_file() and (here / "agent" / "fleetwave_agent").is_dir():
        return here
    if dist is None:
        return None
    raw = dist.read_text("direct_url.json")
    if raw:
        info = json.loads(raw)
        url = str(info.get("url", ""))
        if "dir_info" in info and url.startswith("file://"):
            return Path(url.removeprefix("file://"))
    return None


def agent_wheel(out_dir: Path) -> Path:
    """The fleetwave wheel to install on hosts, written to ``out_dir``."""
    try:
        dist: metadata.Distribution | None = metadata.distribution(DIST_NAME)
    except metadata.PackageNotFoundError:
        dist = None
    tree = source_tree(dist)
    if tree is not None:
        return build_from_source(tree, out_dir)
    if dist is None:
        raise ConfigError("fleetwave is neither installed nor run from a checkout: give --wheel")
    return repack_installed(dist, out_dir)


def build_from_source(tree: Path, out_dir: Path) -> Path:
    """``pip wheel TREE -w OUT --no-deps``."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(tree),
            "-w",
            str(out_dir),
            "--no-deps",
            "--quiet",
            "--disable-pip-version-check",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    wheels = sorted(out_dir.glob("fleetwave-*.whl"))
    if proc.returncode != 0 or not wheels:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise ConfigError(f"could not build the fleetwave wheel from {tree} (give --wheel): {tail}")
    return wheels[-1]


def repack_installed(dist: metadata.Distribution, out_dir: Path) -> Path:
    """A wheel of the installed distribution's files (see the module docstring)."""
    name, version = dist.metadata["Name"], dist.version
    info_dir = f"{name.replace('-', '_')}-{version}.dist-info"
    members: dict[str, bytes] = {}
    for item in dist.files or ():
        parts = item.parts
        if not parts or parts[0] == ".." or "__pycache__" in parts or item.suffix == ".pyc":
            continue  # console scripts (bin/), bytecode: pip makes them on the host
        if parts[0].endswith(".dist-info") and parts[-1] in _INSTALL_ONLY:
            continue
        installed = Path(str(dist.locate_file(item)))
        try:
            members[item.as_posix()] = installed.read_bytes()
        except OSError as exc:
            raise ConfigError(
                f"cannot read the installed fleetwave file {installed}: {exc.strerror} "
                "(reinstall fleetwave, or give --wheel)"
            ) from None
    if f"{info_dir}/WHEEL" not in members or not any(
        m.startswith("fleetwave_agent/") for m in members
    ):
        raise ConfigError(
            f"the installed fleetwave at {dist.locate_file('')} lists no agent files in its "
            "RECORD: give --wheel"
        )
    record = [
        f"{path},sha256={_digest(data)},{len(data)}" for path, data in sorted(members.items())
    ]
    record.append(f"{info_dir}/RECORD,,")
    members[f"{info_dir}/RECORD"] = ("\n".join(record) + "\n").encode()
    out = out_dir / f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as whl:
        # The dist-info last, as wheels are written (RECORD itself the very last).
        for member in sorted(
            members, key=lambda p: (p.startswith(info_dir), p.endswith("/RECORD"), p)
        ):
            entry = zipfile.ZipInfo(member, _EPOCH)
            entry.external_attr = 0o644 << 16
            entry.compress_type = zipfile.ZIP_DEFLATED
            whl.writestr(entry, members[member])
    return out


def _digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
