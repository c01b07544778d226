"""The field definitions of a pipeline file: the single source of truth the loader
(``pipeline.py``) validates against and ``fleetwave schema`` renders as JSON Schema."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Any

from fleetwave.config import alarm_expr
from fleetwave.config.alarms import (
    AGENT_METRICS,
    Comparison,
    OnInsufficient,
    ScopeKind,
    Statistic,
    TreatMissing,
)
from fleetwave.config.anomaly import ANOMALY_SPEC
from fleetwave.config.schema import (
    Amount,
    AnyOf,
    Anything,
    Bool,
    Day,
    Duration,
    Field,
    Int,
    ListOf,
    Locator,
    MapOf,
    Obj,
    Spec,
    Str,
)
from fleetwave.config.topology import NAME_PATTERN
from fleetwave.config.windows import parse_clock, parse_range

DRIVERS = ("haproxy", "command", "none")


class Unit(enum.Enum):
    AZ = "az"
    CELL = "cell"


class OverrideTarget(enum.Enum):
    WINDOWS = "windows"
    BLOCKERS = "blockers"
    BAKES = "bakes"


@dataclass(frozen=True)
class Number(Spec):
    """A finite number (an alarm threshold)."""

    def accepts(self, value: Any) -> bool:
        return isinstance(value, int | float) and not isinstance(value, bool)

    def expected(self) -> str:
        return "a number"

    def check(self, value: Any, path: str, loc: Locator) -> Any:
        if not self.accepts(value) or not math.isfinite(value):
            raise loc.error(path, f"expected a finite number, got {value!r}")
        return float(value)

    def schema(self) -> dict[str, Any]:
        return {"type": "number"}


def _choices(kind: type[enum.Enum]) -> tuple[str, ...]:
    return tuple(str(m.value) for m in kind)


_COUNTERS = tuple(n for n, m in AGENT_METRICS.items() if m.kind.value == "counter")


@dataclass(frozen=True)
class Shorthand(Spec):
    """A mapping, or just the value of its key ``key``: ``stage_bake: 0s`` is
    ``stage_bake: {time: 0s}``. The loader always sees the mapping."""

    full: Obj
    key: str

    def accepts(self, value: Any) -> bool:
        return self.full.accepts(value) or self.full.field_named(self.key).spec.accepts(value)

    def expected(self) -> str:
        return f"{self.full.field_named(self.key).spec.expected()} or {self.full.expected()}"

    def check(self, value: Any, path: str, loc: Locator) -> Any:
        if value is None or self.full.accepts(value):
            return self.full.check(value, path, loc)
        short = self.full.field_named(self.key).spec
        if not short.accepts(value):
            raise loc.error(path, f"expected {self.expected()}, got {value!r}")
        return {self.key: short.check(value, path, loc)}

    def schema(self) -> dict[str, Any]:
        # One schema with several types rather than an anyOf: "properties" applies to
        # objects only, "pattern" to strings only and "minimum" to numbers only, so the
        # mapping's keywords stay where schema readers (and editors) look for them.
        out = self.full.schema()
        types: list[str] = []
        short = self.full.field_named(self.key).spec.schema()
        for kind in [out["type"], *(option["type"] for option in short.get("anyOf", [short]))]:
            for name in kind if isinstance(kind, list) else [kind]:
                if name not in types:
                    types.append(name)
        for option in short.get("anyOf", [short]):
            out.update({k: v for k, v in option.items() if k != "type"})
        out["type"] = types
        return out


_BAKE_FULL = Obj(
    description="Bake: a time AND, with a metric, a minimum number of its data points.",
    fields=(
        Field("time", Duration(description="e.g. 1h, 90s, 1h30m, 500ms")),
        Field("min_datapoints", Int(minimum=0)),
        Field(
            "metric",
            Str(
                choices=_COUNTERS,
                description="agent counter whose increase, served by the new release, counts",
            ),
        ),
        Field("max_bake", Duration(description="longest wait for min_datapoints")),
        Field(
            "on_insufficient",
            Str(
                choices=_choices(OnInsufficient),
                description="still short of data at max_bake: hold (default), rollback, proceed",
            ),
        ),
    ),
)
#: Every bake field: the mapping, or a duration alone (``bake: 0s`` = ``{time: 0s}``).
_BAKE = Shorthand(
    full=_BAKE_FULL,
    key="time",
    description="A bake: a duration alone (sugar for {time: ...}), or the mapping.",
)

_ROLLING = Obj(
    description="Rolling policy of each stage.",
    fields=(
        Field("max_batch", Amount(minimum=1, description="most hosts out at once")),
        Field("min_healthy", Amount(description="percent of hosts that must keep serving")),
        Field("rollback_batch", Amount(minimum=1, description="hosts rolled back at once")),
        Field("failure_budget", Amount(description="failed hosts tolerated per stage")),
    ),
)

_ONEBOX = Obj(
    fields=(
        Field("enabled", Bool()),
        Field("bake", _BAKE),
        Field("failure_budget", Amount()),
    )
)

_DAYS = ListOf(Str(description="mon..sun, weekdays, weekend, all"), min_items=1)
_HOURS = AnyOf(
    options=(
        Str(convert=parse_range, description="HH:MM-HH:MM"),
        ListOf(Str(convert=parse_range, description="HH:MM-HH:MM"), min_items=1),
    )
)
_WINDOW = Obj(
    description="When stages may start, in the region's own time zone.",
    fields=(
        Field("days", _DAYS),
        Field("hours", _HOURS),
        Field(
            "exclude",
            ListOf(
                Obj(
                    fields=(
                        Field("days", _DAYS),
                        Field("hours", _HOURS),
                        Field("after", Str(convert=parse_clock, description="HH:MM")),
                    )
                )
            ),
        ),
        Field(
            "holidays",
            Obj(
                fields=(
                    Field("dates", ListOf(Day())),
                    Field("country", Str(description="ISO country code for `holidays`")),
                    Field("subdivision", Str()),
                )
            ),
        ),
    ),
)

_SSH = Obj(
    fields=(
        Field("user", Str()),
        Field("port", Int(minimum=1, maximum=65535)),
        Field("identity", Str(description="private key file")),
        Field("known_hosts", Str()),
        Field("ca_keys", ListOf(Str())),
        Field("connect_timeout", Duration()),
        Field("command_timeout", Duration()),
        Field("idle_timeout", Duration()),
        Field("agent_start_timeout", Duration()),
        Field("concurrency", Int(minimum=1)),
        Field("connect_retries", Int(minimum=0)),
        Field("agent_command", Str()),
    )
)

_DEPLOY = Obj(
    description="How to reach hosts and balancers.",
    fields=(
        Field("ssh", _SSH),
        Field(
            "load_balancers",
            ListOf(
                Obj(
                    fields=(
                        Field("name", Str(pattern=NAME_PATTERN), True),
                        Field("driver", Str(choices=DRIVERS), True),
                        Field("options", MapOf(Anything())),
                    )
                )
            ),
        ),
        Field("drain_timeout", Duration()),
        Field("state_dir", Str()),
        Field(
            "trust",
            ListOf(Str(description="public key file a package must be signed by")),
        ),
        Field("lease_ttl", Duration(description="host lease: expiry after the last renewal")),
    ),
)

_BLOCKERS = ListOf(Str(convert=alarm_expr.parse, description='e.g. ALARM("sev2") OR ...'))

ALARM_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.:-]*"

_ALARM = Obj(
    description=(
        "An alarm: a metric alarm (metric or promql), a composite (expression) or a "
        "Prometheus alerting rule (prometheus_alert)."
    ),
    fields=(
        Field("name", Str(pattern=ALARM_NAME_PATTERN), True),
        Field("metric", Str(choices=tuple(AGENT_METRICS), description="an agent metric")),
        Field("promql", Str(description="a PromQL query; $scope expands to the scope's matcher")),
        Field("denominator", Str(description="metric (or PromQL) dividing the value: a ratio")),
        Field("statistic", Str(choices=_choices(Statistic))),
        Field("comparison", Str(choices=_choices(Comparison))),
        Field("threshold", Number()),
        Field("period", Duration()),
        Field("evaluation_periods", Int(minimum=1, maximum=100)),
        Field("datapoints_to_alarm", Int(minimum=1, maximum=100)),
        Field("treat_missing_data", Str(choices=_choices(TreatMissing))),
        Field("scope", Str(choices=_choices(ScopeKind))),
        Field("min_samples", Int(minimum=1)),
        Field(
            "expression",
            Str(convert=alarm_expr.parse, description='composite, e.g. ALARM("a") OR OK("b")'),
        ),
        Field("prometheus_alert", Str(description="alertname of an existing alerting rule")),
    ),
)

_WATCH = Obj(
    description="Where alarm data comes from and how often it is read.",
    fields=(
        Field("source", Str(choices=("agent", "prometheus"), description="default: agent")),
        Field("interval", Duration(description="poll and evaluation interval (default 10s)")),
        Field(
            "prometheus",
            Obj(
                fields=(
                    Field("url", Str(description="e.g. http://prometheus:9090"), True),
                    Field("host_label", Str(description="label naming the host (default host)")),
                    Field("timeout", Duration()),
                )
            ),
        ),
    ),
)

PIPELINE_SPEC = Obj(
    description="A fleetwave pipeline file.",
    fields=(
        Field("extends", Str(description="parent pipeline file, relative to this one")),
        Field("name", Str(pattern=NAME_PATTERN), True),
        Field("service", Str(pattern=NAME_PATTERN), True),
        Field("environment", Str()),
        Field("topology", Str(description="topology file, relative to this one"), True),
        Field("deploy", _DEPLOY),
        Field(
            "unit",
            Str(choices=tuple(u.value for u in Unit), description="one AZ or one cell at a time"),
        ),
        Field("rolling", _ROLLING),
        Field("onebox", _ONEBOX),
        Field("stage_bake", _BAKE),
        Field("batch_estimate", Duration(description="plan-time estimate per batch")),
        Field("blockers", _BLOCKERS),
        Field("alarms", ListOf(_ALARM)),
        Field("rollback_alarm", Str(description="alarm whose ALARM rolls the deployment back")),
        Field("onebox_alarm", Str(description="alarm also watched during one-box stages")),
        Field("post_deploy_watch", Duration(description="keep watching after the last stage")),
        Field("watch", _WATCH),
        Field("anomaly", ANOMALY_SPEC),
        Field(
            "windows",
            Obj(fields=(Field("default", _WINDOW), Field("regions", MapOf(_WINDOW)))),
        ),
        Field(
            "override",
            Obj(
                fields=(
                    Field("allow", ListOf(Str(choices=tuple(t.value for t in OverrideTarget)))),
                    Field("require_reason", Bool()),
                    Field("require_approver", Bool()),
                    Field("approvers", ListOf(Str())),
                )
            ),
        ),
        Field(
            "preprod",
            Obj(
                fields=(
                    Field(
                        "stages",
                        ListOf(
                            Obj(
                                fields=(
                                    Field("environment", Str(), True),
                                    Field("tests", ListOf(Str())),
                                    Field("onebox", Bool()),
                                    Field("bake", _BAKE),
                                    Field("rolling", _ROLLING),
                                )
                            )
                        ),
                    ),
                    Field("bake", _BAKE),
                )
            ),
        ),
        Field(
            "waves",
            ListOf(
                Obj(
                    fields=(
                        Field("name", Str()),
                        Field("regions", ListOf(Str(), min_items=1), True),
                        Field("bake", _BAKE),
                        Field("stage_bake", _BAKE),
                        Field("rolling", _ROLLING),
                        Field("onebox", _ONEBOX),
                    )
                ),
                min_items=1,
            ),
            True,
        ),
    ),
)
