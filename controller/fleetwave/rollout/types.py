"""The engine's output actions and the typed values it shares with its events: plain
frozen data.

Actions are what the engine wants done; the events it is fed (what the runner
observed) and their JSON codec are in :mod:`fleetwave.rollout.events`.

The values at the boundary are typed: :class:`Result`, :class:`FailureKind` and
:class:`HostOp` are string enums, gate targets are :class:`Target` and timers are
:class:`TimerKey`. Their JSON forms are the strings the journal always held
(``"rolled_back"``, ``"HostUnreachableError"``, ``"wave:0"``, ``"bake:w0/r1/s0"``), so
journals written before these types existed still replay.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from fleetwave_core.errors import FleetwaveError

# -- typed values -----------------------------------------------------------------------


class Result(enum.StrEnum):
    """How a deployment ended."""

    SUCCEEDED = "succeeded"
    SUCCEEDED_WITH_FAILURES = "succeeded_with_failures"  # failures inside the budget
    ROLLED_BACK = "rolled_back"
    ROLLBACK_INCOMPLETE = "rollback_incomplete"  # some hosts could not be rolled back

    @property
    def rolled_back(self) -> bool:
        """The deployment was rolled back (completely or not)."""
        return self in (Result.ROLLED_BACK, Result.ROLLBACK_INCOMPLETE)


class HostOp(enum.StrEnum):
    """The step a host action carries out (``HostFailed.step``)."""

    DRAIN = "drain"
    INSTALL = "install"
    RETURN = "return"
    ROLLBACK = "rollback"


class FailureKind(enum.StrEnum):
    """Why a host step failed. The values are the error class names the journal has
    always recorded (the controller's errors, and those an agent reports by name)."""

    #: The agent undid the install by itself (its validation or health failed).
    SELF_ROLLED_BACK = "self_rolled_back"
    # the controller's own errors
    LOAD_BALANCER = "LoadBalancerError"
    HOST_UNREACHABLE = "HostUnreachableError"
    HOST_KEY = "HostKeyError"
    AUTHENTICATION = "AuthenticationError"
    CALL_TIMEOUT = "AgentCallTimeoutError"
    SESSION_LOST = "SessionLostError"
    TRANSPORT = "TransportError"
    JOURNAL = "JournalError"
    #: An agent reported an error type this table does not name (the message does).
    REMOTE_AGENT = "RemoteAgentError"
    # errors an agent reports by their class name
    HEALTH_CHECK = "HealthCheckError"
    HOOK = "HookError"
    RELEASE_NOT_FOUND = "ReleaseNotFoundError"
    STORE = "StoreError"
    PROTOCOL = "ProtocolError"  # the agent's answer made no sense to the controller
    RPC_PROTOCOL = "RpcProtocolError"
    PACKAGE = "PackageError"
    INTEGRITY = "IntegrityError"
    SIGNATURE = "SignatureError"
    UNTRUSTED_KEY = "UntrustedKeyError"
    REVOKED_KEY = "RevokedKeyError"
    CHECKSUM = "ChecksumError"
    EXPIRED_PACKAGE = "ExpiredPackageError"
    UNSAFE_PACKAGE = "UnsafePackageError"
    SIZE_LIMIT = "SizeLimitError"
    IMMUTABLE_VERSION = "ImmutableVersionError"
    CONFIG = "ConfigError"
    USAGE = "UsageError"
    LOCKED = "LockedError"
    #: The host runs a release the journal does not expect; it is left alone.
    FOREIGN_RELEASE = "ForeignReleaseError"
    INTERNAL = "InternalError"
    #: Any other error of the fleetwave family.
    OTHER = "FleetwaveError"

    @classmethod
    def of_name(cls, name: str) -> FailureKind:
        """The kind an agent's error type name stands for; unknown names (a newer
        agent's errors, and those of old journals) are :attr:`REMOTE_AGENT`."""
        if name == "RolledBackError":
            return cls.SELF_ROLLED_BACK
        try:
            return cls(name)
        except ValueError:
            return cls.REMOTE_AGENT

    @classmethod
    def of_error(cls, exc: FleetwaveError) -> FailureKind:
        """The kind of a controller error: its nearest class that has a kind."""
        for klass in type(exc).__mro__:
            try:
                return cls(klass.__name__)
            except ValueError:
                continue
        return cls.OTHER


class TargetKind(enum.Enum):
    """What a gate judges: a stage, or the bake after a wave."""

    STAGE = "stage"
    WAVE = "wave"


_WAVE_PREFIX = "wave:"


@dataclass(frozen=True)
class Target:
    """A gate target: :meth:`stage` (by stage id) or :meth:`wave` (by ``Wave.index``).

    ``str(target)`` is its journal form: the stage id, or ``wave:<index>``.
    """

    kind: TargetKind
    stage_id: str = ""
    wave_index: int = 0

    @classmethod
    def stage(cls, stage_id: str) -> Target:
        return cls(TargetKind.STAGE, stage_id=stage_id)

    @classmethod
    def wave(cls, index: int) -> Target:
        return cls(TargetKind.WAVE, wave_index=index)

    @property
    def is_wave(self) -> bool:
        return self.kind is TargetKind.WAVE

    def __str__(self) -> str:
        return f"{_WAVE_PREFIX}{self.wave_index}" if self.is_wave else self.stage_id

    @classmethod
    def parse(cls, text: str) -> Target:
        """The target whose journal form is ``text``; ValueError if it is malformed."""
        if not isinstance(text, str) or not text:
            raise ValueError(f"bad gate target {text!r}")
        if text.startswith(_WAVE_PREFIX):
            digits = text[len(_WAVE_PREFIX) :]
            if not digits.isdigit():
                raise ValueError(f"bad wave target {text!r}")
            return cls.wave(int(digits))
        return cls.stage(text)


class TimerKind(enum.Enum):
    """What a timer waits for."""

    START = "start"  # a stage's earliest start time
    BLOCKERS = "blockers"  # the retry time of a waiting blocker gate
    BAKE = "bake"  # the retry time of a waiting bake gate
    WATCH = "watch"  # the end of the post-deploy watch


@dataclass(frozen=True)
class TimerKey:
    """Names a timer: what it waits for and for which target. ``str(key)`` is its
    journal form, ``<kind>:<target>`` (``bake:wave:0``, ``start:w0/r1/s0``)."""

    kind: TimerKind
    target: Target

    def __str__(self) -> str:
        return f"{self.kind.value}:{self.target}"

    @classmethod
    def parse(cls, text: str) -> TimerKey:
        """The key whose journal form is ``text``; ValueError if it is malformed."""
        if not isinstance(text, str):
            raise ValueError(f"bad timer key {text!r}")
        for kind in TimerKind:
            prefix = f"{kind.value}:"
            if text.startswith(prefix):
                return cls(kind, Target.parse(text[len(prefix) :]))
        raise ValueError(f"bad timer key {text!r}")


# -- gate verdicts ----------------------------------------------------------------------


VerdictKind = Literal["ok", "wait", "hold", "fail"]


@dataclass(frozen=True)
class Verdict:
    """A gate's answer and what it rests on.

    * ``ok``: pass;
    * ``wait``: not yet (a bake still running), ask again at ``retry_at``;
    * ``hold``: do not start and do not fail (a blocker in ALARM, a closed window, a
      bake still short of data at ``max_bake``), ask again at ``retry_at``;
    * ``fail``: roll back.

    ``inputs`` is the decision trail: one JSON-able record per input the gate looked
    at (an alarm's evidence, the window, the bake's time and counts, an override).
    """

    kind: VerdictKind
    reason: str = ""
    retry_at: float | None = None
    inputs: tuple[Mapping[str, Any], ...] = ()

    @classmethod
    def ok(cls, inputs: tuple[Mapping[str, Any], ...] = ()) -> Verdict:
        return cls("ok", inputs=inputs)

    @classmethod
    def wait(
        cls, reason: str, retry_at: float | None = None, inputs: tuple[Mapping[str, Any], ...] = ()
    ) -> Verdict:
        return cls("wait", reason, retry_at, inputs)

    @classmethod
    def hold(
        cls, reason: str, retry_at: float | None = None, inputs: tuple[Mapping[str, Any], ...] = ()
    ) -> Verdict:
        return cls("hold", reason, retry_at, inputs)

    @classmethod
    def fail(cls, reason: str, inputs: tuple[Mapping[str, Any], ...] = ()) -> Verdict:
        return cls("fail", reason, inputs=inputs)

    @property
    def waits(self) -> bool:
        """``wait`` or ``hold``: ask again later."""
        return self.kind in ("wait", "hold")


class AnomalyOutcome(enum.StrEnum):
    """The anomaly detector's answer for a stage (``fleetwave.watch.anomaly.Outcome``):
    the engine's own copy, since the engine never imports the watchers."""

    PASS = "pass"
    FAIL = "fail"  # roll back
    WAIT = "wait"  # insufficient data: the bake cannot pass yet, and nothing rolls back


class AlarmRole(enum.StrEnum):
    """Why the engine hears about an alarm: its ALARM rolls the deployment back."""

    ROLLBACK = "rollback"  # the pipeline's rollback_alarm, watched all along
    ONEBOX = "onebox"  # the onebox_alarm, judged only while a one-box stage runs


@dataclass(frozen=True)
class BeforeRelease:
    """The release a host ran before our install (``None``: it had none)."""

    release: str | None


@dataclass(frozen=True)
class HostFacts:
    """What resume learned about one host from its agent (and balancer)."""

    current: str | None  # the agent's current release, None if it has none or is unreachable
    before_known: bool = False  # the journal recorded the release before our install
    before: str | None = None
    #: The current release is this deployment's package (by package id). None in
    #: journals written before this field existed (they replay by the old rule).
    deployed: bool | None = None


# -- actions ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckBlockers:
    stage_id: str


@dataclass(frozen=True)
class ProbeStage:
    """Read every host's balancer state and agent health; answer with StageProbed."""

    stage_id: str


@dataclass(frozen=True)
class DrainHost:
    host: str
    stage_id: str
    rollback: bool = False


@dataclass(frozen=True)
class InstallOnHost:
    """Upload the package unless present, then install (health checks included)."""

    host: str
    stage_id: str


@dataclass(frozen=True)
class ReturnHost:
    """Check the agent's health, then put the host back in rotation. With ``restore``
    the host failed a step but should run a known-good release: ``expect`` (when set)
    must be its current release, or it stays out."""

    host: str
    stage_id: str
    rollback: bool = False
    restore: bool = False
    expect: str | None = None


@dataclass(frozen=True)
class RollbackHost:
    """Make ``to_release`` current again on the agent, locally (no upload)."""

    host: str
    stage_id: str
    to_release: str | None


@dataclass(frozen=True)
class CheckGate:
    target: Target
    window_start: float


@dataclass(frozen=True)
class WaitUntil:
    at: float
    key: TimerKey


@dataclass(frozen=True)
class Finish:
    result: Result
    failed: tuple[tuple[str, str], ...]  # (host, "step: kind: message")
    rollback_reason: str | None = None
    #: Hosts an operator held out of rotation at stage start: (host, why); untouched.
    skipped: tuple[tuple[str, str], ...] = ()
    #: Every host the deployment leaves out of rotation: (host, why). Failed hosts
    #: that went back on a known-good release are in ``failed`` but not here.
    out_of_rotation: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Stopped:
    """Not an engine action: the runner stopped before the deployment ended (SIGTERM,
    or an unexpected error). In-flight hosts finished their steps; the deployment is
    resumable. ``error`` is the exception that stopped it (None for a requested stop)."""

    reason: str
    state: Literal["interrupted", "aborted"]
    error: BaseException | None = None
    out_of_rotation: tuple[tuple[str, str], ...] = ()


Action = (
    CheckBlockers
    | ProbeStage
    | DrainHost
    | InstallOnHost
    | ReturnHost
    | RollbackHost
    | CheckGate
    | WaitUntil
    | Finish
)
