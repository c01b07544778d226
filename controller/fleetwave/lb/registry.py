"""Build a load-balancer driver from its settings, validating the driver's options.

Each driver module exposes ``from_options(name, options)``; validation errors are one
line naming the key path ``load_balancers.<name>.options.<key>``. Driver modules are
imported on demand so a pipeline without an SSH-reached balancer never imports asyncssh.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fleetwave.config.settings import LoadBalancerSettings
from fleetwave.errors import ConfigError
from fleetwave.lb.base import LoadBalancer

#: driver name -> module under fleetwave.lb that implements it.
DRIVERS: Mapping[str, str] = {
    "command": "fleetwave.lb.command",
    "haproxy": "fleetwave.lb.haproxy",
    "none": "fleetwave.lb.none",
}


def create_load_balancer(settings: LoadBalancerSettings) -> LoadBalancer:
    """The driver ``settings.driver`` configured with ``settings.options``."""
    module_name = DRIVERS.get(settings.driver)
    if module_name is None:
        raise ConfigError(
            f"unknown driver {settings.driver!r} (known: {', '.join(sorted(DRIVERS))})",
            key_path=f"load_balancers.{settings.name}.driver",
        )
    if not isinstance(settings.options, Mapping):
        raise ConfigError("must be a mapping", key_path=f"load_balancers.{settings.name}.options")
    module = importlib.import_module(module_name)
    driver: LoadBalancer = module.from_options(settings.name, settings.options)
    return driver


class Options:
    """Typed access to one driver's options; every error names the key path."""

    def __init__(
        self,
        lb_name: str,
        options: Mapping[str, Any],
        allowed: Sequence[str],
        *,
        prefix: str | None = None,
    ):
        self.lb_name = lb_name
        self.prefix = prefix or f"load_balancers.{lb_name}.options"
        self.raw = options
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            raise self.error(unknown[0], f"unknown option (known: {', '.join(sorted(allowed))})")

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(message, key_path=f"{self.prefix}.{key}")

    def string(self, key: str, default: str | None = None) -> str | None:
        value = self.raw.get(key, default)
        if value is not None and (not isinstance(value, str) or not value):
            raise self.error(key, "must be a non-empty string")
        return value

    def path(self, key: str) -> Path | None:
        value = self.string(key)
        return Path(value).expanduser() if value is not None else None

    def number(self, key: str, default: float, *, minimum: float = 0.0) -> float:
        value = self.raw.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(key, f"must be a number, got {value!r}")
        if not math.isfinite(value) or value < minimum:
            raise self.error(key, f"must be at least {minimum}, got {value!r}")
        return float(value)

    def integer(self, key: str, default: int, *, minimum: int, maximum: int) -> int:
        value = self.raw.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"must be an integer, got {value!r}")
        if not minimum <= value <= maximum:
            raise self.error(key, f"must be within {minimum}..{maximum}, got {value}")
        return value

    def argv(self, key: str, *, required: bool) -> tuple[str, ...] | None:
        value = self.raw.get(key)
        if value is None:
            if required:
                raise self.error(key, "is required: a command as a list [program, args...]")
            return None
        if (
            not isinstance(value, list | tuple)
            or not value
            or not all(isinstance(v, str) and v for v in value)
        ):
            raise self.error(key, "must be a non-empty list of strings [program, args...]")
        return tuple(value)

    def mapping(self, key: str) -> Mapping[str, Any] | None:
        value = self.raw.get(key)
        if value is not None and not isinstance(value, Mapping):
            raise self.error(key, "must be a mapping")
        return value
