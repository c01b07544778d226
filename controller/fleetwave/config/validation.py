"""``fleetwave validate``: every error of a pipeline and its topology, not just the first.

Three passes, each run only when the one before found nothing, because each needs the
one before's shapes to hold:

1. the field checks (the :mod:`schema` DSL in collecting mode) of the merged pipeline
   and of its topology file: every unknown key, wrong type and bad value, up to a cap;
2. the loader's cross-checks (regions named by waves, alarms named by blockers, ...),
   which stop at the first;
3. the files the pipeline names: the SSH identity, known_hosts and host CA keys must
   exist (they are read only when a deployment connects, too late to learn of a typo).

Messages are the loaders' own; this module only decides how many are shown.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleetwave.config.pipeline import Pipeline, load_merged, load_pipeline, resolve_path
from fleetwave.config.schema import Locator, TooManyErrors
from fleetwave.config.spec import PIPELINE_SPEC
from fleetwave.config.topology import TOPOLOGY_SPEC
from fleetwave_core.errors import ConfigError
from fleetwave_core.yamlsrc import load_yaml

DEFAULT_MAX_ERRORS = 50


@dataclass(frozen=True)
class Problem:
    """One error as ``validate --json`` reports it."""

    file: str
    line: int | None
    key_path: str | None
    message: str

    @classmethod
    def of(cls, error: ConfigError) -> Problem:
        """Split a ConfigError's ``file:line`` source into its parts."""
        source = error.source or ""
        file, _, line = source.rpartition(":")
        if not (file and line.isdigit()):
            file, line = source, ""
        return cls(file, int(line) if line else None, error.key_path, error.message)

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "key_path": self.key_path,
            "message": self.message,
        }


@dataclass(frozen=True)
class Validation:
    """What :func:`validate_pipeline` found. ``pipeline`` is set when it loaded."""

    path: Path
    errors: tuple[ConfigError, ...]
    truncated: bool  # the cap was reached: there may be more
    pipeline: Pipeline | None

    @property
    def ok(self) -> bool:
        return not self.errors


def validate_pipeline(
    path: Path, *, max_errors: int = DEFAULT_MAX_ERRORS, check_files: bool = True
) -> Validation:
    """Validate a pipeline file and its topology; collect up to ``max_errors`` errors."""
    if max_errors < 1:
        raise ValueError("max_errors must be at least 1")
    errors: list[ConfigError] = []
    try:
        data, loc = load_merged(path)
        _collect(lambda lc: PIPELINE_SPEC.check(data, "", lc), loc, errors, max_errors)
        if not errors and isinstance(data.get("topology"), str):
            topology = resolve_path(data["topology"], "topology", loc)
            if topology.is_file():
                doc = load_yaml(topology)
                tloc = Locator.of(doc)
                _collect(lambda lc: TOPOLOGY_SPEC.check(doc.data, "", lc), tloc, errors, max_errors)
    except _Capped:
        return Validation(path, tuple(errors), truncated=True, pipeline=None)
    except ConfigError as exc:  # YAML syntax, an extends: chain that cannot be followed
        errors.append(exc)
    if errors:
        return Validation(path, tuple(errors), truncated=False, pipeline=None)
    try:
        pipeline = load_pipeline(path)
    except ConfigError as exc:
        return Validation(path, (exc,), truncated=False, pipeline=None)
    if check_files:
        errors.extend(missing_files(pipeline, loc))
    capped = errors[:max_errors]
    return Validation(path, tuple(capped), len(errors) > max_errors, pipeline)


class _Capped(Exception):
    pass


def _collect(check: Any, loc: Locator, errors: list[ConfigError], max_errors: int) -> None:
    collected = loc.collect(max_errors - len(errors))
    try:
        check(loc)
    except TooManyErrors:
        errors.extend(collected)
        raise _Capped() from None
    except ConfigError as exc:  # raised by a node outside any container (the root)
        collected.append(exc)
    errors.extend(collected)


def missing_files(pipeline: Pipeline, loc: Locator) -> list[ConfigError]:
    """An error for each file the pipeline names that does not exist."""
    ssh = pipeline.deploy.ssh
    named: list[tuple[str, str, Path | None]] = [
        ("deploy.ssh.identity", "SSH identity (private key)", ssh.identity),
        ("deploy.ssh.known_hosts", "known_hosts", ssh.known_hosts),
    ]
    named += [(f"deploy.ssh.ca_keys[{i}]", "host CA key", key) for i, key in enumerate(ssh.ca_keys)]
    return [
        loc.error(key_path, f"{what} file {file} not found")
        for key_path, what, file in named
        if file is not None and not file.is_file()
    ]
