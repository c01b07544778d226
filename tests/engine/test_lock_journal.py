"""The deployment lock across two real processes, and the journal's contracts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fleetwave.errors import JournalError, LockedError, UsageError
from fleetwave.rollout.events import Event, HostFailed, RollbackRequested, StageProbed
from fleetwave.rollout.journal import Journal, KillPoint
from fleetwave.rollout.lock import DeploymentLock, TakeoverReason
from fleetwave.rollout.types import FailureKind, HostOp

pytestmark = pytest.mark.integration

HOLDER = """
import sys, time
from pathlib import Path
from fleetwave.rollout.lock import DeploymentLock, TakeoverReason
lock = DeploymentLock(Path(sys.argv[1]), "web", "prod")
lock.acquire(now=time.time(), deployment_id="dep-1")
print(lock.holder.lock_id, flush=True)
sys.stdin.readline()
lock.release()
"""


def _holder(state: Path) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(["controller", "agent"])}
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(state)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.stdout is not None
    lock_id = proc.stdout.readline().strip()
    assert lock_id, "holder process did not take the lock"
    return proc, lock_id


def _close(proc: subprocess.Popen[str]) -> None:
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            stream.close()


def test_second_controller_is_refused_with_the_holder_named(tmp_path: Path) -> None:
    proc, lock_id = _holder(tmp_path)
    try:
        with pytest.raises(
            LockedError,
            match=rf"lock {lock_id} held by .* pid {proc.pid} "
            r"for deployment dep-1",
        ):
            DeploymentLock(tmp_path, "web", "prod").acquire(now=0.0)
        # another pipeline or environment is independent
        other = DeploymentLock(tmp_path, "web", "staging")
        other.acquire(now=0.0)
        other.release()
    finally:
        assert proc.stdin is not None
        proc.stdin.write("\n")
        proc.stdin.flush()
        proc.wait(timeout=10)
        _close(proc)
    lock = DeploymentLock(tmp_path, "web", "prod")
    assert lock.acquire(now=0.0) is None  # released cleanly: free again
    lock.release()


def test_stale_lock_of_this_machine_is_taken_over(tmp_path: Path) -> None:
    proc, lock_id = _holder(tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    _close(proc)
    lock = DeploymentLock(tmp_path, "web", "prod")
    cleared = lock.acquire(now=5.0)  # no --force-unlock: the free flock proves it dead
    assert cleared is not None
    assert cleared.reason is TakeoverReason.DEAD_HOLDER
    assert (cleared.holder.lock_id, cleared.holder.pid) == (lock_id, proc.pid)
    assert lock.holder is not None
    assert lock.holder.pid == os.getpid()
    lock.release()


def _foreign_record(lock: DeploymentLock) -> None:
    lock.path.parent.mkdir(parents=True)
    record = {
        "lock_id": "abc",
        "host": "elsewhere",
        "pid": 1,
        "user": "u",
        "deployment_id": "dep-9",
        "since": 0.0,
    }
    lock.path.write_text(json.dumps(record))


def test_record_from_another_machine_needs_force_unlock_with_its_id(tmp_path: Path) -> None:
    lock = DeploymentLock(tmp_path, "web", "prod")
    _foreign_record(lock)
    with pytest.raises(LockedError, match=r"another machine.*--force-unlock abc"):
        lock.acquire(now=0.0)
    with pytest.raises(LockedError, match="stale"):
        lock.acquire(now=0.0, force_unlock="not-the-id")
    cleared = lock.acquire(now=5.0, force_unlock="abc")
    assert cleared is not None
    assert cleared.reason is TakeoverReason.FORCED
    assert cleared.holder.host == "elsewhere"
    lock.release()


def test_cli_audits_a_takeover_in_the_journal_and_the_event_log(tmp_path: Path) -> None:
    import argparse

    from fleetwave.cli.deploy import _Context, _locked

    proc, lock_id = _holder(tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    _close(proc)

    class _Pipeline:
        name, environment = "web", "prod"

    j = Journal(tmp_path / "journal.db")
    ctx = _Context(_Pipeline(), tmp_path, j)
    with _locked(ctx, argparse.Namespace(force_unlock=None), "dep-2"):
        pass
    audits = [s for s in j.steps("dep-1") if s.kind == "audit"]
    assert [a.name for a in audits] == ["stale_lock_takeover"]
    assert audits[0].payload["cleared"]["lock_id"] == lock_id
    log = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert any("took over the stale lock " + lock_id in e.get("message", "") for e in log)
    j.close()


def test_journal_round_trips_events_and_orders_steps(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.db")
    j.create_deployment(
        deployment_id="d",
        pipeline="p",
        environment="e",
        package_id="x",
        package_path="/x",
        plan={"a": 1},
        now=1.0,
        controller="c",
    )
    events: list[Event] = [
        StageProbed("s", frozenset({"h2", "h1"})),
        HostFailed("h1", HostOp.INSTALL, FailureKind.STORE, "disk full"),
        RollbackRequested("why", "me"),
    ]
    for i, e in enumerate(events):
        j.record_event("d", e, float(i))
    j.record_fact("d", "h1", "before", {"release": "v1"}, 9.0)
    assert [e for _, e in j.events("d")] == events
    assert j.facts("d") == {"h1": {"before": {"release": "v1"}}}
    assert j.deployment("d").plan == {"a": 1}
    j.request_rollback("d", "bad", "bob", 3.0)
    assert [(r.reason, r.by) for r in j.take_requests("d", 4.0)] == [("bad", "bob")]
    assert j.take_requests("d", 5.0) == []
    with pytest.raises(JournalError, match="no deployment 'nope'"):
        j.deployment("nope")
    mode = j._db.execute("PRAGMA journal_mode").fetchone()[0]
    sync = j._db.execute("PRAGMA synchronous").fetchone()[0]
    assert (mode, sync) == ("wal", 2)  # 2 = FULL
    j.close()


@pytest.mark.parametrize(
    ("text", "point"),
    [
        ("17", KillPoint(nth=17)),
        ("intent:DrainHost", KillPoint(nth=1, kind="intent", name="DrainHost")),
        ("outcome:InstallOnHost#2", KillPoint(nth=2, kind="outcome", name="InstallOnHost")),
    ],
)
def test_kill_points_parse(text: str, point: KillPoint) -> None:
    assert KillPoint.parse(text) == point


@pytest.mark.parametrize("text", ["0", "", "intent", "intent:", ":DrainHost", "fact:before#0"])
def test_bad_kill_points_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError, match="FLEETWAVE_TEST_KILL_AT"):
        KillPoint.parse(text)


def test_named_kill_point_fires_on_the_nth_matching_write_only(tmp_path: Path) -> None:
    fired: list[int] = []
    point = KillPoint.parse("fact:before#2")
    j = Journal(tmp_path / "j.db", kill_at=point, on_kill=lambda: fired.append(1))
    j.record_event("d", RollbackRequested("why", "me"), 1.0)
    j.record_fact("d", "h1", "before", {"release": "v1"}, 2.0)
    j.record_fact("d", "h1", "other", {}, 3.0)
    assert fired == []
    j.record_fact("d", "h2", "before", {"release": "v1"}, 4.0)
    assert fired == [1]
    j.record_fact("d", "h3", "before", {"release": "v1"}, 5.0)
    assert fired == [1]


def _journal_with_deployment(path: Path, **kwargs: object) -> Journal:
    j = Journal(path, **kwargs)  # type: ignore[arg-type]
    j.create_deployment(
        deployment_id="d",
        pipeline="p",
        environment="e",
        package_id="x",
        package_path="/x",
        plan={},
        now=0.0,
        controller="c",
    )
    return j


def test_a_transaction_commits_all_or_nothing(tmp_path: Path) -> None:
    j = _journal_with_deployment(tmp_path / "j.db")

    def failing_decision() -> None:
        with j.transaction():
            j.record_event("d", RollbackRequested("a", "b"), 1.0)
            raise RuntimeError("decide failed")

    with pytest.raises(RuntimeError):
        failing_decision()
    assert j.steps("d") == []
    with j.transaction():
        j.record_event("d", RollbackRequested("a", "b"), 1.0)
        with j.transaction():  # nested: joins the outer one
            j.record_fact("d", "h1", "before", {"release": "v1"}, 1.0)
        # another connection sees nothing before the commit
        other = Journal(tmp_path / "j.db")
        assert other.steps("d") == []
        other.close()
    assert [s.kind for s in j.steps("d")] == ["event", "fact"]


class _Killed(Exception):
    pass


def _raise_killed() -> None:
    raise _Killed


def test_a_kill_point_inside_a_transaction_fires_after_its_commit(tmp_path: Path) -> None:
    j = _journal_with_deployment(
        tmp_path / "j.db", kill_at=KillPoint(1, "event", "RollbackRequested"), on_kill=_raise_killed
    )

    def decision() -> None:
        with j.transaction():
            j.record_event("d", RollbackRequested("a", "b"), 1.0)
            j.record_fact("d", "h1", "before", {"release": "v1"}, 1.0)

    with pytest.raises(_Killed):
        decision()
    assert [s.kind for s in j.steps("d")] == ["event", "fact"]  # both durable
