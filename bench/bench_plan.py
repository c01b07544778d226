"""Benchmark the planner and the pipeline loader; prints medians.

Run: ``python bench/bench_plan.py [--runs N]`` (with controller/ and agent/ importable,
e.g. from the venv). Targets: planning 10,000 hosts over 24 regions and 76 AZs < 1 s;
loading and validating examples/production/app.yaml (and its topology) < 200 ms.
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

from fleetwave.config.pipeline import OneboxPolicy, Pipeline, RollingPolicy, WaveSpec, load_pipeline
from fleetwave.config.schema import Quantity
from fleetwave.config.settings import DeploySettings
from fleetwave.config.spec import Unit
from fleetwave.config.topology import Region, Topology, TrafficClass
from fleetwave.planning.model import BakeRequirement, HostRef
from fleetwave.planning.planner import plan_pipeline

REPO = Path(__file__).resolve().parents[1]


def big_pipeline(hosts: int = 10_000) -> Pipeline:
    """24 regions (4 with 4 AZs, 20 with 3: 76 AZs), hosts spread evenly."""
    az_counts = [4] * 4 + [3] * 20
    per_az = hosts // sum(az_counts)
    extra = hosts - per_az * sum(az_counts)
    regions, n = [], 0
    for r, count in enumerate(az_counts):
        azs = tuple(f"r{r}-az{a}" for a in range(count))
        members = []
        for az in azs:
            take = per_az + (1 if extra > 0 else 0)
            extra -= 1 if extra > 0 else 0
            for _ in range(take):
                n += 1
                members.append(
                    HostRef(f"h{n}", f"10.{n // 65536}.{n // 256 % 256}.{n % 256}", f"r{r}", az)
                )
        regions.append(Region(f"r{r}", TrafficClass.LOW, "Europe/Dublin", azs, tuple(members)))
    names = [r.name for r in regions]
    groups = [names[:1], names[1:2], names[2:5], names[5:17], names[17:]]
    rolling = RollingPolicy(max_batch=Quantity(25, True), min_healthy=Quantity(66, True))
    waves = tuple(
        WaveSpec(
            i + 1,
            f"w{i + 1}",
            tuple(g),
            BakeRequirement(3600),
            BakeRequirement(3600),
            rolling,
            OneboxPolicy(),
        )
        for i, g in enumerate(groups)
    )
    return Pipeline(
        path=Path("bench.yaml"),
        name="bench",
        service="bench",
        environment="bench",
        topology=Topology(Path("bench-topology.yaml"), tuple(regions)),
        deploy=DeploySettings(),
        unit=Unit.AZ,
        rolling=rolling,
        onebox=OneboxPolicy(),
        waves=waves,
    )


def median_s(fn: object, runs: int) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    pipeline = big_pipeline()
    start = datetime(2025, 3, 7, 15, 0, tzinfo=UTC)
    hosts = len(pipeline.topology.hosts())
    azs = sum(len(r.azs) for r in pipeline.topology.regions)
    plan_s = median_s(lambda: plan_pipeline(pipeline, pipeline.topology, start), args.runs)
    print(
        f"plan {hosts} hosts / {len(pipeline.topology.regions)} regions / {azs} AZs: "
        f"median {plan_s * 1000:.1f} ms (target < 1000 ms, ratio {plan_s / 1.0:.2f})"
    )
    example = REPO / "examples" / "production" / "app.yaml"
    load_s = median_s(lambda: load_pipeline(example), args.runs)
    loaded = load_pipeline(example)
    print(
        f"load+validate {example.relative_to(REPO)} ({len(loaded.topology.hosts())} hosts): "
        f"median {load_s * 1000:.1f} ms (target < 200 ms, ratio {load_s / 0.2:.2f})"
    )


if __name__ == "__main__":
    main()
