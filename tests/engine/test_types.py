"""The typed values at the engine's boundary: their journal forms are the strings the
journal always held, so old journals replay; bad forms fail loudly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fleetwave.cli.deploy import EXIT_ABORTED, EXIT_BY_RESULT
from fleetwave.errors import HostUnreachableError, JournalError, TransportError
from fleetwave.rollout import (
    HOST_TRANSITIONS,
    STAGE_TRANSITIONS,
    FailureKind,
    HostPhase,
    Result,
    StagePhase,
    Target,
    TargetKind,
    TimerKey,
    TimerKind,
)
from fleetwave.rollout.events import GateResult, HostFailed, TimerElapsed, event_from_json, to_json
from fleetwave.rollout.journal import Journal
from fleetwave.rollout.types import HostOp
from fleetwave_core.exitcodes import ExitCode

pytestmark = pytest.mark.unit

# Events as journals written before the typed values existed hold them.
OLD_EVENTS: list[dict[str, Any]] = [
    {
        "type": "GateResult",
        "target": "wave:3",
        "purpose": "bake",
        "verdict": {"kind": "wait", "reason": "baking", "retry_at": 5.0},
    },
    {
        "type": "GateResult",
        "target": "w0/eu/az1",
        "purpose": "blockers",
        "verdict": {"kind": "ok", "reason": "", "retry_at": None},
    },
    {"type": "TimerElapsed", "key": "bake:wave:0"},
    {"type": "TimerElapsed", "key": "start:w1/us/onebox"},
    {"type": "TimerElapsed", "key": "blockers:w0/eu/az1"},
    {
        "type": "HostFailed",
        "host": "h1",
        "step": "install",
        "kind": "self_rolled_back",
        "message": "health",
        "before": {"release": "v1"},
    },
    {
        "type": "HostFailed",
        "host": "h2",
        "step": "drain",
        "kind": "LoadBalancerError",
        "message": "boom",
        "before": None,
    },
]


@pytest.mark.parametrize("data", OLD_EVENTS, ids=lambda d: f"{d['type']}")
def test_old_journal_forms_decode_and_encode_back_unchanged(data: dict[str, Any]) -> None:
    assert to_json(event_from_json(data)) == data


def test_decoded_values_are_typed() -> None:
    gate = event_from_json(OLD_EVENTS[0])
    assert isinstance(gate, GateResult)
    assert gate.target == Target.wave(3)
    assert gate.target.kind is TargetKind.WAVE
    timer = event_from_json(OLD_EVENTS[3])
    assert isinstance(timer, TimerElapsed)
    assert timer.key == TimerKey(TimerKind.START, Target.stage("w1/us/onebox"))
    failed = event_from_json(OLD_EVENTS[5])
    assert isinstance(failed, HostFailed)
    assert (failed.step, failed.kind) == (HostOp.INSTALL, FailureKind.SELF_ROLLED_BACK)


def test_an_unknown_agent_error_name_is_a_remote_agent_failure() -> None:
    data = {**OLD_EVENTS[6], "kind": "ErrorOfANewerAgent"}
    failed = event_from_json(data)
    assert isinstance(failed, HostFailed)
    assert failed.kind is FailureKind.REMOTE_AGENT
    assert FailureKind.of_name("RolledBackError") is FailureKind.SELF_ROLLED_BACK
    assert FailureKind.of_name("HookError") is FailureKind.HOOK


def test_controller_errors_map_to_their_nearest_kind() -> None:
    class OddTransportError(TransportError):
        pass

    assert FailureKind.of_error(HostUnreachableError("h", "x")) is FailureKind.HOST_UNREACHABLE
    assert FailureKind.of_error(OddTransportError("h", "x")) is FailureKind.TRANSPORT


@pytest.mark.parametrize(
    "text", ["", "wave:", "wave:x", "wave:-1"], ids=["empty", "no-index", "letters", "negative"]
)
def test_malformed_targets_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="target"):
        Target.parse(text)


@pytest.mark.parametrize("text", ["nope:w0/a", "bake", "bake:", "start:wave:x"])
def test_malformed_timer_keys_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="bad"):
        TimerKey.parse(text)


def test_a_bad_journalled_timer_key_names_the_step(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.db")
    j.record_event("d", TimerElapsed(TimerKey(TimerKind.BAKE, Target.wave(0))), 1.0)
    j._db.execute("UPDATE steps SET payload=? WHERE seq=1", ('{"type":"TimerElapsed","key":"x"}',))
    with pytest.raises(JournalError, match="step 1 of d: bad event"):
        j.events("d")


def test_every_result_has_its_exit_code() -> None:
    assert set(EXIT_BY_RESULT) == set(Result)
    assert EXIT_BY_RESULT[Result.SUCCEEDED] == EXIT_BY_RESULT[Result.SUCCEEDED_WITH_FAILURES] == 0
    assert EXIT_BY_RESULT[Result.ROLLED_BACK] is ExitCode.ROLLED_BACK
    assert int(ExitCode.ROLLED_BACK) == 20
    assert EXIT_BY_RESULT[Result.ROLLBACK_INCOMPLETE] is ExitCode.ROLLBACK_INCOMPLETE
    assert int(ExitCode.ROLLBACK_INCOMPLETE) == 21
    assert EXIT_ABORTED is ExitCode.INTERRUPTED
    assert int(ExitCode.INTERRUPTED) == 130


def test_every_phase_but_the_last_can_be_left() -> None:
    """Each table leads out of every non-final phase (a phase with no exit would stall)."""
    stage_exits = {p for (p, _), nxt in STAGE_TRANSITIONS.items() if nxt is not p}
    assert stage_exits == set(StagePhase) - {StagePhase.DONE}
    host_exits = {p for (p, _, _), nxt in HOST_TRANSITIONS.items() if nxt is not p}
    # RB_FAILED is left by a continued rollback (RollbackContinued)
    final = {HostPhase.ROLLED_BACK, HostPhase.SKIPPED, HostPhase.RESTORED}
    assert host_exits == set(HostPhase) - final
