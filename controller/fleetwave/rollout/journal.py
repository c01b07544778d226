"""The deployment journal: a crash-safe record of every deployment in SQLite.

One database per state dir (``<state_dir>/journal.db``), WAL mode with
``synchronous=FULL`` so a committed row survives a power cut. Each write is its own
commit, except inside :meth:`Journal.transaction`: the runner journals one decision (its
event, the intents of its actions, the state change) as one commit, one fsync, before
it carries any of the actions out (``docs/benchmarks.md`` has the figures). Two tables
matter:

* ``deployments``: one row per deployment (pipeline, environment, package, the plan
  as JSON, state, result, times).
* ``steps``: append-only. ``event`` rows are the engine's inputs, replayed in order
  by ``resume`` to rebuild its state; ``intent`` rows are written BEFORE an action is
  carried out and ``outcome`` rows after; ``fact`` rows hold what the runner learned
  mid-step (a host's release before our install); ``audit`` rows record operator
  actions such as a forced unlock.

``requests`` lets another process (``fleetwave rollback``) ask the running
controller to roll back; the runner polls it.

Test-only kill points (:class:`KillPoint`, ``FLEETWAVE_TEST_KILL_AT`` in the CLI) make
the journal SIGKILL its own process right after a given write: the N-th write (``17``),
or the N-th write of one kind of step (``intent:DrainHost``, ``outcome:InstallOnHost#2``),
so tests can crash the controller at every step and prove that ``resume`` recovers.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleetwave.errors import JournalError, UsageError
from fleetwave.rollout.events import Event, event_from_json, to_json
from fleetwave.rollout.types import Action

JOURNAL_FILE = "journal.db"
KILL_ENV = "FLEETWAVE_TEST_KILL_AT"  # test-only: see the module docstring


@dataclass(frozen=True)
class KillPoint:
    """Test-only: crash after the ``nth`` write matching ``kind``/``name`` (None: any)."""

    nth: int
    kind: str | None = None
    name: str | None = None

    @classmethod
    def parse(cls, text: str) -> KillPoint:
        """``17``, ``intent:DrainHost`` or ``outcome:InstallOnHost#2``."""
        text = text.strip()
        if text.isdigit() and int(text) > 0:
            return cls(nth=int(text))
        spec, _, nth = text.partition("#")
        kind, _, name = spec.partition(":")
        if not kind or not name or (nth and not (nth.isdigit() and int(nth) > 0)):
            raise UsageError(f"{KILL_ENV}={text!r}: use N, KIND:NAME or KIND:NAME#N")
        return cls(nth=int(nth or 1), kind=kind, name=name)

    def matches(self, kind: str | None, name: str | None) -> bool:
        return self.kind is None or (kind, name) == (self.kind, self.name)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS deployments (
    id TEXT PRIMARY KEY,
    pipeline TEXT NOT NULL,
    environment TEXT NOT NULL,
    package_id TEXT NOT NULL,
    package_path TEXT NOT NULL,
    plan_json TEXT NOT NULL,
    state TEXT NOT NULL,
    result TEXT,
    reason TEXT,
    started_at REAL NOT NULL,
    finished_at REAL,
    controller TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS deployments_by_pipeline ON deployments (pipeline, environment);
CREATE TABLE IF NOT EXISTS steps (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    deployment_id TEXT,
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    host TEXT,
    stage TEXT,
    name TEXT NOT NULL,
    payload TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS steps_by_deployment ON steps (deployment_id, seq);
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    deployment_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    reason TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    at REAL NOT NULL,
    consumed_at REAL
);
"""


@dataclass(frozen=True)
class DeploymentRow:
    id: str
    pipeline: str
    environment: str
    package_id: str
    package_path: str
    plan: dict[str, Any]
    state: str  # running | rolling_back | finished | aborted | interrupted | refused
    result: str | None
    reason: str | None
    started_at: float
    finished_at: float | None
    controller: str


@dataclass(frozen=True)
class StepRow:
    seq: int
    at: float
    kind: str
    host: str | None
    stage: str | None
    name: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class Request:
    id: int
    kind: str
    reason: str
    by: str


def _sigkill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class Journal:
    """One open journal. Not thread-safe: use it from the event loop's thread."""

    def __init__(
        self,
        path: Path,
        *,
        kill_at: int | KillPoint | None = None,
        on_kill: Callable[[], None] = _sigkill,
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        try:
            self._db = sqlite3.connect(path, timeout=10.0, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA busy_timeout=10000")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise JournalError(f"{path}: cannot open the journal: {exc}") from exc
        self._matching_writes = 0
        self._kill_at = KillPoint(nth=kill_at) if isinstance(kill_at, int) else kill_at
        self._on_kill = on_kill
        self._in_transaction = False
        self._kill_pending = False

    @classmethod
    def in_state_dir(cls, state_dir: Path, **kwargs: Any) -> Journal:
        return cls(state_dir / JOURNAL_FILE, **kwargs)

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Every write inside is one commit: all of them are durable, or none is.

        A test kill point reached inside fires after the commit, as a crash can only
        come between commits. Nested use joins the outer transaction.
        """
        if self._in_transaction:
            yield
            return
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise JournalError(f"{self.path}: write failed: {exc}") from exc
        self._in_transaction = True
        try:
            yield
        except BaseException:
            self._in_transaction = False
            self._kill_pending = False
            with suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            raise
        self._in_transaction = False
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._kill_pending = False
            with suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            raise JournalError(f"{self.path}: write failed: {exc}") from exc
        if self._kill_pending:
            self._kill_pending = False
            self._on_kill()

    @contextmanager
    def _write(
        self, kind: str | None = None, name: str | None = None
    ) -> Iterator[sqlite3.Connection]:
        if self._in_transaction:
            try:
                yield self._db
            except sqlite3.Error as exc:
                raise JournalError(f"{self.path}: write failed: {exc}") from exc
            self._kill_pending |= self._kill_due(kind, name)
            return
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise JournalError(f"{self.path}: write failed: {exc}") from exc
        if self._kill_due(kind, name):
            self._on_kill()

    def _kill_due(self, kind: str | None, name: str | None) -> bool:
        """Test-only: count a matching write; True when it is the kill point's N-th."""
        if self._kill_at is None or not self._kill_at.matches(kind, name):
            return False
        self._matching_writes += 1
        return self._matching_writes == self._kill_at.nth

    # -- deployments ------------------------------------------------------------------

    def create_deployment(
        self,
        *,
        deployment_id: str,
        pipeline: str,
        environment: str,
        package_id: str,
        package_path: str,
        plan: dict[str, Any],
        now: float,
        controller: str,
    ) -> None:
        with self._write() as db:
            db.execute(
                "INSERT INTO deployments (id, pipeline, environment, package_id, package_path,"
                " plan_json, state, started_at, controller) VALUES (?,?,?,?,?,?,?,?,?)",
                (
                    deployment_id,
                    pipeline,
                    environment,
                    package_id,
                    package_path,
                    json.dumps(plan, sort_keys=True),
                    "running",
                    now,
                    controller,
                ),
            )

    def set_state(
        self,
        deployment_id: str,
        state: str,
        *,
        now: float,
        result: str | None = None,
        reason: str | None = None,
        controller: str | None = None,
    ) -> None:
        finished = now if state in ("finished", "aborted", "refused") else None
        with self._write() as db:
            db.execute(
                "UPDATE deployments SET state=?, result=COALESCE(?, result),"
                " reason=COALESCE(?, reason), finished_at=?,"
                " controller=COALESCE(?, controller) WHERE id=?",
                (state, result, reason, finished, controller, deployment_id),
            )

    def deployment(self, deployment_id: str) -> DeploymentRow:
        row = self._db.execute("SELECT * FROM deployments WHERE id=?", (deployment_id,)).fetchone()
        if row is None:
            raise JournalError(f"{self.path}: no deployment {deployment_id!r}")
        return _deployment(row)

    def history(self, pipeline: str, environment: str, limit: int = 50) -> list[DeploymentRow]:
        """Deployments of one pipeline and environment, newest first."""
        rows = self._db.execute(
            "SELECT * FROM deployments WHERE pipeline=? AND environment=?"
            " ORDER BY started_at DESC, rowid DESC LIMIT ?",
            (pipeline, environment, limit),
        ).fetchall()
        return [_deployment(r) for r in rows]

    def latest(self, pipeline: str, environment: str) -> DeploymentRow | None:
        rows = self.history(pipeline, environment, limit=1)
        return rows[0] if rows else None

    # -- steps ------------------------------------------------------------------------

    def _step(
        self,
        deployment_id: str | None,
        now: float,
        kind: str,
        name: str,
        payload: dict[str, Any],
        host: str | None = None,
        stage: str | None = None,
    ) -> None:
        with self._write(kind, name) as db:
            db.execute(
                "INSERT INTO steps (deployment_id, at, kind, host, stage, name, payload)"
                " VALUES (?,?,?,?,?,?,?)",
                (deployment_id, now, kind, host, stage, name, json.dumps(payload)),
            )

    def record_event(self, deployment_id: str, event: Event, now: float) -> None:
        """An engine input; ``resume`` replays these in order."""
        data = to_json(event)
        host = data.get("host")
        self._step(deployment_id, now, "event", data["type"], data, host=host)

    def record_intent(self, deployment_id: str, action: Action, now: float) -> None:
        """Written before the action is carried out."""
        data = to_json(action)
        host = data.get("host")
        self._step(deployment_id, now, "intent", data["type"], data, host, data.get("stage_id"))

    def record_outcome(
        self, deployment_id: str, action: Action, ok: bool, detail: dict[str, Any], now: float
    ) -> None:
        data = to_json(action)
        payload = {"ok": ok, **detail}
        self._step(
            deployment_id,
            now,
            "outcome",
            data["type"],
            payload,
            data.get("host"),
            data.get("stage_id"),
        )

    def record_fact(
        self, deployment_id: str, host: str, name: str, value: dict[str, Any], now: float
    ) -> None:
        self._step(deployment_id, now, "fact", name, value, host=host)

    def audit(
        self, deployment_id: str | None, name: str, detail: dict[str, Any], now: float
    ) -> None:
        self._step(deployment_id, now, "audit", name, detail)

    def steps(self, deployment_id: str) -> list[StepRow]:
        rows = self._db.execute(
            "SELECT seq, at, kind, host, stage, name, payload FROM steps"
            " WHERE deployment_id=? ORDER BY seq",
            (deployment_id,),
        ).fetchall()
        return [StepRow(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6])) for r in rows]

    def events(self, deployment_id: str) -> list[tuple[float, Event]]:
        """The engine inputs of a deployment, in order, with the time each was decided."""
        out = []
        for step in self.steps(deployment_id):
            if step.kind == "event":
                try:
                    out.append((step.at, event_from_json(step.payload)))
                except (KeyError, TypeError, ValueError) as exc:
                    raise JournalError(
                        f"{self.path}: step {step.seq} of {deployment_id}: bad event: {exc}"
                    ) from exc
        return out

    def facts(self, deployment_id: str) -> dict[str, dict[str, dict[str, Any]]]:
        """Latest fact of each name per host: ``{host: {name: value}}``."""
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for step in self.steps(deployment_id):
            if step.kind == "fact" and step.host is not None:
                out.setdefault(step.host, {})[step.name] = step.payload
        return out

    # -- requests from other processes ----------------------------------------------------

    def request_rollback(self, deployment_id: str, reason: str, by: str, now: float) -> None:
        with self._write() as db:
            db.execute(
                "INSERT INTO requests (deployment_id, kind, reason, requested_by, at)"
                " VALUES (?,?,?,?,?)",
                (deployment_id, "rollback", reason, by, now),
            )

    def pending_requests(self, deployment_id: str) -> list[Request]:
        """Requests for a deployment not yet consumed, oldest first. The runner journals
        each one's event first and only then calls :meth:`consume_requests`, so a crash
        in between replays the request instead of losing it."""
        rows = self._db.execute(
            "SELECT id, kind, reason, requested_by FROM requests"
            " WHERE deployment_id=? AND consumed_at IS NULL ORDER BY id",
            (deployment_id,),
        ).fetchall()
        return [Request(r[0], r[1], r[2], r[3]) for r in rows]

    def consume_requests(self, ids: list[int], now: float) -> None:
        """Mark requests consumed (after their events were journalled)."""
        if ids:
            with self._write() as db:
                db.executemany(
                    "UPDATE requests SET consumed_at=? WHERE id=?", [(now, i) for i in ids]
                )

    def take_requests(self, deployment_id: str, now: float) -> list[Request]:
        """Pending requests for a deployment, marked consumed in the same transaction."""
        rows = self._db.execute(
            "SELECT id, kind, reason, requested_by FROM requests"
            " WHERE deployment_id=? AND consumed_at IS NULL ORDER BY id",
            (deployment_id,),
        ).fetchall()
        if not rows:
            return []
        with self._write() as db:
            db.executemany(
                "UPDATE requests SET consumed_at=? WHERE id=?", [(now, r[0]) for r in rows]
            )
        return [Request(r[0], r[1], r[2], r[3]) for r in rows]


def _deployment(row: tuple[Any, ...]) -> DeploymentRow:
    return DeploymentRow(
        id=row[0],
        pipeline=row[1],
        environment=row[2],
        package_id=row[3],
        package_path=row[4],
        plan=json.loads(row[5]),
        state=row[6],
        result=row[7],
        reason=row[8],
        started_at=row[9],
        finished_at=row[10],
        controller=row[11],
    )
