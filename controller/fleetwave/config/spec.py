"""The field definitions of a pipeline file: the single source of truth the loader
(``pipeline.py``) validates against and ``fleetwave schema`` renders as JSON Schema."""

from __future__ import annotations

import enum

from fleetwave.config import alarm_expr
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
    MapOf,
    Obj,
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


_BAKE = Obj(
    description="Bake: a time AND, with a metric, a minimum number of its data points.",
    fields=(
        Field("time", Duration(description="e.g. 1h, 90s, 1h30m, 500ms")),
        Field("min_datapoints", Int(minimum=0)),
        Field("metric", Str(description="metric whose samples count towards the bake")),
    ),
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
    ),
)

_BLOCKERS = ListOf(Str(convert=alarm_expr.parse, description='e.g. ALARM("sev2") OR ...'))

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
