"""The built .deb: control fields, file list and modes, reproducibility, and the
packaged agent working under Debian's own python3 and libraries."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest

from fleetwave_agent.keys import generate_keypair
from fleetwave_agent.package import build_package

from .conftest import REPO, build_deb

pytestmark = pytest.mark.integration

SYSTEM_PYTHON = "/usr/bin/python3"
DEBIAN_LIBS = ("cryptography", "yaml", "psutil", "prometheus_client")
SITE = "usr/lib/python3/dist-packages"

#: The Python packages the .deb carries: the agent and the core it shares.
AGENT_PACKAGES = ("fleetwave_agent", "fleetwave_core")


def _version() -> str:
    with (REPO / "pyproject.toml").open("rb") as fh:
        return str(tomllib.load(fh)["project"]["version"])


def _dpkg_deb(*args: str) -> str:
    return subprocess.run(
        ["dpkg-deb", *args], capture_output=True, text=True, check=True, timeout=60
    ).stdout


def _contents(deb: Path) -> dict[str, str]:
    """path -> mode string, from ``dpkg-deb --contents``."""
    out: dict[str, str] = {}
    for line in _dpkg_deb("--contents", str(deb)).splitlines():
        fields = line.split()
        out[fields[-1].removeprefix(".")] = fields[0]
    return out


def test_name_and_control_fields(deb: Path) -> None:
    assert deb.name == f"fleetwave-agent_{_version()}_all.deb"
    fields = dict(
        line.split(": ", 1) for line in _dpkg_deb("--field", str(deb)).splitlines() if ": " in line
    )
    assert fields["Package"] == "fleetwave-agent"
    assert fields["Version"] == _version()
    assert fields["Architecture"] == "all"
    depends = [d.strip() for d in fields["Depends"].split(",")]
    for dep in (
        "python3 (>= 3.11)",
        "python3-cryptography",
        "python3-yaml",
        "python3-psutil",
        "python3-prometheus-client",
    ):
        assert dep in depends
    assert int(fields["Installed-Size"]) > 0
    info = _dpkg_deb("--info", str(deb))
    for script in ("postinst", "prerm", "postrm", "conffiles"):
        assert re.search(rf"\s{script}\s", info), f"{script} missing from the control archive"


def test_file_list_and_modes(deb: Path) -> None:
    contents = _contents(deb)
    for package in AGENT_PACKAGES:
        for p in sorted((REPO / "agent" / package).glob("*.py")):
            assert contents.get(f"/{SITE}/{package}/{p.name}") == "-rw-r--r--", p
    assert contents["/usr/bin/fleetwave-agent"] == "-rwxr-xr-x"
    assert contents["/lib/systemd/system/fleetwave-agent.service"] == "-rw-r--r--"
    assert contents["/etc/fleetwave/agent.yaml"] == "-rw-r--r--"
    assert "/usr/share/doc/fleetwave-agent/copyright" in contents
    assert not [p for p in contents if "__pycache__" in p or p.endswith(".pyc")]
    # Only the agent: no controller package, nothing outside the known roots.
    assert not [p for p in contents if "/fleetwave/" in p and not p.startswith("/etc/")]
    assert {p.split("/")[1] for p in contents if p.count("/") > 1} == {"etc", "lib", "usr"}


def test_agent_never_imports_controller_side_modules() -> None:
    pattern = re.compile(
        r"^\s*(from|import)\s+(fleetwave|asyncssh|fabric|holidays|rich|argcomplete)\b", re.M
    )
    offenders = [
        p.name
        for package in AGENT_PACKAGES
        for p in (REPO / "agent" / package).glob("*.py")
        if pattern.search(p.read_text(encoding="utf-8"))
    ]
    assert offenders == []


def test_two_builds_are_byte_identical(deb: Path, tmp_path: Path) -> None:
    again = build_deb(tmp_path)
    assert again.read_bytes() == deb.read_bytes()


def test_unknown_argument_is_one_clear_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        ["bash", str(REPO / "packaging" / "build-deb"), "--bogus"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "build-deb: unknown argument '--bogus' (usage: build-deb [--out DIR])"
    ]


def test_unit_runs_the_packaged_launcher(deb: Path, tmp_path: Path) -> None:
    subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp_path)], check=True, timeout=60)
    unit = (tmp_path / "lib/systemd/system/fleetwave-agent.service").read_text()
    assert "ExecStart=/usr/bin/fleetwave-agent --config /etc/fleetwave/agent.yaml serve" in unit
    assert "/opt/fleetwave-agent" not in unit
    # Same hardening as the source unit: only paths were rewritten.
    source = (REPO / "packaging" / "fleetwave-agent.service").read_text()
    hardening = [line for line in source.splitlines() if line.startswith(("Protect", "Restrict"))]
    assert hardening
    assert all(line in unit.splitlines() for line in hardening)
    launcher = (tmp_path / "usr/bin/fleetwave-agent").read_text()
    assert launcher.startswith("#!/usr/bin/python3\n")
    assert "from fleetwave_agent.cli import main" in launcher


# ------------------------------------------- the packaged agent on Debian's python3


def _system_python_has_debian_libs() -> str | None:
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return f"{SYSTEM_PYTHON} not found"
    probe = subprocess.run(
        [SYSTEM_PYTHON, "-I", "-c", f"import {', '.join(DEBIAN_LIBS)}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if probe.returncode != 0:
        return (
            "Debian's python3-cryptography python3-yaml python3-psutil "
            "python3-prometheus-client are not installed (scripts/bootstrap.sh installs them)"
        )
    return None


@pytest.fixture(scope="module")
def extracted(deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    missing = _system_python_has_debian_libs()
    if missing:
        pytest.skip(missing)
    root = tmp_path_factory.mktemp("extracted")
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True, timeout=60)
    return root


def _agent(extracted: Path, *args: str) -> list[str]:
    return [SYSTEM_PYTHON, str(extracted / "usr/bin/fleetwave-agent"), *args]


def _env(extracted: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PYTHONPATH"] = str(extracted / SITE)
    env["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin"
    env.pop("FLEETWAVE_AGENT_CONFIG", None)
    return env


def _run(extracted: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _agent(extracted, *args),
        capture_output=True,
        text=True,
        env=_env(extracted),
        timeout=120,
        check=False,
    )


def test_runs_from_the_package_with_debian_libraries(extracted: Path) -> None:
    code = (
        "import fleetwave_agent, cryptography, yaml, psutil, prometheus_client, sys; "
        "print(fleetwave_agent.__file__); print(sys.prefix)"
    )
    proc = subprocess.run(
        [SYSTEM_PYTHON, "-c", code],
        capture_output=True,
        text=True,
        env=_env(extracted),
        timeout=60,
        check=True,
    )
    module_file, prefix = proc.stdout.splitlines()
    assert module_file.startswith(str(extracted / SITE))
    assert prefix == "/usr"  # the system interpreter, not a venv


def test_shipped_config_is_accepted(extracted: Path, tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()  # status reads a root; it never creates one
    proc = _run(
        extracted,
        "--config",
        str(extracted / "etc/fleetwave/agent.yaml"),
        "--root",
        str(tmp_path / "root"),
        "status",
        "--no-health",
    )
    assert proc.returncode == 0, proc.stderr
    assert "current" in proc.stdout


def test_install_rollback_and_status_with_debian_libraries(extracted: Path, tmp_path: Path) -> None:
    private, public = generate_keypair(tmp_path / "keys", "deb-test")
    packages = []
    for version in ("1.0.0", "1.1.0"):
        src = tmp_path / "src" / version
        src.mkdir(parents=True)
        (src / "VERSION").write_text(version)
        packages.append(
            build_package(
                src, name="app", version=version, private_key=private, out_dir=tmp_path / "pkgs"
            )
        )
    common = ["--root", str(tmp_path / "root"), "--trust", str(public)]
    for package in packages:
        proc = _run(extracted, *common, "install", str(package))
        assert proc.returncode == 0, proc.stderr
    status = _run(extracted, *common, "status", "--no-health")
    assert status.returncode == 0, status.stderr
    assert "1.1.0" in status.stdout.split("current", 1)[1].splitlines()[0]
    proc = _run(extracted, *common, "rollback")
    assert proc.returncode == 0, proc.stderr
    status = _run(extracted, *common, "status", "--no-health")
    assert "1.0.0" in status.stdout.split("current", 1)[1].splitlines()[0]


def test_untrusted_package_is_refused(extracted: Path, tmp_path: Path) -> None:
    private, _ = generate_keypair(tmp_path / "signer", "signer")
    _, other = generate_keypair(tmp_path / "other", "other")
    src = tmp_path / "src"
    src.mkdir()
    (src / "VERSION").write_text("1")
    package = build_package(
        src, name="app", version="1.0.0", private_key=private, out_dir=tmp_path / "pkgs"
    )
    proc = _run(
        extracted, "--root", str(tmp_path / "root"), "--trust", str(other), "install", str(package)
    )
    assert proc.returncode != 0
    assert "key" in proc.stderr.lower()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_answers_one_scrape(extracted: Path, tmp_path: Path) -> None:
    port = _free_port()
    proc = subprocess.Popen(
        _agent(
            extracted,
            "--root",
            str(tmp_path / "root"),
            "serve",
            "--listen",
            "127.0.0.1",
            "--port",
            str(port),
        ),
        env=_env(extracted),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        body = ""
        for _ in range(200):  # bounded: up to ~20 s for the listener on a slow machine
            if proc.poll() is not None:
                break
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                    body = r.read().decode()
                break
            except OSError:
                time.sleep(0.1)
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert "fleetwave_agent" in body
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if proc.stderr:
            proc.stderr.close()


def test_bootstrap_reads_the_built_package(deb: Path) -> None:
    from fleetwave.bootstrap.deb import read_deb_info

    info = read_deb_info(deb)
    assert (info.package, info.version) == ("fleetwave-agent", _version())
    assert "python3-prometheus-client" in info.dependency_names()


def test_resident_dropin_ships_only_as_an_example(deb: Path, tmp_path: Path) -> None:
    example = "/usr/share/doc/fleetwave-agent/examples/resident.conf"
    contents = _contents(deb)
    assert contents[example] == "-rw-r--r--"
    # Opt-in: nothing under a systemd drop-in directory is active after install.
    assert not [p for p in contents if ".service.d/" in p]
    subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp_path)], check=True, timeout=60)
    text = (tmp_path / example.lstrip("/")).read_text()
    assert "ExecStart=/usr/bin/fleetwave-agent --config" in text
    assert "/opt/fleetwave-agent" not in text
