"""What the SSH transport trusts and presents: known_hosts and host CAs, loaded once,
and the deploy key. Unreadable or empty trust anchors are ConfigErrors up front, so no
host is tried with nothing to verify it against."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import asyncssh

from fleetwave.errors import ConfigError


def load_known_hosts(path: Path | None, ca_keys: Sequence[Path] = ()) -> asyncssh.SSHKnownHosts:
    """Parse known_hosts once, adding an ``@cert-authority *`` line per CA key file.

    ``path=None`` means ``~/.ssh/known_hosts``. Raises ConfigError when no trust
    anchor can be loaded at all: strict checking with nothing to check against
    would fail every host later with a less helpful message.
    """
    explicit = path is not None
    kh_path = path if path is not None else Path("~/.ssh/known_hosts").expanduser()
    parts: list[str] = []
    try:
        parts.append(kh_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if explicit or not ca_keys:
            raise ConfigError(
                f"known_hosts file {kh_path} does not exist; host keys are always verified, "
                "so give ssh.known_hosts or ssh.ca_keys"
            ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read known_hosts file {kh_path}: {exc}") from None
    for ca_path in ca_keys:
        try:
            lines = [
                line.strip()
                for line in ca_path.read_text(encoding="utf-8").splitlines()
                if line.strip() and not line.lstrip().startswith("#")
            ]
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read host CA key {ca_path}: {exc}") from None
        if not lines:
            raise ConfigError(f"host CA key file {ca_path} holds no key")
        parts.extend(f"@cert-authority * {line}" for line in lines)
    try:
        return asyncssh.import_known_hosts("\n".join(parts) + "\n")
    except (ValueError, asyncssh.KeyImportError) as exc:
        raise ConfigError(f"invalid known_hosts data in {kh_path} or CA keys: {exc}") from None


def load_client_keys(identity: Path | None) -> list[asyncssh.SSHKey]:
    """The deploy key at ``identity``, or the usual ``~/.ssh`` keys that exist."""
    paths = (
        [identity]
        if identity is not None
        else [Path("~/.ssh", name).expanduser() for name in ("id_ed25519", "id_ecdsa", "id_rsa")]
    )
    keys: list[asyncssh.SSHKey] = []
    for key_path in paths:
        if identity is None and not key_path.exists():
            continue
        try:
            keys.append(asyncssh.read_private_key(key_path))
        except (OSError, asyncssh.KeyImportError, ValueError) as exc:
            raise ConfigError(f"cannot load SSH identity {key_path}: {exc}") from None
    return keys
