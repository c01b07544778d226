"""``fleetwave agent install``: put the agent on hosts over SSH (see :mod:`bootstrap`)."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

from fleetwave.bootstrap import (
    DEFAULT_KEYS_DIR,
    DEFAULT_VENV,
    AdminAccess,
    BootstrapOptions,
    HostStatus,
    install_agent,
)
from fleetwave.bootstrap.dist import agent_wheel, packaged_file
from fleetwave.errors import ConfigError, UsageError
from fleetwave_core.exitcodes import ExitCode


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
    source.add_argument(
        "--wheel",
        type=Path,
        help="fleetwave wheel (default: this controller's own, built or repacked)",
    )
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
    p.add_argument(
        "--keys-dir", default=str(DEFAULT_KEYS_DIR), help="where trusted keys go on hosts"
    )
    p.add_argument(
        "--authorized-keys",
        metavar="PATH",
        help="the deploy user's authorized_keys on hosts (default: ~USER/.ssh/authorized_keys)",
    )
    p.add_argument("--agent-root", default="/var/lib/fleetwave", help="agent root on hosts")
    p.add_argument(
        "--unit", type=Path, help="systemd unit (default: the one shipped with fleetwave)"
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
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--resident",
        action="store_true",
        help="resident mode (the default): the agent service also serves RPC on a unix "
        "socket and the deploy key is pinned to a relay (docs/agent.md)",
    )
    mode.add_argument(
        "--session",
        action="store_true",
        help="no resident agent: the deploy key starts `fleetwave-agent rpc` per session",
    )
    p.add_argument(
        "--rpc-socket",
        metavar="PATH",
        help="the resident agent's socket on hosts (default: AGENT_ROOT/rpc.sock)",
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
    resident = not args.session
    if args.rpc_socket is not None and not resident:
        raise UsageError("--rpc-socket does not apply with --session")
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
    unit = None if args.deb is not None else args.unit or packaged_file("fleetwave-agent.service")
    if resident:
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
        wheel = None if args.deb is not None else args.wheel or agent_wheel(Path(tmp))
        options = BootstrapOptions(
            local_wheel=wheel,
            local_deb=args.deb,
            local_trusted_keys=trusted,
            deploy_public_key=deploy_public,
            deploy_user=ssh.user,
            python=args.python or "python3",
            venv=PurePosixPath(args.venv or DEFAULT_VENV),
            config_path=PurePosixPath(args.agent_config),
            keys_dir=PurePosixPath(args.keys_dir),
            authorized_keys=(
                None if args.authorized_keys is None else PurePosixPath(args.authorized_keys)
            ),
            agent_root=PurePosixPath(args.agent_root),
            local_unit=unit,
            pip_args=tuple(args.pip_arg),
            system_site_packages=args.system_site_packages,
            resident=resident,
            rpc_socket=None if args.rpc_socket is None else PurePosixPath(args.rpc_socket),
            local_dropin=packaged_file("resident.conf") if resident else None,
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
    if resident:
        print(
            f"resident mode: the deploy key runs {options.relay_command()} (the resident "
            "agent when it serves, else the agent in the session); no pipeline change needed"
        )
    return ExitCode.ERROR if failed else ExitCode.OK
