"""The agent's configuration as a command sees it: defaults, then the file (validated
once and cached while it is unchanged, see :mod:`config_cache`), then environment
variables, then flags. :mod:`config` defines the file's format."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from fleetwave_agent.config import (
    DEFAULT_CONFIG_PATH,
    ENV_CONFIG,
    ENV_ROOT,
    ENV_TRUST,
    AgentConfig,
    load_config_file,
)
from fleetwave_agent.config_cache import default_cache_dir, load_cached


def load_config(
    path: Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    root: Path | None = None,
    trust: Sequence[Path] = (),
) -> AgentConfig:
    """Load the agent config with precedence defaults < file < env < flags.

    ``path`` is the ``--config`` flag; ``root`` and ``trust`` are the ``--root`` and
    ``--trust`` flags (an empty ``trust`` keeps the lower layers' keys). The file's
    validated values come from the config cache while the file is unchanged; ``env``
    also decides where that cache is (``XDG_CACHE_HOME``/``HOME``, or none).
    """
    env = os.environ if env is None else env
    explicit = path or (Path(env[ENV_CONFIG]) if env.get(ENV_CONFIG) else None)
    file_path = explicit or DEFAULT_CONFIG_PATH
    if explicit is None and not file_path.exists():
        cfg = AgentConfig()
    else:
        cfg = load_cached(file_path, default_cache_dir(env), load_config_file)
    if env.get(ENV_ROOT):
        cfg = replace(cfg, root=Path(env[ENV_ROOT]))
    if env.get(ENV_TRUST):
        keys = tuple(Path(p) for p in env[ENV_TRUST].split(os.pathsep) if p)
        cfg = replace(cfg, trusted_keys=keys)
    if root is not None:
        cfg = replace(cfg, root=root)
    if trust:
        cfg = replace(cfg, trusted_keys=tuple(trust))
    return cfg
