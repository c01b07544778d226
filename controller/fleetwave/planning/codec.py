"""The JSON form of a :class:`~fleetwave.planning.model.Plan` (``plan --json``, the journal).

``plan_from_dict(plan_to_dict(p)) == p`` for every plan. Decoding validates shapes and
raises PlanError naming the JSON path of the first bad value, so a corrupted journal is
reported, never half-read.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fleetwave.config.alarms import OnInsufficient
from fleetwave.errors import PlanError
from fleetwave.lb.base import ServerRef
from fleetwave.planning.model import (
    BakeRequirement,
    Batching,
    HostRef,
    Plan,
    RegionPlan,
    Stage,
    StageKind,
    Wave,
)

FORMAT_VERSION = 1


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _bake(bake: BakeRequirement) -> dict[str, Any]:
    return {
        "duration_s": bake.duration_s,
        "min_datapoints": bake.min_datapoints,
        "metric": bake.metric,
        "max_bake_s": bake.max_bake_s,
        "on_insufficient": bake.on_insufficient.value,
    }


def _host(host: HostRef) -> dict[str, Any]:
    return {
        "name": host.name,
        "address": host.address,
        "region": host.region,
        "az": host.az,
        "cell": host.cell,
        "ssh_user": host.ssh_user,
        "ssh_port": host.ssh_port,
        "lb": None
        if host.lb is None
        else {"lb": host.lb.lb, "backend": host.lb.backend, "server": host.lb.server},
        "labels": dict(host.labels),
    }


def _stage(stage: Stage) -> dict[str, Any]:
    return {
        "id": stage.id,
        "kind": stage.kind.value,
        "region": stage.region,
        "scope": stage.scope,
        "hosts": [_host(h) for h in stage.hosts],
        "batching": {
            "max_out": stage.batching.max_out,
            "min_serving": stage.batching.min_serving,
            "rollback_batch": stage.batching.rollback_batch,
        },
        "bake": _bake(stage.bake),
        "failure_budget": stage.failure_budget,
        "blockers": list(stage.blockers),
        "tests": list(stage.tests),
        "earliest_start": _time(stage.earliest_start),
    }


def plan_to_dict(plan: Plan) -> dict[str, Any]:
    """A JSON-ready dict of ``plan``."""
    return {
        "format": FORMAT_VERSION,
        "pipeline": plan.pipeline,
        "service": plan.service,
        "planned_at": _time(plan.planned_at),
        "earliest_finish": _time(plan.earliest_finish),
        "warnings": list(plan.warnings),
        "waves": [
            {
                "index": w.index,
                "name": w.name,
                "bake_after": _bake(w.bake_after),
                "regions": [
                    {"region": r.region, "stages": [_stage(s) for s in r.stages]} for r in w.regions
                ],
            }
            for w in plan.waves
        ],
    }


class _Reader:
    """Typed access to decoded JSON that names the path of a bad value."""

    def __init__(self, data: Any, path: str):
        self.data = data
        self.path = path
        if not isinstance(data, dict):
            raise PlanError(f"plan JSON {path or '$'}: expected an object")

    def _get(self, key: str, types: tuple[type, ...], optional: bool = False) -> Any:
        if key not in self.data:
            if optional:
                return None
            raise PlanError(f"plan JSON {self.path}.{key}: missing")
        value = self.data[key]
        if value is None and optional:
            return None
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise PlanError(f"plan JSON {self.path}.{key}: unexpected {type(value).__name__}")
        return value

    def text(self, key: str) -> str:
        value: str = self._get(key, (str,))
        return value

    def opt_str(self, key: str) -> str | None:
        value: str | None = self._get(key, (str,), optional=True)
        return value

    def integer(self, key: str) -> int:
        value: int = self._get(key, (int,))
        return value

    def opt_int(self, key: str) -> int | None:
        value: int | None = self._get(key, (int,), optional=True)
        return value

    def num(self, key: str) -> float:
        return float(self._get(key, (int, float)))

    def opt_num(self, key: str) -> float | None:
        value = self._get(key, (int, float), optional=True)
        return None if value is None else float(value)

    def time(self, key: str) -> datetime | None:
        text = self.opt_str(key)
        if text is None:
            return None
        try:
            return datetime.fromisoformat(text)
        except ValueError:
            raise PlanError(f"plan JSON {self.path}.{key}: invalid time {text!r}") from None

    def items(self, key: str) -> list[_Reader]:
        values: list[Any] = self._get(key, (list,))
        return [_Reader(v, f"{self.path}.{key}[{i}]") for i, v in enumerate(values)]

    def strings(self, key: str) -> tuple[str, ...]:
        values: list[Any] = self._get(key, (list,))
        if not all(isinstance(v, str) for v in values):
            raise PlanError(f"plan JSON {self.path}.{key}: expected strings")
        return tuple(values)

    def sub(self, key: str) -> _Reader:
        return _Reader(self._get(key, (dict,)), f"{self.path}.{key}")

    def opt_sub(self, key: str) -> _Reader | None:
        value = self._get(key, (dict,), optional=True)
        return None if value is None else _Reader(value, f"{self.path}.{key}")


def _read_bake(r: _Reader) -> BakeRequirement:
    # max_bake_s and on_insufficient are absent from journals written before they were
    # recorded: those bakes had no max_bake and held, the defaults.
    max_bake = r.opt_num("max_bake_s")
    text = r.opt_str("on_insufficient")
    try:
        on_insufficient = OnInsufficient(text) if text is not None else OnInsufficient.HOLD
    except ValueError:
        raise PlanError(f"plan JSON {r.path}.on_insufficient: unknown value {text!r}") from None
    return BakeRequirement(
        r.num("duration_s"),
        r.integer("min_datapoints"),
        r.opt_str("metric"),
        max_bake_s=max_bake,
        on_insufficient=on_insufficient,
    )


def _read_host(r: _Reader) -> HostRef:
    lb = r.opt_sub("lb")
    labels = r.sub("labels")
    if not all(isinstance(v, str) for v in labels.data.values()):
        raise PlanError(f"plan JSON {labels.path}: label values must be strings")
    return HostRef(
        name=r.text("name"),
        address=r.text("address"),
        region=r.text("region"),
        az=r.text("az"),
        cell=r.text("cell"),
        ssh_user=r.opt_str("ssh_user"),
        ssh_port=r.opt_int("ssh_port"),
        lb=None if lb is None else ServerRef(lb.text("lb"), lb.text("backend"), lb.text("server")),
        labels=tuple(sorted(labels.data.items())),
    )


def _read_stage(r: _Reader) -> Stage:
    try:
        kind = StageKind(r.text("kind"))
    except ValueError:
        raise PlanError(f"plan JSON {r.path}.kind: unknown stage kind") from None
    batching = r.sub("batching")
    return Stage(
        id=r.text("id"),
        kind=kind,
        region=r.text("region"),
        scope=r.text("scope"),
        hosts=tuple(_read_host(h) for h in r.items("hosts")),
        batching=Batching(
            batching.integer("max_out"),
            batching.integer("min_serving"),
            batching.integer("rollback_batch"),
        ),
        bake=_read_bake(r.sub("bake")),
        failure_budget=r.integer("failure_budget"),
        blockers=r.strings("blockers"),
        tests=r.strings("tests"),
        earliest_start=r.time("earliest_start"),
    )


def plan_from_dict(data: dict[str, Any]) -> Plan:
    """Decode :func:`plan_to_dict` output; raise PlanError naming the bad JSON path."""
    r = _Reader(data, "$")
    if r.integer("format") != FORMAT_VERSION:
        raise PlanError(f"plan JSON: unsupported format {data.get('format')!r}")
    return Plan(
        pipeline=r.text("pipeline"),
        service=r.text("service"),
        planned_at=r.time("planned_at"),
        earliest_finish=r.time("earliest_finish"),
        warnings=r.strings("warnings"),
        waves=tuple(
            Wave(
                index=w.integer("index"),
                name=w.text("name"),
                bake_after=_read_bake(w.sub("bake_after")),
                regions=tuple(
                    RegionPlan(
                        region=reg.text("region"),
                        stages=tuple(_read_stage(s) for s in reg.items("stages")),
                    )
                    for reg in w.items("regions")
                ),
            )
            for w in r.items("waves")
        ),
    )
