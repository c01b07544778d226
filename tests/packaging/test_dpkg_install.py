"""The .deb installed for real on this machine: ``dpkg -i``, the packaged agent
installing a signed package as the deploy user, ``systemd-analyze verify`` on the
installed units, then ``dpkg -r`` (the conffile stays, as designed) and ``dpkg --purge``
(nothing of the package is left). Needs root; lintian checks the package too.

The machine is put back as it was even when a step fails: the package is purged, the
``fleetwave`` user the postinst created is deleted and a pre-existing empty
/etc/fleetwave is recreated. The test refuses to run where an agent is installed or
its paths hold data, rather than risk them."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetwave_agent.keys import generate_keypair
from fleetwave_agent.package import build_package
from tests.binaries import in_ci, require_binary

from .conftest import REPO

pytestmark = pytest.mark.e2e

PACKAGE = "fleetwave-agent"
USER = "fleetwave"
CONFFILE = Path("/etc/fleetwave/agent.yaml")
AGENT_ROOT = Path("/var/lib/fleetwave")
UNIT = Path("/lib/systemd/system/fleetwave-agent.service")
#: What the package's agent runs with: Debian's python3 and nothing from this venv.
CLEAN_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/root"}


def _run(*argv: str, check: bool = True, **kw: object) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=300, check=False, **kw
    )  # type: ignore[call-overload]
    if check:
        assert proc.returncode == 0, f"{' '.join(argv)}: {proc.stdout}{proc.stderr}"
    return proc  # type: ignore[no-any-return]


def _status() -> str:
    """dpkg's status of the package ('' when unknown to dpkg)."""
    proc = _run("dpkg-query", "-W", "-f=${Status}", PACKAGE, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else ""


def _user_exists() -> bool:
    return _run("getent", "passwd", USER, check=False).returncode == 0


def _require_root() -> None:
    if os.geteuid() == 0:
        return
    message = "installs a .deb with dpkg: run as root (CI does)"
    if in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="module")
def installed(deb: Path) -> Iterator[list[str]]:
    """Install the .deb; yield ``dpkg -L``; purge and restore the machine after."""
    _require_root()
    for name, apt in (("dpkg", "dpkg"), ("runuser", "util-linux"), ("userdel", "passwd")):
        require_binary(name, apt)
    if _status() not in ("", "unknown ok not-installed"):
        pytest.fail(f"{PACKAGE} is already known to dpkg ({_status()}); refusing to touch it")
    for path in (CONFFILE, AGENT_ROOT):
        if path.exists():
            pytest.fail(f"{path} exists; refusing to install over (and purge) it")
    etc_existed = CONFFILE.parent.is_dir()
    if etc_existed and any(CONFFILE.parent.iterdir()):
        pytest.fail(f"{CONFFILE.parent} is not empty; refusing to purge it")
    user_existed = _user_exists()
    try:
        _run("dpkg", "-i", str(deb), env={**CLEAN_ENV, "DEBIAN_FRONTEND": "noninteractive"})
        yield _run("dpkg", "-L", PACKAGE).stdout.splitlines()
    finally:
        if _status():
            _run("dpkg", "--purge", PACKAGE, check=False)
        if not user_existed and _user_exists():
            _run("userdel", USER, check=False)
            _run("groupdel", USER, check=False)
        if etc_existed:
            CONFFILE.parent.mkdir(exist_ok=True)


def test_installs_and_runs_from_debian_python(installed: list[str]) -> None:
    assert _status() == "install ok installed"
    assert "/usr/bin/fleetwave-agent" in installed
    assert str(CONFFILE) in installed
    proc = _run("/usr/bin/fleetwave-agent", "--version", env=CLEAN_ENV)
    assert proc.stdout.strip() == f"fleetwave-agent {_version()}"
    # postinst: the deploy user with a login shell, and its 0750 agent root.
    assert _run("getent", "passwd", USER).stdout.strip().endswith(":/var/lib/fleetwave:/bin/sh")
    st = AGENT_ROOT.stat()
    assert (oct(st.st_mode & 0o777), st.st_uid) == ("0o750", _uid(USER))
    # Byte-code compiled by postinst, so the first SSH session does not pay for it.
    assert list(Path("/usr/lib/python3/dist-packages/fleetwave_agent").glob("__pycache__/*.pyc"))


def _version() -> str:
    import tomllib

    with (REPO / "pyproject.toml").open("rb") as fh:
        return str(tomllib.load(fh)["project"]["version"])


def _uid(user: str) -> int:
    import pwd

    return pwd.getpwnam(user).pw_uid


def test_packaged_agent_installs_a_signed_package_as_the_deploy_user(
    installed: list[str],
) -> None:
    work = Path(tempfile.mkdtemp(prefix="fleetwave-dpkg-"))
    try:
        work.chmod(0o755)  # the deploy user reads the package and key from here
        private, public = generate_keypair(work / "keys", "dpkg-test")
        (work / "keys").chmod(0o755)
        public.chmod(0o644)
        src = work / "src"
        src.mkdir()
        (src / "VERSION").write_text("1.0.0\n")
        package = build_package(
            src, name="app", version="1.0.0", private_key=private, out_dir=work / "pkgs"
        )
        (work / "pkgs").chmod(0o755)
        package.chmod(0o644)
        root = work / "root"
        root.mkdir()
        shutil.chown(root, USER, USER)
        agent = ["runuser", "-u", USER, "--", "/usr/bin/fleetwave-agent"]
        common = ["--root", str(root), "--trust", str(public)]
        _run(*agent, *common, "install", str(package), env=CLEAN_ENV)
        status = _run(*agent, *common, "status", "--no-health", env=CLEAN_ENV).stdout
        assert "1.0.0" in status.split("current", 1)[1].splitlines()[0]
        current = (root / "current").resolve()
        assert current.stat().st_uid == _uid(USER)
        assert (current / "VERSION").read_text() == "1.0.0\n"
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_installed_units_pass_systemd_analyze_verify(installed: list[str], tmp_path: Path) -> None:
    analyze = require_binary("systemd-analyze", "systemd")
    proc = _run(analyze, "verify", str(UNIT), check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # The resident drop-in, as `agent install --resident` installs it next to the unit.
    unit_dir = tmp_path / "units"
    (unit_dir / "fleetwave-agent.service.d").mkdir(parents=True)
    shutil.copy(UNIT, unit_dir)
    shutil.copy(
        "/usr/share/doc/fleetwave-agent/examples/resident.conf",
        unit_dir / "fleetwave-agent.service.d" / "resident.conf",
    )
    proc = _run(analyze, "verify", str(unit_dir / "fleetwave-agent.service"), check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # The same check catches a broken drop-in: it really reads it.
    with (unit_dir / "fleetwave-agent.service.d" / "resident.conf").open("a") as fh:
        fh.write("ExecStart=/nonexistent/fleetwave-agent serve\n")
    proc = _run(analyze, "verify", str(unit_dir / "fleetwave-agent.service"), check=False)
    assert proc.returncode != 0


def test_remove_keeps_the_conffile_and_purge_leaves_nothing(installed: list[str]) -> None:
    CONFFILE.write_text(CONFFILE.read_text() + "# changed by the admin\n")
    files = [Path(p) for p in installed if Path(p).is_file() and Path(p) != CONFFILE]
    assert len(files) > 20
    _run("dpkg", "-r", PACKAGE, env=CLEAN_ENV)
    assert _status() == "deinstall ok config-files"
    left = [p for p in files if p.exists()]
    assert left == []
    assert not list(Path("/usr/lib/python3/dist-packages").glob("fleetwave_agent*"))
    # A conffile outlives `remove`, edits included; the agent root (releases, the
    # deploy key) outlives it too.
    assert CONFFILE.read_text().endswith("# changed by the admin\n")
    assert AGENT_ROOT.is_dir()
    _run("dpkg", "--purge", PACKAGE, env=CLEAN_ENV)
    assert _status() == ""
    assert not CONFFILE.exists()
    assert not AGENT_ROOT.exists()
    assert [p for p in installed if Path(p).is_file() and Path(p).exists()] == []
    # Debian keeps system users on purge; the fixture deletes the one it made.
    assert _user_exists()


def test_lintian_is_clean(deb: Path) -> None:
    lintian = require_binary("lintian", "lintian")
    # Overrides ship in the package (usr/share/lintian/overrides), each with its reason.
    proc = _run(lintian, "--fail-on", "error,warning", str(deb), check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    tags = [line for line in proc.stdout.splitlines() if line[:2] in ("E:", "W:")]
    assert tags == []
