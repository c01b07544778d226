"""``fleetwave keygen`` and ``fleetwave package build|verify|inspect``."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from fleetwave_agent.keys import Keyring, generate_keypair, key_id, load_public_key
from fleetwave_agent.manifest import Manifest
from fleetwave_agent.package import build_package, read_manifest, verify_package
from fleetwave_core.durations import parse_duration
from fleetwave_core.errors import UsageError


def register(subparsers: Any) -> None:
    """Add ``keygen`` and ``package`` to the top-level parser."""
    keygen = subparsers.add_parser("keygen", help="create an Ed25519 signing key pair")
    keygen.add_argument(
        "--out", required=True, type=Path, metavar="DIR", help="write NAME.key and NAME.pub here"
    )
    keygen.add_argument("--name", default="fleetwave", help="file name stem")
    keygen.add_argument(
        "--json", action="store_true", help="print {key_id, private_key, public_key}"
    )
    keygen.set_defaults(func=cmd_keygen)

    package = subparsers.add_parser("package", help="build, verify and inspect packages")
    sub = package.add_subparsers(dest="package_command", metavar="ACTION", required=True)

    build = sub.add_parser("build", help="build and sign NAME-VERSION.fwpkg from a directory")
    build.add_argument(
        "src_dir",
        type=Path,
        metavar="SRC_DIR",
        help="the release's files, with fleetwave-package.yaml at the top",
    )
    build.add_argument("--name", required=True, help="package name (the service)")
    build.add_argument(
        "--version", required=True, help="release version; a name-version is built once"
    )
    build.add_argument(
        "--key", required=True, type=Path, metavar="PRIVATE_KEY", help="signing key (keygen)"
    )
    build.add_argument(
        "--out", required=True, type=Path, metavar="OUT_DIR", help="directory for the .fwpkg"
    )
    build.add_argument(
        "--expires-in",
        metavar="DURATION",
        help="agents refuse the package after this long from now (e.g. 7d, 12h); "
        "the expiry is signed, so such builds differ from run to run",
    )
    build.add_argument(
        "--json", action="store_true", help="print {package, package_id, name, version, expires}"
    )
    build.set_defaults(func=cmd_build)

    verify = sub.add_parser(
        "verify",
        help="run every check an agent's install runs, writing nothing; exit 0 only if "
        "an agent trusting these keys would install the package",
    )
    verify.add_argument("file", type=Path, metavar="FILE", help="the .fwpkg package")
    # extend, not store: `--trust old.pub --trust new.pub` trusts both (key rotation).
    verify.add_argument(
        "--trust",
        required=True,
        action="extend",
        nargs="+",
        type=Path,
        metavar="PUBLIC_KEY",
        help="a trusted public key; repeat it (or list several) to trust more than one",
    )
    verify.add_argument(
        "--revoke",
        action="append",
        default=[],
        metavar="KEY_ID",
        help="refuse packages signed by this key id (repeatable)",
    )
    verify.add_argument(
        "--json",
        action="store_true",
        help="print {ok, name, version, package_id, key_id}; errors still exit non-zero",
    )
    verify.set_defaults(func=cmd_verify)

    inspect = sub.add_parser("inspect", help="show a package's manifest (not verified)")
    inspect.add_argument("file", type=Path, metavar="FILE", help="the .fwpkg package")
    inspect.add_argument("--json", action="store_true", help="print the manifest as JSON")
    inspect.set_defaults(func=cmd_inspect)


def cmd_keygen(args: argparse.Namespace) -> int:
    """Write NAME.key and NAME.pub; print the key id and both paths."""
    private, public = generate_keypair(args.out, args.name)
    kid = key_id(load_public_key(public))
    if args.json:
        print(json.dumps({"key_id": kid, "private_key": str(private), "public_key": str(public)}))
        return 0
    print(f"key id:      {kid}")
    print(f"private key: {private}")
    print(f"public key:  {public}")
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    """Build a package; print its path and package id."""
    expires = None
    if args.expires_in:
        try:
            seconds = max(1, round(parse_duration(args.expires_in)))
        except ValueError as exc:
            raise UsageError(f"--expires-in: {exc}") from None
        expires = int(time.time()) + seconds
    path = build_package(
        args.src_dir,
        name=args.name,
        version=args.version,
        private_key=args.key,
        out_dir=args.out,
        expires=expires,
    )
    manifest = read_manifest(path)
    if args.json:
        doc = {
            "package": str(path),
            "package_id": manifest.package_id,
            "name": manifest.name,
            "version": manifest.version,
            "expires": _iso(manifest.expires) if manifest.expires else None,
        }
        print(json.dumps(doc))
        return 0
    print(f"package:    {path}")
    print(f"package id: {manifest.package_id}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """The agent's complete install check (``verify_package``); a refusal exits non-zero.

    Refusals are the agent's own errors and exit codes: PACKAGE_REFUSED (3) for an
    unsafe, malformed, expired or oversized package, INTEGRITY (4) for a signature or
    digest that does not match.
    """
    keyring = Keyring.from_paths(args.trust, revoked=args.revoke)
    manifest = verify_package(args.file, keyring, now=time.time())
    if args.json:
        doc = {
            "ok": True,
            "name": manifest.name,
            "version": manifest.version,
            "package_id": manifest.package_id,
            "key_id": manifest.key_id,
        }
        print(json.dumps(doc))
        return 0
    print(
        f"ok: {manifest.name} {manifest.version} package id {manifest.package_id} "
        f"signed by {manifest.key_id}"
    )
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    """Print the manifest without verifying it."""
    manifest = read_manifest(args.file)
    if args.json:
        doc = {"package_id": manifest.package_id, "manifest": manifest.to_dict()}
        print(json.dumps(doc, indent=2, sort_keys=True))
        return 0
    print(_render(manifest))
    return 0


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _render(m: Manifest) -> str:
    created = _iso(m.created)
    expires = _iso(m.expires) if m.expires else "never"
    lines = [
        f"name:        {m.name}",
        f"version:     {m.version}",
        f"package id:  {m.package_id}",
        f"created:     {created}",
        f"expires:     {expires}",
        f"signed by:   {m.key_id} (not verified; use 'fleetwave package verify')",
        f"payload:     {m.payload_size} bytes, sha256 {m.payload_sha256}",
        f"files:       {len(m.files)}, {sum(f.size for f in m.files)} bytes expanded",
    ]
    for f in m.files:
        lines.append(f"  {f.mode:04o} {f.size:>12} {f.sha256[:12]}  {f.path}")
    for hook_name, hook in sorted(m.hooks.items()):
        lines.append(f"hook {hook_name}: {' '.join(hook.argv)} (timeout {hook.timeout_ms} ms)")
    for check in m.health_checks:
        target = {"http": check.url, "tcp": f"{check.host}:{check.port}"}.get(
            check.kind, " ".join(check.argv)
        )
        lines.append(
            f"health {check.name}: {check.kind} {target} "
            f"(every {check.interval_ms} ms, deadline {check.deadline_ms} ms)"
        )
    return "\n".join(lines)
