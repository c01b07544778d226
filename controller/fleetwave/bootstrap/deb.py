"""The Debian-package path of the bootstrap: reading a ``.deb``'s control file in
Python (the controller may not have dpkg), deciding from ``dpkg-query`` whether it is
installed and what it lacks, and installing it (``dpkg -i``, else ``apt-get install``)."""

from __future__ import annotations

import io
import re
import shlex
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleetwave.bootstrap.options import BootstrapOptions, read_local
from fleetwave.bootstrap.remote import run
from fleetwave.errors import ConfigError

_INSTALLED = "install ok installed"


@dataclass(frozen=True)
class DebInfo:
    """What bootstrap needs from a .deb's control file."""

    package: str
    version: str
    depends: str = ""

    def dependency_names(self) -> tuple[str, ...]:
        """Every package named in Depends (all alternatives), for one dpkg-query."""
        names: list[str] = []
        for clause in _depends_clauses(self.depends):
            names.extend(n for n in clause if n not in names)
        return tuple(names)


def read_deb_info(path: Path) -> DebInfo:
    """Package, Version and Depends from a .deb, read in Python (the controller may not
    have dpkg): an ``ar`` archive whose ``control.tar.{gz,xz}`` holds ``./control``."""
    data = read_local(path, "Debian package")

    def bad(why: str) -> ConfigError:
        return ConfigError(f"{path}: not a usable Debian package: {why}")

    if not data.startswith(b"!<arch>\n"):
        raise bad("no ar archive header")
    offset = 8
    while offset + 60 <= len(data):
        header = data[offset : offset + 60]
        name = header[:16].decode("ascii", "replace").strip().rstrip("/")
        try:
            size = int(header[48:58].decode("ascii").strip())
        except ValueError:
            raise bad(f"corrupt member header at byte {offset}") from None
        body = data[offset + 60 : offset + 60 + size]
        offset += 60 + size + (size & 1)
        if not name.startswith("control.tar"):
            continue
        if name.endswith(".zst"):
            raise bad("control.tar.zst is not readable here; build it with packaging/build-deb")
        try:
            with tarfile.open(fileobj=io.BytesIO(body), mode="r:*") as tar:
                member = tar.extractfile("./control")
                text = member.read().decode("utf-8") if member is not None else ""
        except (tarfile.TarError, KeyError, EOFError, OSError, UnicodeDecodeError) as exc:
            raise bad(f"unreadable {name}: {exc}") from None
        fields = parse_control(text)
        missing = [k for k in ("Package", "Version") if not fields.get(k)]
        if missing:
            raise bad(f"control file lacks {', '.join(missing)}")
        return DebInfo(fields["Package"], fields["Version"], fields.get("Depends", ""))
    raise bad("no control.tar member")


def parse_control(text: str) -> dict[str, str]:
    """The fields of one deb822 paragraph; continuation lines are joined with spaces."""
    fields: dict[str, str] = {}
    key = ""
    for line in text.splitlines():
        if line[:1] in (" ", "\t") and key:
            fields[key] += " " + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            key = key.strip()
            fields[key] = value.strip()
    return fields


def _depends_clauses(depends: str) -> list[tuple[str, ...]]:
    """``a (>= 1), b | c`` -> ``[("a",), ("b", "c")]``: names without versions/arches."""
    clauses = []
    for clause in depends.split(","):
        names = tuple(
            re.split(r"[\s(:\[]", alt.strip(), maxsplit=1)[0] for alt in clause.split("|")
        )
        if any(names):
            clauses.append(tuple(n for n in names if n))
    return clauses


def parse_dpkg_query(out: str) -> dict[str, tuple[str, str]]:
    """``dpkg-query -W -f='${Package}\\t${Version}\\t${Status}\\n'`` -> name: (ver, status)."""
    packages: dict[str, tuple[str, str]] = {}
    for line in out.splitlines():
        parts = line.split("\t")
        if len(parts) == 3:
            packages[parts[0]] = (parts[1], parts[2])
    return packages


def missing_dependencies(deb: DebInfo, packages: Mapping[str, tuple[str, str]]) -> list[str]:
    """Depends clauses with no installed alternative (version constraints are left to
    dpkg, which refuses the install and says why)."""
    return [
        " | ".join(clause)
        for clause in _depends_clauses(deb.depends)
        if not any(packages.get(name, ("", ""))[1] == _INSTALLED for name in clause)
    ]


def deb_is_installed(deb: DebInfo, packages: Mapping[str, tuple[str, str]]) -> bool:
    """Is exactly this version of the package installed (not half-configured)?"""
    return packages.get(deb.package) == (deb.version, _INSTALLED)


def deb_install_command(remote_deb: str, missing: Sequence[str]) -> str:
    """``dpkg -i`` when every dependency is there (no apt, no network), else
    ``apt-get install`` of the file, which pulls the missing ones from the host's
    repositories. ``--force-confold``: bootstrap owns /etc/fleetwave/agent.yaml, so an
    upgrade keeps it and never stops at a conffile prompt."""
    q = shlex.quote(remote_deb)
    if not missing:
        return f"dpkg --force-confold --force-confdef -i {q}"
    return (
        "apt-get install -y -q --no-install-recommends "
        "-o Dpkg::Options::=--force-confold -o Dpkg::Options::=--force-confdef "
        f"-o DPkg::Lock::Timeout=60 {q}"
    )


def install_deb(conn: Any, options: BootstrapOptions, sudo: bool) -> bool:
    """Install the .deb unless this version is installed; True if it changed anything."""
    assert options.local_deb is not None
    deb = read_deb_info(options.local_deb)
    q = shlex.quote
    names = " ".join(q(n) for n in (deb.package, *deb.dependency_names()))
    fmt = q("${Package}\\t${Version}\\t${Status}\\n")
    packages = parse_dpkg_query(
        run(conn, f"dpkg-query -W -f={fmt} {names} 2>/dev/null; true", sudo)
    )
    if deb_is_installed(deb, packages):
        return False
    # A fresh private directory of the admin login: SFTP writes as that user, and no
    # other local user can swap the file before root installs it.
    tmp_dir = run(conn, "mktemp -d /tmp/fleetwave-deb.XXXXXX", False).strip()
    remote_deb = f"{tmp_dir}/{options.local_deb.name}"
    try:
        conn.put(str(options.local_deb), remote_deb)
        command = deb_install_command(remote_deb, missing_dependencies(deb, packages))
        run(conn, f"env DEBIAN_FRONTEND=noninteractive {command}", sudo)
    finally:
        run(conn, f"rm -rf {q(tmp_dir)}", False)
    return True
