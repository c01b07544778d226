"""The agent's errors. They share the root :class:`FleetwaveError` and the exit-code
table with the controller (:mod:`fleetwave_core`); the shared ones are re-exported here.
"""

from __future__ import annotations

from fleetwave_core.errors import ConfigError, FleetwaveError, LockedError, UsageError
from fleetwave_core.exitcodes import ExitCode

__all__ = ["ConfigError", "FleetwaveError", "LockedError", "UsageError"]


class PackageError(FleetwaveError):
    """A package is malformed, unsafe, or not acceptable to this agent."""

    exit_code = ExitCode.PACKAGE_REFUSED


class IntegrityError(PackageError):
    """A signature or checksum does not match.

    Never retried: a retry can only hide tampering or corruption.
    """

    exit_code = ExitCode.INTEGRITY


class SignatureError(IntegrityError):
    """The signature is invalid, or made by a key that is not trusted."""


class UntrustedKeyError(SignatureError):
    """The package was signed by a key that is not in the keyring."""


class RevokedKeyError(SignatureError):
    """The package was signed by a key that has been revoked."""


class ChecksumError(IntegrityError):
    """A digest or size differs from what the signed manifest says."""


class ExpiredPackageError(PackageError):
    """The package's signed expiry time has passed."""


class UnsafePackageError(PackageError):
    """The payload holds something the agent refuses to extract (paths, links, devices)."""


class SizeLimitError(PackageError):
    """A package, its payload or its member count exceeds a configured cap."""


class ImmutableVersionError(PackageError):
    """A name and version already seen with another digest: versions are immutable."""


class StoreError(FleetwaveError, OSError):
    """The release store cannot do what was asked (missing release, disk full, ...)."""

    exit_code = ExitCode.STORE


class ReleaseNotFoundError(StoreError, LookupError):
    """No installed release matches."""


class KnownBadReleaseError(StoreError):
    """The release an operation would activate is known bad; only ``force`` overrides."""

    exit_code = ExitCode.KNOWN_BAD_RELEASE


class LeaseError(FleetwaveError):
    """The host's lease does not allow this (held by another deployment, or lost)."""

    exit_code = ExitCode.LEASE_HELD


class LeaseHeldError(LeaseError):
    """Another deployment holds the host's lease; the message names it and its expiry.

    ``holder`` is the lease as ``Lease.to_dict`` returns it.
    """

    def __init__(self, message: str, *, holder: dict[str, object]):
        self.holder = holder
        super().__init__(message)


class LeaseLostError(LeaseError):
    """A renewal or release of a lease this deployment does not hold (any more)."""


class HookError(FleetwaveError):
    """A lifecycle hook failed or timed out."""

    exit_code = ExitCode.HOOK

    def __init__(self, hook: str, message: str, *, output_tail: str = ""):
        self.hook = hook
        self.output_tail = output_tail
        super().__init__(f"hook {hook!r} {message}")


class HealthCheckError(FleetwaveError):
    """Health checks did not pass before their deadline."""

    exit_code = ExitCode.HEALTH


class RpcProtocolError(FleetwaveError):
    """The agent RPC stream broke its framing rules."""

    exit_code = ExitCode.RPC_PROTOCOL


class RolledBackError(FleetwaveError):
    """A new release failed ``validate`` or its health checks; the agent rolled itself back.

    ``result`` is the operation record (``rolled_back``, ``reason``, hooks, health).
    """

    exit_code = ExitCode.AGENT_ROLLED_BACK

    def __init__(self, message: str, *, result: dict[str, object] | None = None):
        self.result = result or {}
        super().__init__(message)
