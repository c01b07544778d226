"""What an agent RPC session imports: start-up cost is paid once per host per deploy.

Each case runs the real ``fleetwave-agent ... rpc`` in a fresh interpreter, feeds it
requests, and lists the modules it had imported by exit. Heavy modules must be
imported only by the operations that need them (see docs/agent.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fleetwave_agent.package import read_manifest
from tests.agent.conftest import PackageBuilder, agent_env

pytestmark = pytest.mark.integration

#: Runs the CLI's main() in-process, then prints the imported module names on fd 2.
PROBE = """
import sys
from fleetwave_agent import cli
status = cli.main(sys.argv[1:])
sys.stdout.flush()
print("MODULES " + " ".join(sorted(sys.modules)), file=sys.stderr)
sys.exit(status)
"""

NEVER_ON_RPC_START = {
    "yaml",  # only when a config file is parsed (and not when its cache is fresh)
    "cryptography",  # only when a signature is verified
    "urllib.request",  # only in HTTP health probes
    "http.client",
    "ssl",
    "email",
    "prometheus_client",  # only `serve` / `metrics`
    "psutil",
    "tarfile",  # only when a package is extracted or built
    "subprocess",  # only for hooks and command health checks
    "logging",
    "uuid",
    "ctypes",
    # The start-up work of issue 11 (docs/agent.md, Start-up cost):
    "argparse",  # `rpc` is parsed by cli.rpc_fast_path
    "gettext",  # (argparse's)
    "locale",
    "shutil",  # (argparse's help formatter)
    "typing",  # annotations only, behind TYPE_CHECKING = False
    "datetime",  # lease expiry is formatted with time.gmtime
    "signal",  # only for the test crash points
    "ast",  # inspect's, deferred by cli.defer_inspect (dataclasses would import it)
    "dis",
    "tokenize",
}


def run_session(
    args: list[str],
    requests: list[tuple[str, dict[str, object]]],
    body: bytes = b"",
    env: dict[str, str] | None = None,
) -> tuple[list[dict[str, object]], set[str]]:
    wire = b""
    for n, (op, op_args) in enumerate(requests, 1):
        wire += json.dumps({"id": n, "op": op, "args": op_args}).encode() + b"\n"
        if op == "upload":
            wire += body
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *args, "rpc"],
        input=wire,
        capture_output=True,
        env={**agent_env(), **(env or {})},
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    lines = proc.stdout.splitlines()
    assert json.loads(lines[0])["hello"]["protocol"] == 1
    responses = [json.loads(line) for line in lines[1:]]
    modules_line = next(
        line for line in proc.stderr.decode().splitlines() if line.startswith("MODULES ")
    )
    return responses, set(modules_line.split()[1:])


def loaded(modules: set[str], top: set[str]) -> set[str]:
    return {m for m in modules if m in top or m.split(".")[0] in top}


def test_hello_only_imports_nothing_heavy(tmp_path: Path, keypair: tuple[Path, Path]) -> None:
    _, modules = run_session(["--root", str(tmp_path / "root"), "--trust", str(keypair[1])], [])
    assert loaded(modules, NEVER_ON_RPC_START) == set()


def test_hello_and_status_import_nothing_heavy(tmp_path: Path, keypair: tuple[Path, Path]) -> None:
    responses, modules = run_session(
        ["--root", str(tmp_path / "root"), "--trust", str(keypair[1])], [("status", {})]
    )
    assert responses[0]["ok"], responses
    assert loaded(modules, NEVER_ON_RPC_START) == set()


def test_inspect_is_a_stand_in_that_loads_on_first_use() -> None:
    probe = (
        "import sys; from fleetwave_agent import cli; cli.defer_inspect();"
        "import dataclasses, inspect; assert 'ast' not in sys.modules;"
        "print(inspect.signature(len)); assert 'ast' in sys.modules;"
        "print(sys.modules['inspect'] is not inspect)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env=agent_env(),
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == ["(obj, /)", "True"]


@pytest.mark.parametrize(
    "argv",
    [
        ["rpc"],
        ["--root", "/r", "rpc"],
        ["--root=/r", "--trust", "/a", "--trust=/b", "--config", "/c.yaml", "--debug", "rpc"],
    ],
)
def test_rpc_fast_path_parses_as_argparse_does(argv: list[str]) -> None:
    from fleetwave_agent import cli

    fast = cli.rpc_fast_path(argv)
    assert fast is not None
    full = cli.build_parser().parse_args(argv)
    for key in ("config", "root", "trust", "debug", "command", "func"):
        assert getattr(fast, key) == getattr(full, key), key


@pytest.mark.parametrize(
    "argv",
    [["--help", "rpc"], ["--roo", "/r", "rpc"], ["--root", "rpc"], ["status"], ["rpc", "x"]],
)
def test_anything_else_goes_to_argparse(argv: list[str]) -> None:
    from fleetwave_agent import cli

    assert cli.rpc_fast_path(argv) is None


def test_config_file_is_parsed_once_then_served_from_cache(
    tmp_path: Path, keypair: tuple[Path, Path]
) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text(f"root: {tmp_path / 'root'}\ntrusted_keys: [{keypair[1]}]\n")
    cache = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    _, first = run_session(["--config", str(config)], [("status", {})], env=cache)
    assert "yaml" in first
    responses, second = run_session(["--config", str(config)], [("status", {})], env=cache)
    assert "yaml" not in second
    assert responses[0]["result"]["root"] == str(tmp_path / "root")  # type: ignore[index]
    # An edited file is parsed again, and its new values are used.
    config.write_text(f"root: {tmp_path / 'other'}\ntrusted_keys: [{keypair[1]}]\n")
    responses, third = run_session(["--config", str(config)], [("status", {})], env=cache)
    assert "yaml" in third
    assert responses[0]["result"]["root"] == str(tmp_path / "other")  # type: ignore[index]


def test_rollback_session_needs_no_crypto_yaml_or_http(
    tmp_path: Path, keypair: tuple[Path, Path], make_package: PackageBuilder
) -> None:
    args = ["--root", str(tmp_path / "root"), "--trust", str(keypair[1])]
    checks = [{"name": "up", "kind": "command", "argv": ["true"], "deadline": "5s"}]
    for version in ("1.0", "2.0"):
        package = make_package(version, hooks={"start": "true", "stop": "true"}, checks=checks)
        data = package.read_bytes()
        package_id = read_manifest(package).package_id
        responses, install_modules = run_session(
            args,
            [
                ("has_package", {"package_id": package_id}),
                ("upload", {"package_id": package_id, "size": len(data)}),
                ("install", {"package_id": package_id}),
            ],
            data,
        )
        assert [r["ok"] for r in responses] == [True, True, True], responses
        assert loaded(install_modules, {"cryptography"})  # it did verify the signature
    responses, modules = run_session(args, [("rollback", {})])
    assert responses[0]["ok"], responses
    assert responses[0]["result"]["version"] == "1.0"  # type: ignore[index]
    heavy = {"cryptography", "yaml", "urllib.request", "http", "ssl", "tarfile"}
    assert loaded(modules, heavy) == set()


def test_corrupted_upload_is_refused_and_not_stored(
    tmp_path: Path, keypair: tuple[Path, Path], make_package: PackageBuilder
) -> None:
    package = make_package("1.0")
    data = bytearray(package.read_bytes())
    data[-30] ^= 0x01  # damaged in transit: header and size intact
    package_id = read_manifest(package).package_id
    args = ["--root", str(tmp_path / "root"), "--trust", str(keypair[1])]
    responses, _ = run_session(
        args,
        [
            ("upload", {"package_id": package_id, "size": len(data)}),
            ("has_package", {"package_id": package_id}),
        ],
        bytes(data),
    )
    assert responses[0]["ok"] is False
    assert responses[0]["error"]["type"] == "ChecksumError"  # type: ignore[index]
    assert responses[1]["result"] == {"present": False}
    assert os.listdir(tmp_path / "root" / "incoming") == []
