"""Import an Ansible inventory (INI, YAML or ``ansible-inventory --list`` JSON) as a
fleetwave topology.

Ansible is not a dependency: the INI format is parsed here (``[group]`` host lines with
``key=value`` vars, ``[group:vars]``, ``[group:children]``, host ranges such as
``web[01:03]``, ``w[a:c]`` and ``db[0:10:5]``), the YAML format with the safe loader, and
the JSON that ``ansible-inventory --list`` prints (``_meta.hostvars``, groups with
``hosts``/``children``/``vars``). Next to an INI or YAML inventory, ``group_vars/`` and
``host_vars/`` are read as Ansible reads them: ``NAME``, ``NAME.yml``, ``NAME.yaml``,
``NAME.json`` or a directory ``NAME/`` of such files (merged in name order).
``ansible-inventory --list`` already merged those directories into its hostvars, so they
are not read again for JSON.

Variables follow Ansible's order: ``all`` first, then groups from parent to child (the
inventory's own group vars, then ``group_vars/``), then the host's own vars (inline, then
``host_vars/``). ``ansible_host``, ``ansible_port`` and ``ansible_user`` become the
address, SSH port and user; region, AZ, cell, balancer and labels come from the
variables the caller names.
"""

from __future__ import annotations

import enum
import json
import re
import shlex
import string
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
    #: from ``group_vars/`` and ``host_vars/`` next to the inventory
    dir_group_vars: dict[str, dict[str, Any]] = field(default_factory=dict)
    dir_host_vars: dict[str, dict[str, Any]] = field(default_factory=dict)

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
        """The host's variables in Ansible's precedence, lowest first: the inventory's
        group vars (all < parents < children), ``group_vars/all``, the other
        ``group_vars/`` (parents < children), the inventory's host vars, ``host_vars/``."""
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
        ordered = sorted(ancestors, key=lambda name: (depth.get(name, 0), name))
        out: dict[str, Any] = {}
        for g in ordered:
            out.update(self.group_vars.get(g, {}))
        # group_vars/all outranks every group var written in the inventory itself.
        for g in ordered:
            out.update(self.dir_group_vars.get(g, {}))
        out.update(self.host_vars[host])
        out.update(self.dir_host_vars.get(host, {}))
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


#: ``[01:03]``, ``[a:c]``, with an optional stride ``[0:10:5]`` (Ansible's host patterns).
_RANGE = re.compile(r"\[([0-9]+|[A-Za-z]):([0-9]+|[A-Za-z])(?::([0-9]+))?\]")
#: Ceiling on the names one pattern may expand to: a typo like ``web[1:9999999]`` must
#: be an error, not a hang.
MAX_RANGE_HOSTS = 100_000
#: Ceiling on an inventory or vars file's size (a generated ``--list`` of 100k hosts is
#: well under this).
MAX_INVENTORY_BYTES = 64 * 1024 * 1024


def _range_items(first: str, last: str, stride: int, pattern: str) -> list[str]:
    if stride < 1:
        raise ValueError(f"host range {pattern!r} has a zero stride")
    if first.isdigit() != last.isdigit():
        raise ValueError(f"host range {pattern!r} mixes digits and letters")
    if first.isdigit():
        lo, hi = int(first), int(last)
        if hi < lo:
            raise ValueError(f"host range {pattern!r} runs backwards")
        if (hi - lo) // stride + 1 > MAX_RANGE_HOSTS:
            raise ValueError(f"host range {pattern!r} expands to over {MAX_RANGE_HOSTS} hosts")
        width = len(first) if first.startswith("0") else 0
        return [str(i).zfill(width) for i in range(lo, hi + 1, stride)]
    letters = string.ascii_lowercase if first.islower() else string.ascii_uppercase
    if last not in letters:
        raise ValueError(f"host range {pattern!r} mixes lower and upper case")
    lo, hi = letters.index(first), letters.index(last)
    if hi < lo:
        raise ValueError(f"host range {pattern!r} runs backwards")
    return list(letters[lo : hi + 1 : stride])


def expand_hosts(pattern: str) -> list[str]:
    """``web[01:03]`` -> ``web01 web02 web03`` (zero padding kept), ``w[a:c]`` -> ``wa wb
    wc``, ``db[0:10:5]`` -> ``db0 db5 db10``; several ranges multiply. Other names as is.
    Raises ValueError for a backwards, mixed or oversized range."""
    names = [""]
    rest = pattern
    # Left to right, without recursion; the product is capped as it grows.
    while (match := _RANGE.search(rest)) is not None:
        items = _range_items(match.group(1), match.group(2), int(match.group(3) or 1), pattern)
        if len(names) * len(items) > MAX_RANGE_HOSTS:
            raise ValueError(f"host range {pattern!r} expands to over {MAX_RANGE_HOSTS} hosts")
        head = rest[: match.start()]
        names = [f"{n}{head}{item}" for n in names for item in items]
        rest = rest[match.end() :]
    return [n + rest for n in names]


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


def _json_error(path: Path, key_path: str, message: str) -> ConfigError:
    return ConfigError(message, source=str(path), key_path=key_path or None)


def _str_list(path: Path, value: Any, key_path: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _json_error(path, key_path, "expected a list of names")
    return list(value)


def parse_inventory_json(path: Path, text: str) -> Inventory:
    """Parse the JSON of ``ansible-inventory --list`` (``--export`` too): groups with
    ``hosts``/``children``/``vars`` lists and maps, hosts' vars under ``_meta.hostvars``."""
    try:
        doc = json.loads(text)
    except RecursionError:
        raise ConfigError("JSON nested too deeply", source=str(path)) from None
    except ValueError as exc:
        raise ConfigError(f"invalid JSON: {exc}", source=str(path)) from None
    if not isinstance(doc, dict):
        raise ConfigError("ansible-inventory JSON must be an object of groups", source=str(path))
    meta = doc.get("_meta") or {}
    hostvars = meta.get("hostvars") if isinstance(meta, dict) else None
    if hostvars is None:
        hostvars = {}
    if not isinstance(hostvars, dict):
        raise _json_error(path, "_meta.hostvars", "expected a mapping of host -> vars")
    groups: dict[str, tuple[list[str], list[str], dict[str, Any]]] = {}
    for group, body in doc.items():
        if group == "_meta":
            continue
        if not isinstance(body, dict):
            raise _json_error(path, group, "a group must be an object")
        unknown = set(body) - {"hosts", "children", "vars"}
        if unknown:
            raise _json_error(path, f"{group}.{sorted(unknown)[0]}", "unknown group key")
        group_vars = body.get("vars") or {}
        if not isinstance(group_vars, dict):
            raise _json_error(path, f"{group}.vars", "expected a mapping")
        groups[group] = (
            _str_list(path, body.get("hosts"), f"{group}.hosts"),
            _str_list(path, body.get("children"), f"{group}.children"),
            group_vars,
        )
    inv = Inventory()
    inv.group("all")
    # Hosts in the order Ansible lists them: depth first from `all` along `children`
    # (hostvars are sorted by name, groups alphabetically), then any group not reached.
    order: list[str] = []
    seen: set[str] = set()
    for root in ["all", *groups]:
        stack = [root]
        while stack:
            group = stack.pop()
            if group in seen or group not in groups:
                continue
            seen.add(group)
            order.append(group)
            stack.extend(reversed(groups[group][1]))
    for group in order:
        hosts, children, group_vars = groups[group]
        inv.group(group)
        inv.group_vars[group].update(group_vars)
        for child in children:
            inv.group(child)
            if child not in inv.children[group]:
                inv.children[group].append(child)
        for host in hosts:
            inv.add_host(group, host, {}, str(path))
    for host, hvars in hostvars.items():
        if not isinstance(hvars, dict):
            raise _json_error(path, f"_meta.hostvars.{host}", "host vars must be a mapping")
        if host not in inv.host_vars:  # in no group: Ansible calls it ungrouped
            inv.add_host("ungrouped", host, {}, str(path))
        inv.host_vars[host].update(hvars)
    return inv


#: What Ansible reads in group_vars/ and host_vars/: NAME, NAME.yml, NAME.yaml, NAME.json.
_VARS_SUFFIXES = ("", ".yml", ".yaml", ".json")
#: Ceiling on the files one vars directory tree may hold.
MAX_VARS_FILES = 10_000


def _read_vars_file(path: Path) -> dict[str, Any]:
    if path.stat().st_size > MAX_INVENTORY_BYTES:
        raise ConfigError(f"larger than {MAX_INVENTORY_BYTES} bytes", source=str(path))
    data = load_yaml(path).data  # JSON is YAML, so one loader reads every form
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("a vars file must be a mapping of variables", source=str(path))
    return {str(k): v for k, v in data.items()}


def _vars_files(entry: Path) -> list[Path]:
    """One vars file, or every file under a vars directory in name order (hidden and
    other-suffix files skipped, as Ansible does); bounded, without recursion."""
    if not entry.is_dir():
        return [entry]
    found: list[Path] = []
    stack = [entry]
    while stack:
        directory = stack.pop()
        for child in sorted(directory.iterdir(), reverse=True):
            if child.name.startswith("."):
                continue
            if child.is_dir():
                stack.append(child)
            elif child.suffix in _VARS_SUFFIXES:
                found.append(child)
            if len(found) > MAX_VARS_FILES:
                raise ConfigError(f"more than {MAX_VARS_FILES} vars files", source=str(entry))
    return sorted(found)


def _load_vars_dir(directory: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    """``{name: merged vars}`` for the names that have a file or directory here."""
    if not directory.is_dir():
        return {}
    entries = {e.name: e for e in directory.iterdir() if not e.name.startswith(".")}
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        merged: dict[str, Any] = {}
        for suffix in _VARS_SUFFIXES:
            entry = entries.get(name + suffix)
            if entry is None or (suffix and entry.is_dir()):
                continue
            for file in _vars_files(entry):
                merged.update(_read_vars_file(file))
        if merged:
            out[name] = merged
    return out


def read_vars_dirs(inv: Inventory, inventory_path: Path) -> None:
    """Fill ``inv`` from ``group_vars/`` and ``host_vars/`` next to the inventory file."""
    base = inventory_path.parent
    inv.dir_group_vars = _load_vars_dir(base / "group_vars", list(inv.group_vars))
    inv.dir_host_vars = _load_vars_dir(base / "host_vars", list(inv.host_vars))


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


class InventoryFormat(enum.Enum):
    INI = "ini"
    YAML = "yaml"
    JSON = "json"  # ansible-inventory --list


def detect_format(path: Path, text: str) -> InventoryFormat:
    """JSON by ``.json`` or a leading ``{`` (not in a ``.yaml`` file, whose flow style
    also starts so); YAML by extension or a ``name:`` line; INI otherwise."""
    head = text.lstrip()[:1]
    if path.suffix == ".json" or (head == "{" and path.suffix not in (".yaml", ".yml")):
        return InventoryFormat.JSON
    if path.suffix in (".yaml", ".yml") or (
        path.suffix not in (".ini", ".cfg") and re.match(r"^\s*[\w.-]+:\s*$", text, re.M)
    ):
        return InventoryFormat.YAML
    return InventoryFormat.INI


def load_inventory(path: Path) -> Inventory:
    """Read an inventory file (INI, YAML or ``ansible-inventory --list`` JSON) and, for
    INI and YAML, the ``group_vars/`` and ``host_vars/`` next to it."""
    try:
        if path.stat().st_size > MAX_INVENTORY_BYTES:
            raise ConfigError(f"larger than {MAX_INVENTORY_BYTES} bytes", source=str(path))
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("file not found", source=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", source=str(path)) from None
    kind = detect_format(path, text)
    if kind is InventoryFormat.JSON:
        # ansible-inventory already merged group_vars/ and host_vars/ into hostvars.
        return parse_inventory_json(path, text)
    inv = parse_yaml_inventory(path) if kind is InventoryFormat.YAML else parse_ini(path, text)
    read_vars_dirs(inv, path)
    return inv


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
