"""Import an Ansible inventory (INI or YAML) as a fleetwave topology.

Ansible is not a dependency: the INI format is parsed here (``[group]`` host lines with
``key=value`` vars, ``[group:vars]``, ``[group:children]``, numeric host ranges such as
``web[01:03]``), the YAML format with the safe loader. Variables follow Ansible's order:
``all`` first, then groups from parent to child, then the host's own vars. ``ansible_host``,
``ansible_port`` and ``ansible_user`` become the address, SSH port and user; region, AZ,
cell, balancer and labels come from the variables the caller names.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleetwave.config.schema import Locator
from fleetwave.config.topology import Topology, topology_from_data
from fleetwave_core.errors import ConfigError
from fleetwave_core.yamlsrc import load_yaml


@dataclass
class Inventory:
    """Hosts, groups and variables, independent of the file format."""

    host_vars: dict[str, dict[str, Any]] = field(default_factory=dict)  # file order
    group_vars: dict[str, dict[str, Any]] = field(default_factory=dict)
    group_hosts: dict[str, list[str]] = field(default_factory=dict)
    children: dict[str, list[str]] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)  # host -> file:line

    def group(self, name: str) -> None:
        self.group_vars.setdefault(name, {})
        self.group_hosts.setdefault(name, [])
        self.children.setdefault(name, [])

    def add_host(self, group: str, host: str, variables: Mapping[str, Any], source: str) -> None:
        self.group(group)
        self.host_vars.setdefault(host, {}).update(variables)
        self.sources.setdefault(host, source)
        if host not in self.group_hosts[group]:
            self.group_hosts[group].append(host)

    def resolved_vars(self, host: str) -> dict[str, Any]:
        """The host's variables after Ansible's precedence: all < parents < children < host."""
        depth = self._depths()
        groups = [g for g, members in self.group_hosts.items() if host in members]
        ancestors: set[str] = set()
        stack = list(groups)
        while stack:
            g = stack.pop()
            if g in ancestors:
                continue
            ancestors.add(g)
            stack.extend(p for p, kids in self.children.items() if g in kids)
        ancestors.add("all")
        out: dict[str, Any] = {}
        for g in sorted(ancestors, key=lambda name: (depth.get(name, 0), name)):
            out.update(self.group_vars.get(g, {}))
        out.update(self.host_vars[host])
        return out

    def _depths(self) -> dict[str, int]:
        depth: dict[str, int] = {"all": 0}
        frontier = [g for g in self.group_vars if g != "all" and not self._parents(g)]
        for g in frontier:
            depth[g] = 1
        # Bounded by the number of groups: a loop in children cannot spin forever.
        for _ in range(len(self.group_vars) + 1):
            nxt: list[str] = []
            for g in frontier:
                for kid in self.children.get(g, []):
                    if depth.get(kid, 0) < depth[g] + 1:
                        depth[kid] = depth[g] + 1
                        nxt.append(kid)
            if not nxt:
                break
            frontier = nxt
        return depth

    def _parents(self, group: str) -> list[str]:
        return [p for p, kids in self.children.items() if group in kids]


_RANGE = re.compile(r"\[(\d+):(\d+)\]")


def expand_hosts(pattern: str) -> list[str]:
    """``web[01:03]`` -> ``web01 web02 web03`` (zero padding kept); other names as is."""
    match = _RANGE.search(pattern)
    if not match:
        return [pattern]
    first, last = match.group(1), match.group(2)
    if int(last) < int(first):
        raise ValueError(f"host range {pattern!r} runs backwards")
    width = len(first) if first.startswith("0") else 0
    head, tail = pattern[: match.start()], pattern[match.end() :]
    return [
        name
        for i in range(int(first), int(last) + 1)
        for name in expand_hosts(f"{head}{str(i).zfill(width)}{tail}")
    ]


def _ini_value(text: str) -> Any:
    if text.isdigit():
        return int(text)
    return text


def parse_ini(path: Path, text: str) -> Inventory:
    """Parse an INI inventory; raise ConfigError naming file:line."""
    inv = Inventory()
    inv.group("all")
    section, kind = "ungrouped", "hosts"
    inv.group(section)
    for lineno, raw in enumerate(text.splitlines(), start=1):
        where = f"{path}:{lineno}"
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            if not line.endswith("]"):
                raise ConfigError(f"unterminated section header {line!r}", source=where)
            name, _, suffix = line[1:-1].partition(":")
            if suffix not in ("", "vars", "children"):
                raise ConfigError(f"unknown section kind {suffix!r}", source=where)
            section, kind = name, suffix or "hosts"
            inv.group(section)
            continue
        try:
            words = shlex.split(line, comments=True)
        except ValueError as exc:
            raise ConfigError(f"cannot parse line: {exc}", source=where) from None
        if kind == "children":
            inv.group(words[0])
            if words[0] not in inv.children[section]:
                inv.children[section].append(words[0])
            continue
        if kind == "vars":
            key, eq, value = line.partition("=")
            if not eq or not key.strip():
                raise ConfigError(f"expected key=value in [{section}:vars]", source=where)
            inv.group_vars[section][key.strip()] = _ini_value(" ".join(shlex.split(value)))
            continue
        variables: dict[str, Any] = {}
        for word in words[1:]:
            key, eq, value = word.partition("=")
            if not eq or not key:
                raise ConfigError(
                    f"expected key=value after the host name, got {word!r}", source=where
                )
            variables[key] = _ini_value(value)
        try:
            names = expand_hosts(words[0])
        except ValueError as exc:
            raise ConfigError(str(exc), source=where) from None
        for name in names:
            inv.add_host(section, name, variables, where)
    return inv


def parse_yaml_inventory(path: Path) -> Inventory:
    """Parse a YAML inventory (``all: {hosts, vars, children}``)."""
    doc = load_yaml(path)
    inv = Inventory()
    if not isinstance(doc.data, dict):
        raise doc.error("", "an inventory must be a mapping of groups")

    def walk(name: str, body: Any, key_path: str) -> None:
        inv.group(name)
        if body is None:
            return
        if not isinstance(body, dict):
            raise doc.error(key_path, "a group must be a mapping with hosts, vars or children")
        for key in body:
            if key not in ("hosts", "vars", "children"):
                raise doc.error(f"{key_path}.{key}", f"unknown group key {key!r}")
        for host, hvars in (body.get("hosts") or {}).items():
            if hvars is not None and not isinstance(hvars, dict):
                raise doc.error(f"{key_path}.hosts.{host}", "host vars must be a mapping")
            for h in expand_hosts(str(host)):
                inv.add_host(name, h, hvars or {}, doc.where(f"{key_path}.hosts.{host}"))
        inv.group_vars[name].update(body.get("vars") or {})
        for child, child_body in (body.get("children") or {}).items():
            if child not in inv.children[name]:
                inv.children[name].append(child)
            walk(str(child), child_body, f"{key_path}.children.{child}")

    for group, body in doc.data.items():
        walk(str(group), body, str(group))
    return inv


@dataclass(frozen=True)
class ImportOptions:
    region_var: str = "region"
    az_var: str = "az"
    cell_var: str = "cell"
    lb_var: str = "fleetwave_lb"  # "balancer:backend/server" or "balancer:backend"
    traffic_var: str = "traffic"
    timezone_var: str = "timezone"
    label_vars: tuple[str, ...] = ()
    default_traffic: str = "low"
    default_timezone: str = "UTC"


def load_inventory(path: Path) -> Inventory:
    """Read an inventory file, INI or YAML (chosen by extension, then by content)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("file not found", source=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", source=str(path)) from None
    is_yaml = path.suffix in (".yaml", ".yml") or (
        path.suffix not in (".ini", ".cfg")
        and re.match(r"^\s*[\w.-]+:\s*$", text, re.M) is not None
    )
    return parse_yaml_inventory(path) if is_yaml else parse_ini(path, text)


def inventory_to_topology(inv: Inventory, options: ImportOptions, path: Path) -> Topology:
    """Build a validated topology; a host without region or AZ is an error naming it."""
    regions: dict[str, dict[str, Any]] = {}
    for host in inv.host_vars:
        hv = inv.resolved_vars(host)
        where = inv.sources.get(host, str(path))
        for var in (options.region_var, options.az_var):
            if hv.get(var) in (None, ""):
                raise ConfigError(
                    f"host {host} has no {var!r} variable (host or group var)", source=where
                )
        region = regions.setdefault(
            str(hv[options.region_var]),
            {
                "traffic": str(hv.get(options.traffic_var, options.default_traffic)),
                "timezone": str(hv.get(options.timezone_var, options.default_timezone)),
                "azs": {},
            },
        )
        entry: dict[str, Any] = {"name": host, "address": str(hv.get("ansible_host", host))}
        if hv.get(options.cell_var) not in (None, ""):
            entry["cell"] = str(hv[options.cell_var])
        if "ansible_user" in hv:
            entry["user"] = str(hv["ansible_user"])
        if "ansible_port" in hv:
            entry["port"] = hv["ansible_port"]
        if hv.get(options.lb_var):
            entry["lb"] = str(hv[options.lb_var])
        labels = {k: str(hv[k]) for k in options.label_vars if k in hv}
        if labels:
            entry["labels"] = labels
        region["azs"].setdefault(str(hv[options.az_var]), []).append(entry)
    if not regions:
        raise ConfigError("the inventory has no hosts", source=str(path))
    # Positions point at the inventory, so a bad value names the host's line there.
    sources = {"": str(path)}
    loc = Locator(sources, str(path))
    return topology_from_data({"regions": regions}, loc, path)


def import_inventory(path: Path, options: ImportOptions) -> Topology:
    """Read an Ansible inventory and turn it into a validated topology."""
    return inventory_to_topology(load_inventory(path), options, path)
