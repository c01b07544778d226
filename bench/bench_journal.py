"""Benchmark the deployment journal's write path at 1,000 hosts; prints medians.

Run: ``python bench/bench_journal.py [--hosts N] [--runs N] [--dir DIR]`` from the
repository root (controller/, agent/ and tests/ importable, e.g. from the venv). The
journal lives in ``--dir`` (default: a temporary directory), so the figures are those of
that file system's fsync.

Two measurements, every mode in the same run, so they compare with each other:

1. **The real runner** (``rollout/runner.py`` with the in-memory fleet and balancer of
   ``tests/engine/fakes.py``) deploying N hosts in ten AZ stages, 25 out at a time
   (the engine's own work per decision is part of this figure). Modes:
   ``per-row`` — every row its own commit (the code before the change: the runner's
   ``transaction()`` turned into a no-op); ``per-decision`` — the shipped code: a
   decision's event, state change and intents in one commit.
2. **The write path alone**, shaped like the runner (a decision writes its event and one
   intent, then its action writes an outcome), with N hosts x 3 steps, 100 in flight.
   Modes: ``per-row``, ``per-decision``, and ``writer-thread``: rows go to a thread with
   its own connection that commits everything queued in one transaction (group commit);
   the event loop awaits the commit before it starts the action, so it is as durable as
   the others, and other hosts' work runs during the fsync.

Events per second = engine decisions (journalled events) / wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import queue
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for p in (REPO / "controller", REPO / "agent", REPO):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from tests.engine.fakes import FakeBalancer, FakeClock, FakeFleet, start_deployment  # noqa: E402
from tests.engine.sim import make_plan  # noqa: E402

from fleetwave.rollout.gates import Gates  # noqa: E402
from fleetwave.rollout.journal import Journal  # noqa: E402
from fleetwave.rollout.runner import Runner  # noqa: E402
from fleetwave.rollout.types import Finish  # noqa: E402

IN_FLIGHT = 100  # the write path: hosts with a step in flight
STAGES = 10  # the runner: AZ stages of the plan ...
STAGE_IN_FLIGHT = 25  # ... and hosts out at once in each


class PerRowJournal(Journal):
    """The journal as it was: ``transaction()`` adds nothing, every row commits alone."""

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        yield


# -- 1. the real runner ------------------------------------------------------------------


def run_runner(mode: str, hosts: int, work: Path) -> float:
    """Events per second of one deployment of ``hosts`` hosts."""
    path = work / f"runner-{mode}-{time.monotonic_ns()}.db"
    journal = (PerRowJournal if mode == "per-row" else Journal)(path)
    # Ten AZ stages, as a fleet of this size is split: the engine's own per-decision
    # work grows with the stage, and one 1,000-host stage would measure that instead.
    stages = [hosts // STAGES] * STAGES
    stages[-1] += hosts - sum(stages)
    plan = make_plan([[stages]], max_out=STAGE_IN_FLIGHT, min_serving=0)
    pkg = "c" * 64
    runner = Runner(
        start_deployment(journal, plan, "bench", pkg),
        journal=journal,
        transport=FakeFleet(plan.hosts()),
        balancers={"lb": FakeBalancer()},
        gates=Gates(),
        clock=FakeClock(),
        request_poll_s=None,
    )
    start = time.perf_counter()
    finish = asyncio.run(runner.run())
    elapsed = time.perf_counter() - start
    assert isinstance(finish, Finish), finish
    assert finish.result == "succeeded", finish
    events = len(journal.events("bench"))
    journal.close()
    return events / elapsed


# -- 2. the write path alone -------------------------------------------------------------

_INSERT = (
    "INSERT INTO steps (deployment_id, at, kind, host, stage, name, payload) VALUES (?,?,?,?,?,?,?)"
)
Row = tuple[str, float, str, str | None, str | None, str, str]


def _row(kind: str, host: str, name: str) -> Row:
    return ("bench", time.time(), kind, host, None, name, json.dumps({"host": host}))


class SyncWriter:
    """Writes on the event loop: one commit per row, or one per batch."""

    def __init__(self, journal: Journal, per_row: bool) -> None:
        self.journal = journal
        self.per_row = per_row

    async def commit(self, rows: list[Row]) -> None:
        db = self.journal._db
        if self.per_row:
            for row in rows:
                db.execute("BEGIN IMMEDIATE")
                db.execute(_INSERT, row)
                db.execute("COMMIT")
        else:
            db.execute("BEGIN IMMEDIATE")
            db.executemany(_INSERT, rows)
            db.execute("COMMIT")

    def close(self) -> None:
        return None


class ThreadWriter:
    """Rows go to a writer thread; it commits everything queued in one transaction and
    resolves each batch's future once it is durable."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._queue: queue.Queue[tuple[list[Row], asyncio.Future[None]] | None] = queue.Queue()
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="journal-writer", daemon=True)
        self._thread.start()

    async def commit(self, rows: list[Row]) -> None:
        future: asyncio.Future[None] = self._loop.create_future()
        self._queue.put((rows, future))
        await future

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            with contextlib.suppress(queue.Empty):
                while len(batch) < 1000:
                    item = self._queue.get_nowait()
                    if item is None:
                        self._queue.put(None)
                        break
                    batch.append(item)
            self._db.execute("BEGIN IMMEDIATE")
            for rows, _ in batch:
                self._db.executemany(_INSERT, rows)
            self._db.execute("COMMIT")
            for _, future in batch:
                self._loop.call_soon_threadsafe(_resolve, future)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)
        self._db.close()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def _write_path(writer: Any, hosts: int) -> int:
    """The runner's shape: a loop decides (event + intent), tasks act (outcome)."""
    events: asyncio.Queue[tuple[str, int]] = asyncio.Queue()
    steps = ("DrainHost", "InstallOnHost", "ReturnHost")
    tasks: set[asyncio.Task[None]] = set()
    pending = [f"h{i}" for i in range(hosts)]
    decisions = 0

    async def act(host: str, step: int) -> None:
        await asyncio.sleep(0)  # the action itself (an RPC in real life)
        await writer.commit([_row("outcome", host, steps[step])])
        events.put_nowait((host, step + 1))

    def start(host: str) -> None:
        events.put_nowait((host, -1))

    for host in pending[:IN_FLIGHT]:
        start(host)
    queued = IN_FLIGHT
    done = 0
    while done < hosts:
        host, step = await events.get()
        decisions += 1
        if step >= len(steps):
            await writer.commit([_row("event", host, "HostReturned")])
            done += 1
            if queued < hosts:
                start(pending[queued])
                queued += 1
            continue
        nxt = max(step, 0)
        await writer.commit([_row("event", host, "E"), _row("intent", host, steps[nxt])])
        task = asyncio.create_task(act(host, nxt))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    return decisions


def run_write_path(mode: str, hosts: int, work: Path) -> float:
    path = work / f"path-{mode}-{time.monotonic_ns()}.db"
    journal = Journal(path)  # creates the schema

    async def main() -> float:
        writer: Any
        if mode == "writer-thread":
            writer = ThreadWriter(path)
        else:
            writer = SyncWriter(journal, per_row=mode == "per-row")
        start = time.perf_counter()
        decisions = await _write_path(writer, hosts)
        elapsed = time.perf_counter() - start
        writer.close()
        return decisions / elapsed

    try:
        return asyncio.run(main())
    finally:
        journal.close()


# -- report ------------------------------------------------------------------------------


def _measure(fn: Any, modes: tuple[str, ...], hosts: int, work: Path, runs: int) -> None:
    """Run the modes in turn, ``runs`` rounds (interleaved: a noisy minute on a shared
    machine hits every mode alike), then print each mode's median."""
    figures: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(runs):
        for mode in modes:
            figures[mode].append(fn(mode, hosts, work))
    base = statistics.median(figures[modes[0]])
    for mode in modes:
        med = statistics.median(figures[mode])
        runs_text = " ".join(f"{f:.0f}" for f in figures[mode])
        print(f"  {mode:<14} {med:8.0f}   x{med / base:.2f}   runs: {runs_text}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--dir", type=Path, help="where the journals go (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="bench-journal-") as tmp:
        work = Path(tmp)
        print(f"{args.hosts} hosts, {IN_FLIGHT} in flight, {args.runs} runs, journal in {work}")
        print("\n1. the real runner (events/s, median of runs)")
        _measure(run_runner, ("per-row", "per-decision"), args.hosts, work, args.runs)
        print("\n2. the write path alone (events/s, median of runs)")
        modes = ("per-row", "per-decision", "writer-thread")
        _measure(run_write_path, modes, args.hosts, work, args.runs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
