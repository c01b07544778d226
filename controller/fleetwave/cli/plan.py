"""``fleetwave plan`` (text in ``plan_view``), ``validate``, ``schema``, ``topology``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from fleetwave.cli.plan_view import PlanView, known_regions, plan_json, render_view
from fleetwave.config.inventory import ImportOptions, import_inventory
from fleetwave.config.pipeline import Pipeline, load_pipeline, pipeline_files
from fleetwave.config.schema import json_schema
from fleetwave.config.schemas import agent_json_schema, package_json_schema, topology_json_schema
from fleetwave.config.spec import PIPELINE_SPEC
from fleetwave.config.topology import load_topology, topology_to_data
from fleetwave.config.validation import DEFAULT_MAX_ERRORS, Problem, validate_pipeline
from fleetwave.errors import UsageError
from fleetwave.observe.prometheus_sd import DEFAULT_EXPORTER_PORT, write_prometheus_sd
from fleetwave.planning.model import Plan
from fleetwave.planning.planner import plan_pipeline, schedule, timeline_of
from fleetwave.planning.saved import PackageRef, PlanInputs, SavedPlan, inputs_of, write_saved
from fleetwave_core.exitcodes import ExitCode
from fleetwave_core.fsutil import atomic_write

SCHEMA_ID = "https://fleetwave.dev/schema/pipeline.json"


def register(sub: Any) -> None:
    """Add the planning commands to the ``fleetwave`` parser."""
    p = sub.add_parser("plan", help="show what a deployment of a pipeline will do")
    p.add_argument("-f", "--file", required=True, type=Path, help="pipeline file")
    p.add_argument(
        "--at",
        metavar="TIME",
        help="start time, ISO 8601 (default: now; UTC unless an offset is given)",
    )
    p.add_argument(
        "--region",
        dest="regions",
        action="append",
        default=[],
        metavar="NAME",
        help="show only this region or pre-production environment (repeatable)",
    )
    p.add_argument(
        "--tz",
        metavar="ZONE",
        help="IANA time zone of the summary's local time (default: this machine's)",
    )
    p.add_argument(
        "--package",
        type=Path,
        metavar="PKG",
        help="the .fwpkg package the plan is for (required with --out)",
    )
    p.add_argument(
        "--out",
        type=Path,
        metavar="FILE",
        help="save the plan, with digests of the pipeline files, the topology and the "
        "package, for `deploy --plan FILE` (replaced atomically)",
    )
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.set_defaults(func=cmd_plan)

    v = sub.add_parser(
        "validate",
        help="check a pipeline, its topology and the files they name, without planning",
    )
    v.add_argument("-f", "--file", required=True, type=Path, help="pipeline file")
    v.add_argument(
        "--json", action="store_true", help="print {ok, errors: [{file, line, key_path, message}]}"
    )
    v.add_argument(
        "--max-errors",
        type=int,
        default=DEFAULT_MAX_ERRORS,
        metavar="N",
        help="stop after this many errors",
    )
    v.add_argument(
        "--no-check-files",
        dest="check_files",
        action="store_false",
        help="do not require the SSH identity, known_hosts and CA key files to exist "
        "(e.g. on a machine that does not deploy)",
    )
    v.set_defaults(func=cmd_validate)

    s = sub.add_parser("schema", help="print the JSON Schema of a config file")
    s.add_argument(
        "--kind",
        choices=tuple(SCHEMAS),
        default="pipeline",
        help="which file: a pipeline, a topology, fleetwave-package.yaml or agent.yaml",
    )
    s.set_defaults(func=cmd_schema)

    t = sub.add_parser("topology", help="topology tools")
    tsub = t.add_subparsers(dest="topology_command", metavar="COMMAND", required=True)
    imp = tsub.add_parser("import", help="convert an Ansible inventory to a topology file")
    imp.add_argument(
        "inventory",
        type=Path,
        help="Ansible inventory: INI, YAML or `ansible-inventory --list` JSON "
        "(group_vars/ and host_vars/ next to it are read)",
    )
    imp.add_argument("--out", type=Path, metavar="FILE", help="write here instead of stdout")
    imp.add_argument("--force", action="store_true", help="overwrite an existing --out file")
    imp.add_argument(
        "--json",
        action="store_true",
        help="print the topology as JSON (with --out: print {out, regions, hosts})",
    )
    defaults = ImportOptions()
    for name, help_text in (
        ("region_var", "host/group var naming the region"),
        ("az_var", "var naming the AZ"),
        ("cell_var", "var naming the cell (optional per host)"),
        ("lb_var", "var with balancer:backend[/server]"),
        ("traffic_var", "var with the region's traffic class"),
        ("timezone_var", "var with the region's time zone"),
        ("default_traffic", "traffic class when the var is absent"),
        ("default_timezone", "time zone when the var is absent"),
    ):
        flag = "--" + name.replace("_", "-")
        imp.add_argument(flag, dest=name, default=getattr(defaults, name), help=help_text)
    imp.add_argument(
        "--label-var",
        dest="label_vars",
        action="append",
        default=[],
        metavar="VAR",
        help="copy this var into each host's labels (repeatable)",
    )
    imp.set_defaults(func=cmd_topology_import)

    exp = tsub.add_parser("export", help="write a topology in another tool's format")
    exp.add_argument("-f", "--file", required=True, type=Path, help="topology file")
    exp.add_argument(
        "--prometheus-sd",
        required=True,
        type=Path,
        metavar="FILE",
        help="write Prometheus file_sd targets (host, region, az, cell labels) here; "
        "replaced atomically",
    )
    exp.add_argument(
        "--port",
        type=int,
        default=DEFAULT_EXPORTER_PORT,
        help="the agents' exporter port",
    )
    exp.add_argument("--json", action="store_true", help="print {out, targets, port}")
    exp.set_defaults(func=cmd_topology_export)


def _start(text: str | None) -> datetime:
    if text is None:
        return datetime.now(UTC)
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"--at {text!r}: expected an ISO 8601 time like 2025-03-07T15:00"
        ) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _zone(name: str | None) -> tzinfo:
    if name is None:
        return datetime.now().astimezone().tzinfo or UTC
    try:
        return ZoneInfo(name)
    except (ValueError, ZoneInfoNotFoundError):
        raise UsageError(f"--tz {name!r}: not an IANA time zone (e.g. Europe/Paris)") from None


def package_ref(package: Path) -> PackageRef:
    """The name, version and package id of a package file (read, not verified)."""
    from fleetwave_agent.package import read_manifest

    if not package.is_file():
        raise UsageError(f"{package}: package not found")
    manifest = read_manifest(package)
    return PackageRef(manifest.name, str(manifest.version), manifest.package_id)


def current_inputs(pipeline: Pipeline, path: Path, package: PackageRef) -> PlanInputs:
    """Digests of the pipeline chain and topology as they are now, for ``package``."""
    return inputs_of(pipeline_files(path), pipeline.topology.path, package)


def build_view(
    pipeline: Pipeline,
    plan: Plan,
    start: datetime,
    here: tzinfo = UTC,
    regions: frozenset[str] = frozenset(),
) -> PlanView:
    """The view of ``plan`` (as ``plan_pipeline`` made it) estimated from ``start``."""
    timeline = timeline_of(plan, pipeline, pipeline.topology, start)
    shown = schedule(plan, pipeline, pipeline.topology, start)
    return PlanView(shown, timeline, pipeline, here, regions)


def render_plan(
    pipeline: Pipeline, plan: Plan, start: datetime | None = None, here: tzinfo = UTC
) -> str:
    """The text of ``fleetwave plan`` for ``plan`` (default start: now)."""
    return render_view(build_view(pipeline, plan, start or datetime.now(UTC), here))


def cmd_plan(args: argparse.Namespace) -> int:
    """Print the plan (or JSON); with --out, save it for ``deploy --plan``."""
    pipeline = load_pipeline(args.file)
    if args.out is not None and args.package is None:
        raise UsageError("--out needs --package: a saved plan is made for one package")
    if args.out is not None and args.regions:
        raise UsageError("--out saves the whole plan: leave out --region")
    start = _start(args.at)
    here = _zone(args.tz)
    plan = plan_pipeline(pipeline, pipeline.topology)
    known = known_regions(plan)
    unknown = [r for r in args.regions if r not in known]
    if unknown:
        raise UsageError(f"--region {unknown[0]}: not in the plan (regions: {', '.join(known)})")
    view = build_view(pipeline, plan, start, here, frozenset(args.regions))
    package = package_ref(args.package) if args.package is not None else None
    if args.out is not None and package is not None:
        inputs = current_inputs(pipeline, args.file, package)
        saved = SavedPlan(inputs, plan, datetime.now(UTC), start)
        write_saved(args.out, saved, {"view": plan_json(view)})
    if args.json:
        doc = plan_json(view)
        if package is not None:
            doc["package"] = {
                "name": package.name,
                "version": package.version,
                "package_id": package.package_id,
            }
        if args.out is not None:
            doc["saved"] = str(args.out)
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    sys.stdout.write(render_view(view))
    if package is not None:
        print(f"package: {package.describe()}")
    if args.out is not None:
        print(f"saved to {args.out}: deploy it with `fleetwave deploy --plan {args.out}`")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    """Validate a pipeline and its topology; print ``ok: ...`` or every error (exit 2)."""
    if args.max_errors < 1:
        raise UsageError(f"--max-errors {args.max_errors}: expected at least 1")
    result = validate_pipeline(args.file, max_errors=args.max_errors, check_files=args.check_files)
    if args.json:
        doc: dict[str, Any] = {
            "ok": result.ok,
            "file": str(args.file),
            "errors": [Problem.of(e).to_dict() for e in result.errors],
            "truncated": result.truncated,
        }
        if result.pipeline is not None:
            doc["summary"] = _summary(result.pipeline)
        print(json.dumps(doc, indent=2))
    elif result.pipeline is not None and result.ok:
        s = _summary(result.pipeline)
        print(
            f"ok: {args.file}: pipeline {s['pipeline']} ({s['service']}), "
            f"{s['waves']} wave(s), {s['regions']} region(s), {s['hosts']} host(s)"
        )
    else:
        for error in result.errors:
            print(f"fleetwave: error: {error}", file=sys.stderr)
        if len(result.errors) > 1 or result.truncated:
            more = f" (stopped at --max-errors {args.max_errors})" if result.truncated else ""
            print(f"{args.file}: {len(result.errors)} error(s){more}", file=sys.stderr)
    return ExitCode.OK if result.ok else ExitCode.CONFIG


def _summary(pipeline: Pipeline) -> dict[str, Any]:
    return {
        "pipeline": pipeline.name,
        "service": pipeline.service,
        "waves": len(pipeline.waves),
        "regions": len(pipeline.topology.regions),
        "hosts": len(pipeline.topology.hosts()),
    }


def pipeline_json_schema() -> dict[str, Any]:
    """The JSON Schema of pipeline files, derived from the validator's definitions."""
    return json_schema(PIPELINE_SPEC, title="fleetwave pipeline", schema_id=SCHEMA_ID, partial=True)


#: ``schema --kind`` -> the function that builds that file's JSON Schema.
SCHEMAS: dict[str, Callable[[], dict[str, Any]]] = {
    "pipeline": pipeline_json_schema,
    "topology": topology_json_schema,
    "package": package_json_schema,
    "agent": agent_json_schema,
}


def cmd_schema(args: argparse.Namespace) -> int:
    """Print the JSON Schema of one kind of config file."""
    json.dump(SCHEMAS[args.kind](), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def cmd_topology_import(args: argparse.Namespace) -> int:
    """Convert an Ansible inventory to a topology file."""
    options = ImportOptions(
        region_var=args.region_var,
        az_var=args.az_var,
        cell_var=args.cell_var,
        lb_var=args.lb_var,
        traffic_var=args.traffic_var,
        timezone_var=args.timezone_var,
        label_vars=tuple(args.label_vars),
        default_traffic=args.default_traffic,
        default_timezone=args.default_timezone,
    )
    if args.out is not None and args.out.exists() and not args.force:
        raise UsageError(f"{args.out} exists; pass --force to overwrite it")
    topology = import_inventory(args.inventory, options)
    data = topology_to_data(topology)
    hosts = len(topology.hosts())
    if args.out is None:
        if args.json:
            print(json.dumps(data, indent=2))
            return 0
        text = yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
        sys.stdout.write(f"# Imported from {args.inventory} by `fleetwave topology import`.\n")
        sys.stdout.write(text)
        return 0
    text = yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
    header = f"# Imported from {args.inventory} by `fleetwave topology import`.\n"
    # A temp file renamed over the target: a failed write never leaves half a topology.
    atomic_write(args.out, header + text)
    if args.json:
        print(json.dumps({"out": str(args.out), "regions": len(topology.regions), "hosts": hosts}))
    else:
        print(f"wrote {args.out}: {len(topology.regions)} region(s), {hosts} host(s)")
    return 0


def cmd_topology_export(args: argparse.Namespace) -> int:
    """Write a topology's hosts as Prometheus file_sd targets."""
    if not 1 <= args.port <= 65535:
        raise UsageError(f"--port {args.port}: expected 1-65535")
    topology = load_topology(args.file)
    count = write_prometheus_sd(topology, args.prometheus_sd, args.port)
    if args.json:
        print(json.dumps({"out": str(args.prometheus_sd), "targets": count, "port": args.port}))
    else:
        print(f"wrote {args.prometheus_sd}: {count} target(s) on port {args.port}")
    return 0
