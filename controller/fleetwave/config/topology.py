"""The fleet topology: one central file listing regions -> AZs -> (cells) -> hosts.

Format (YAML)::

    regions:
      us-east-1:
        traffic: high                 # low | high
        timezone: America/New_York    # an IANA zone; windows are evaluated in it
        azs:
          use1-az1:                   # an AZ is a list of hosts (may be empty)
            - name: web-1
              address: 10.0.1.11
              cell: cell-a            # optional
              user: deploy            # optional: default from the pipeline's deploy.ssh
              port: 2222              # optional
              lb: "edge:app/web-1"    # balancer:backend/server, or backend only
              labels: {rack: r12}     # free-form
    environments:                     # pre-production, hosts separate from production
      beta:
        region: us-east-1
        hosts: [...]                  # same host fields, plus an optional `az`

Host names are unique across the file, and so are address:port pairs and balancer
servers: a host deployed twice, or two hosts behind one balancer entry, is an error.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fleetwave.config.schema import AnyOf, Field, Int, ListOf, Locator, MapOf, Obj, Str
from fleetwave_core.yamlsrc import join_path, load_yaml, require_mapping


@dataclass(frozen=True)
class ServerRef:
    """Which balancer server stands for a host: ``backend``/``server`` on balancer ``lb``."""

    lb: str
    backend: str
    server: str

    def __str__(self) -> str:
        return f"{self.lb}:{self.backend}/{self.server}"


@dataclass(frozen=True)
class HostRef:
    name: str
    address: str
    region: str
    az: str
    cell: str = ""
    ssh_user: str | None = None  # None: the pipeline's default
    ssh_port: int | None = None
    lb: ServerRef | None = None  # None: the host is behind no balancer
    labels: tuple[tuple[str, str], ...] = ()


NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.\-]*"


class TrafficClass(enum.Enum):
    LOW = "low"
    HIGH = "high"


@dataclass(frozen=True)
class Region:
    name: str
    traffic: TrafficClass
    timezone: str
    azs: tuple[str, ...]  # in file order, including AZs without hosts
    hosts: tuple[HostRef, ...]  # grouped by AZ, in file order

    def hosts_in(self, az: str) -> tuple[HostRef, ...]:
        """The hosts of one AZ of this region."""
        return tuple(h for h in self.hosts if h.az == az)


@dataclass(frozen=True)
class Environment:
    """A pre-production environment (alpha, beta, gamma) with its own hosts."""

    name: str
    region: str
    timezone: str
    hosts: tuple[HostRef, ...]


@dataclass(frozen=True)
class Topology:
    path: Path
    regions: tuple[Region, ...]
    environments: tuple[Environment, ...] = ()
    #: host name -> ``file:line`` of its entry, for errors found after loading
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    def region(self, name: str) -> Region:
        """The region called ``name`` (KeyError naming it when unknown)."""
        for region in self.regions:
            if region.name == name:
                return region
        raise KeyError(f"unknown region {name!r}")

    def environment(self, name: str) -> Environment:
        """The pre-production environment called ``name``."""
        for env in self.environments:
            if env.name == name:
                return env
        raise KeyError(f"unknown environment {name!r}")

    def region_names(self) -> list[str]:
        return [r.name for r in self.regions]

    def hosts(self) -> list[HostRef]:
        """Every production host."""
        return [h for r in self.regions for h in r.hosts]

    def where(self, host: str) -> str:
        """``file:line`` of a host's entry (the file alone when unknown)."""
        return self.sources.get(host, str(self.path))


def _parse_lb_ref(text: str) -> tuple[str, str, str | None]:
    lb, sep, rest = text.partition(":")
    backend, _, server = rest.partition("/")
    if not sep or not lb or not backend:
        raise ValueError(
            f"invalid balancer reference {text!r}: expected 'balancer:backend/server' "
            "or 'balancer:backend' (the server then defaults to the host name)"
        )
    return lb, backend, server or None


_LB_MAP = Obj(
    description="The balancer entry that stands for this host.",
    fields=(
        Field("lb", Str(description="balancer name (see deploy.load_balancers)"), True),
        Field("backend", Str(), True),
        Field("server", Str(description="defaults to the host name")),
    ),
)

_HOST_FIELDS: tuple[Field, ...] = (
    Field("name", Str(pattern=NAME_PATTERN, description="unique host name"), True),
    Field("address", Str(description="IP address or DNS name SSH connects to"), True),
    Field("cell", Str(pattern=NAME_PATTERN, description="cell inside the AZ")),
    Field("user", Str(description="SSH user, when not the pipeline default")),
    Field("port", Int(minimum=1, maximum=65535, description="SSH port, when not default")),
    Field(
        "lb",
        AnyOf(
            description="balancer:backend/server, or a mapping; omit for no balancer",
            options=(Str(convert=_parse_lb_ref), _LB_MAP),
        ),
    ),
    Field("labels", MapOf(Str(), description="free-form labels")),
)

HOST_SPEC = Obj(description="One host.", fields=_HOST_FIELDS)
ENV_HOST_SPEC = Obj(
    description="One pre-production host.", fields=(*_HOST_FIELDS, Field("az", Str()))
)


def _check_zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name!r} (use an IANA name like Europe/Dublin)"
        ) from None
    return name


TIMEZONE = Str(convert=_check_zone, description="IANA time zone, e.g. America/New_York")

TOPOLOGY_SPEC = Obj(
    description="fleetwave fleet topology: regions -> AZs -> hosts.",
    fields=(
        Field(
            "regions",
            MapOf(
                Obj(
                    fields=(
                        Field("traffic", Str(choices=("low", "high")), True),
                        Field("timezone", TIMEZONE, True),
                        Field(
                            "azs",
                            MapOf(ListOf(HOST_SPEC), key_pattern=NAME_PATTERN, min_items=1),
                            True,
                        ),
                    )
                ),
                key_pattern=NAME_PATTERN,
                min_items=1,
            ),
            True,
        ),
        Field(
            "environments",
            MapOf(
                Obj(
                    fields=(
                        Field("region", Str(), True),
                        Field("timezone", TIMEZONE),
                        Field("hosts", ListOf(ENV_HOST_SPEC, min_items=1), True),
                    )
                ),
                key_pattern=NAME_PATTERN,
            ),
        ),
    ),
)


class _HostRegistry:
    """Enforces uniqueness of names, address:port pairs and balancer servers."""

    def __init__(self, loc: Locator):
        self.loc = loc
        self.names: dict[str, str] = {}
        self.endpoints: dict[tuple[str, int | None], str] = {}
        self.servers: dict[ServerRef, str] = {}
        self.sources: dict[str, str] = {}

    def add(self, raw: dict[str, Any], path: str, region: str, az: str) -> HostRef:
        name = raw["name"]
        if name in self.names:
            raise self.loc.error(
                join_path(path, "name"), f"duplicate host {name!r} (also at {self.names[name]})"
            )
        endpoint = (raw["address"], raw.get("port"))
        if endpoint in self.endpoints:
            raise self.loc.error(
                join_path(path, "address"),
                f"address {raw['address']} is already host {self.endpoints[endpoint]!r}",
            )
        lb = _server_ref(raw.get("lb"), name)
        if lb is not None and lb in self.servers:
            raise self.loc.error(
                join_path(path, "lb"), f"balancer server {lb} is already host {self.servers[lb]!r}"
            )
        where = self.loc.where(path)
        self.names[name] = where
        self.sources[name] = where
        self.endpoints[endpoint] = name
        if lb is not None:
            self.servers[lb] = name
        return HostRef(
            name=name,
            address=raw["address"],
            region=region,
            az=az,
            cell=raw.get("cell", ""),
            ssh_user=raw.get("user"),
            ssh_port=raw.get("port"),
            lb=lb,
            labels=tuple(sorted(raw.get("labels", {}).items())),
        )


def _server_ref(value: Any, host: str) -> ServerRef | None:
    if value is None:
        return None
    if isinstance(value, tuple):
        lb, backend, server = value
    else:
        lb, backend, server = value["lb"], value["backend"], value.get("server")
    return ServerRef(lb, backend, server or host)


def topology_from_data(data: Any, loc: Locator, path: Path) -> Topology:
    """Validate parsed topology data into a :class:`Topology` (errors name file:line)."""
    checked = TOPOLOGY_SPEC.check(data, "", loc)
    registry = _HostRegistry(loc)
    regions: list[Region] = []
    for rname, rdata in checked["regions"].items():
        hosts: list[HostRef] = []
        for az, az_hosts in rdata["azs"].items():
            for i, raw in enumerate(az_hosts):
                host_path = join_path(
                    join_path(join_path(join_path("regions", rname), "azs"), az), i
                )
                hosts.append(registry.add(raw, host_path, rname, az))
        regions.append(
            Region(
                name=rname,
                traffic=TrafficClass(rdata["traffic"]),
                timezone=rdata["timezone"],
                azs=tuple(rdata["azs"]),
                hosts=tuple(hosts),
            )
        )
    zones = {r.name: r.timezone for r in regions}
    envs: list[Environment] = []
    for ename, edata in checked.get("environments", {}).items():
        base = join_path("environments", ename)
        env_hosts = [
            registry.add(
                raw, join_path(join_path(base, "hosts"), i), edata["region"], raw.get("az", "")
            )
            for i, raw in enumerate(edata["hosts"])
        ]
        tz = edata.get("timezone") or zones.get(edata["region"], "UTC")
        envs.append(Environment(ename, edata["region"], tz, tuple(env_hosts)))
    return Topology(
        path=path, regions=tuple(regions), environments=tuple(envs), sources=registry.sources
    )


def load_topology(path: Path | str) -> Topology:
    """Load and validate a topology file; raise ConfigError naming file:line and key."""
    doc = load_yaml(path)
    data = require_mapping(doc, "topology", [f.name for f in TOPOLOGY_SPEC.fields])
    return topology_from_data(data, Locator.of(doc), Path(path))


def topology_to_data(topology: Topology) -> dict[str, Any]:
    """The YAML-ready form of a topology (what ``topology import`` writes)."""

    def host(h: HostRef, *, with_az: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"name": h.name, "address": h.address}
        if with_az and h.az:
            out["az"] = h.az
        if h.cell:
            out["cell"] = h.cell
        if h.ssh_user:
            out["user"] = h.ssh_user
        if h.ssh_port:
            out["port"] = h.ssh_port
        if h.lb is not None:
            out["lb"] = str(h.lb)
        if h.labels:
            out["labels"] = dict(h.labels)
        return out

    data: dict[str, Any] = {
        "regions": {
            r.name: {
                "traffic": r.traffic.value,
                "timezone": r.timezone,
                "azs": {az: [host(h, with_az=False) for h in r.hosts_in(az)] for az in r.azs},
            }
            for r in topology.regions
        }
    }
    if topology.environments:
        data["environments"] = {
            e.name: {
                "region": e.region,
                "timezone": e.timezone,
                "hosts": [host(h, with_az=True) for h in e.hosts],
            }
            for e in topology.environments
        }
    return data
