"""``fleetwave agent install``: put the agent on hosts over SSH (see :mod:`bootstrap`)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

from fleetwave.bootstrap import (
    DEFAULT_VENV,
    AdminAccess,
    BootstrapOptions,
    HostStatus,
    install_agent,
)
from fleetwave.errors import ConfigError, UsageError
from fleetwave_core.exitcodes import ExitCode

_REPO = Path(__file__).resolve().parents[2]


def register(subparsers: Any) -> None:
    """Add ``agent install`` to the ``fleetwave`` parser."""
    agent = subparsers.add_parser("agent", help="manage the agent on hosts")
    sub = agent.add_subparsers(dest="agent_command", metavar="COMMAND", required=True)
    p = sub.add_parser("install", help="install or update the agent on hosts (idempotent)")
    p.add_argument(
        "-f",
        "--file",
        "--pipeline",
        dest="file",
        type=Path,
        required=True,
        help="pipeline file (--pipeline is the old name)",
    )
    p.add_argument("--hosts", nargs="+", metavar="NAME", help="only these hosts (default: all)")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--wheel", type=Path, help="fleetwave wheel (default: build one with pip)")
    source.add_argument(
        "--deb",
        type=Path,
        metavar="PATH",
        help="install the agent from this fleetwave-agent_*.deb (packaging/build-deb) "
        "instead of a wheel in a venv",
    )
    p.add_argument("--python", help="the host's Python for the venv (default: python3)")
    p.add_argument(
        "--trust",
        type=Path,
        action="append",
        default=[],
        required=True,
        help="package-signing public key the agent trusts (repeatable)",
    )
    p.add_argument(
        "--deploy-key", type=Path, help="deploy public key (default: deploy.ssh.identity + .pub)"
    )
    p.add_argument("--admin-user", default="root", help="login for installing (sudo if not root)")
    p.add_argument("--admin-identity", type=Path, help="private key of the admin login")
    p.add_argument("--venv", help="the agent's venv on hosts (default: /opt/fleetwave-agent/venv)")
    p.add_argument(
        "--agent-config", default="/etc/fleetwave/agent.yaml", help="agent.yaml on hosts"
    )
    p.add_argument("--agent-root", default="/var/lib/fleetwave", help="agent root on hosts")
    p.add_argument(
        "--unit", type=Path, help="systemd unit (default: packaging/fleetwave-agent.service)"
    )
    p.add_argument(
        "--pip-arg",
        action="append",
        default=[],
        help="extra pip argument, e.g. --pip-arg=--no-index (repeatable)",
    )
    p.add_argument(
        "--system-site-packages",
        action="store_true",
        help="let the agent's venv see the host's system packages",
    )
    p.add_argument(
        "--resident",
        action="store_true",
        help="resident mode: the agent service also serves RPC on a unix socket and the "
        "deploy key is pinned to a socat relay (docs/agent.md)",
    )
    p.add_argument(
        "--rpc-socket",
        metavar="PATH",
        help="the resident agent's socket on hosts (default: AGENT_ROOT/rpc.sock; "
        "only with --resident)",
    )
    p.add_argument("--workers", type=int, default=10, help="hosts installed at once")
    p.add_argument(
        "--json", action="store_true", help="print {hosts: [{host, status, changes, message}]}"
    )
    p.set_defaults(func=cmd_install)


def trusted_key_files(paths: list[Path], scratch: Path) -> tuple[Path, ...]:
    """Every ``--trust`` key, each under a file name of its own on the hosts.

    Hosts get each key as ``keys/<file name>``; two keys with one name (``old/release.pub``
    and ``new/release.pub`` during a rotation) would overwrite each other there, so such
    keys are copied to ``scratch`` as ``<stem>-<key id>.pub``. Each file must hold a
    public key (checked before any host is touched); the same key given twice counts once.
    """
    from fleetwave_agent.keys import key_id, load_public_key

    ids = {path: key_id(load_public_key(path)) for path in paths}
    unique: dict[str, Path] = {}
    for path in paths:
        unique.setdefault(ids[path], path)
    names = [p.name for p in unique.values()]
    out: list[Path] = []
    for kid, path in unique.items():
        if names.count(path.name) == 1:
            out.append(path)
            continue
        scratch.mkdir(parents=True, exist_ok=True)
        copy = scratch / f"{path.stem}-{kid}{path.suffix or '.pub'}"
        copy.write_bytes(path.read_bytes())
        out.append(copy)
    return tuple(out)


def cmd_install(args: argparse.Namespace) -> int:
    """Install on every selected host; print one line per host; 1 if any failed."""
    from fleetwave.config.pipeline import load_pipeline

    if args.deb is not None:
        wheel_only = {
            "--python": args.python is not None,
            "--venv": args.venv is not None,
            "--unit": args.unit is not None,
            "--pip-arg": bool(args.pip_arg),
            "--system-site-packages": args.system_site_packages,
        }
        given = [flag for flag, present in wheel_only.items() if present]
        if given:
            raise UsageError(
                f"{', '.join(given)} only apply to a wheel install, not with --deb "
                "(the package installs to /usr and ships its own unit)"
            )
    if args.rpc_socket is not None and not args.resident:
        raise UsageError("--rpc-socket only applies with --resident")
    pipeline = load_pipeline(args.file)
    ssh = pipeline.deploy.ssh
    hosts = list(pipeline.topology.hosts())
    for env in pipeline.topology.environments:
        hosts.extend(env.hosts)
    if args.hosts:
        wanted = set(args.hosts)
        unknown = wanted - {h.name for h in hosts}
        if unknown:
            raise UsageError(f"not in the topology: {', '.join(sorted(unknown))}")
        hosts = [h for h in hosts if h.name in wanted]
    deploy_key = args.deploy_key or (
        Path(f"{ssh.identity}.pub") if ssh.identity is not None else None
    )
    if deploy_key is None:
        raise UsageError("give --deploy-key (deploy.ssh.identity is not set in the pipeline)")
    try:
        deploy_public = deploy_key.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"cannot read deploy key {deploy_key}: {exc.strerror}") from None
    unit = args.unit or _REPO / "packaging" / "fleetwave-agent.service"
    if args.resident:
        # A bad --rpc-socket fails before a wheel is built or any host is touched.
        BootstrapOptions(
            local_wheel=None,
            local_trusted_keys=(),
            deploy_public_key="",
            agent_root=PurePosixPath(args.agent_root),
            rpc_socket=None if args.rpc_socket is None else PurePosixPath(args.rpc_socket),
        ).socket_path()
    with tempfile.TemporaryDirectory(prefix="fleetwave-wheel-") as tmp:
        trusted = trusted_key_files(args.trust, Path(tmp) / "trust")
        wheel = None if args.deb is not None else args.wheel or build_wheel(Path(tmp))
        options = BootstrapOptions(
            local_wheel=wheel,
            local_deb=args.deb,
            local_trusted_keys=trusted,
            deploy_public_key=deploy_public,
            deploy_user=ssh.user,
            python=args.python or "python3",
            venv=PurePosixPath(args.venv or DEFAULT_VENV),
            config_path=PurePosixPath(args.agent_config),
            agent_root=PurePosixPath(args.agent_root),
            local_unit=unit if args.deb is None and unit.is_file() else None,
            pip_args=tuple(args.pip_arg),
            system_site_packages=args.system_site_packages,
            resident=args.resident,
            rpc_socket=None if args.rpc_socket is None else PurePosixPath(args.rpc_socket),
            local_dropin=_REPO / "packaging" / "resident.conf" if args.resident else None,
        )
        access = AdminAccess(
            user=args.admin_user,
            identity=args.admin_identity,
            known_hosts=ssh.known_hosts,
            connect_timeout_s=ssh.connect_timeout_s,
        )
        results = install_agent(hosts, options, access, workers=args.workers)
    failed = sum(r.status is HostStatus.FAILED for r in results)
    changed = sum(r.status is HostStatus.CHANGED for r in results)
    if args.json:
        hosts_doc = [
            {
                "host": r.host,
                "status": r.status.value,
                "changes": list(r.changes),
                "message": r.message,
            }
            for r in results
        ]
        doc: dict[str, Any] = {"hosts": hosts_doc, "failed": failed, "changed": changed}
        if args.resident:
            doc["agent_command"] = options.relay_command()
        print(json.dumps(doc, indent=2))
        return ExitCode.ERROR if failed else ExitCode.OK
    for result in results:
        print(result.line())
    print(
        f"{len(results)} hosts: {changed} changed, {len(results) - changed - failed} "
        f"unchanged, {failed} failed"
    )
    if args.resident:
        # The controller must relay the same way the pinned key does.
        print("resident mode: set this in the pipeline's deploy.ssh block:")
        print(f'  agent_command: "{options.relay_command()}"')
    return ExitCode.ERROR if failed else ExitCode.OK


def build_wheel(out_dir: Path) -> Path:
    """``pip wheel . -w OUT --no-deps`` from the source tree this module lives in."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(_REPO),
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
        raise UsageError(f"could not build the fleetwave wheel (give --wheel): {tail}")
    return wheels[-1]
