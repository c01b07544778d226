"""The error hierarchy shared by the agent and the controller.

Every error fleetwave raises derives from :class:`FleetwaveError`. Leaf errors also
inherit the matching builtin where one fits, so callers can catch either.
Each error renders as one line that names what is wrong and where.
"""

from __future__ import annotations


class FleetwaveError(Exception):
    """Root of every error fleetwave raises on purpose."""

    #: Process exit status the CLIs use for this family of errors.
    exit_code: int = 1


class ConfigError(FleetwaveError, ValueError):
    """A configuration file (agent config, pipeline, topology) is invalid.

    ``source`` is ``file:line`` when the position is known; ``key_path`` is the dotted
    path of the offending key (``waves[2].regions``).
    """

    exit_code = 2

    def __init__(self, message: str, *, source: str | None = None, key_path: str | None = None):
        self.message = message
        self.source = source
        self.key_path = key_path
        where = ": ".join(part for part in (source, key_path) if part)
        super().__init__(f"{where}: {message}" if where else message)


class UsageError(FleetwaveError, ValueError):
    """A command was called with arguments that cannot work."""

    exit_code = 2


class PackageError(FleetwaveError):
    """A package is malformed, unsafe, or not acceptable to this agent."""

    exit_code = 3


class IntegrityError(PackageError):
    """A signature or checksum does not match.

    Never retried: a retry can only hide tampering or corruption.
    """

    exit_code = 4


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

    exit_code = 5


class ReleaseNotFoundError(StoreError, LookupError):
    """No installed release matches."""


class HookError(FleetwaveError):
    """A lifecycle hook failed or timed out."""

    exit_code = 6

    def __init__(self, hook: str, message: str, *, output_tail: str = ""):
        self.hook = hook
        self.output_tail = output_tail
        super().__init__(f"hook {hook!r} {message}")


class HealthCheckError(FleetwaveError):
    """Health checks did not pass before their deadline."""

    exit_code = 7


class RpcProtocolError(FleetwaveError):
    """The agent RPC stream broke its framing rules."""

    exit_code = 8


class LockedError(FleetwaveError):
    """Another process holds a lock this operation needs; the message names the holder."""

    exit_code = 9


class RolledBackError(FleetwaveError):
    """A new release failed ``validate`` or its health checks; the agent rolled itself back.

    ``result`` is the operation record (``rolled_back``, ``reason``, hooks, health).
    """

    exit_code = 10

    def __init__(self, message: str, *, result: dict[str, object] | None = None):
        self.result = result or {}
        super().__init__(message)
