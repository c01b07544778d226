"""YAML loading that remembers where every key came from.

Config files are loaded once with PyYAML's safe loader, and each key path
(``waves[1].regions``) is mapped to its ``file:line``, so validation errors can name
the file, the line and the key. Duplicate keys, which ``yaml.safe_load`` silently
resolves to the last one, are an error here.

PyYAML is imported by :func:`load_yaml`, not with this module, so a process that reads
no YAML file (the agent's ``rpc`` sessions without a config file) never pays for it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from fleetwave_core.errors import ConfigError

TYPE_CHECKING = False  # `typing` is not imported at run time (agent start-up cost)
if TYPE_CHECKING:
    from typing import Any

    import yaml


@dataclass
class YamlDocument:
    """Parsed data plus the position of every key path in it."""

    path: Path
    data: Any
    positions: dict[str, int] = field(default_factory=dict)  # key path -> 1-based line

    def where(self, key_path: str) -> str:
        """``file:line`` of ``key_path``, or of its nearest ancestor that has a position."""
        probe = key_path
        while probe:
            if probe in self.positions:
                return f"{self.path}:{self.positions[probe]}"
            probe = parent_path(probe)
        return str(self.path)

    def error(self, key_path: str, message: str) -> ConfigError:
        """A ConfigError naming this document's file, the key's line, and the key path."""
        return ConfigError(message, source=self.where(key_path), key_path=key_path or None)


def parent_path(key_path: str) -> str:
    """``a.b[2].c`` -> ``a.b[2]`` -> ``a.b`` -> ``a`` -> ``''``."""
    cut = max(key_path.rfind("."), key_path.rfind("["))
    return key_path[:cut] if cut > 0 else ""


def join_path(base: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{base}[{key}]"
    return f"{base}.{key}" if base else key


def load_yaml(path: Path | str, *, text: str | None = None) -> YamlDocument:
    """Load one YAML document with the safe loader; raise ConfigError naming file:line."""
    import yaml

    path = Path(path)
    if text is None:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError("file not found", source=str(path)) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read: {exc}", source=str(path)) from None
    # libyaml's parser is ~5x faster on large topologies; both build the same safe nodes.
    safe_loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    loader = safe_loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return YamlDocument(path=path, data=None)
        positions: dict[str, int] = {}
        _record(node, "", positions, path)
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else 0
        raise ConfigError(f"invalid YAML: {exc.problem}", source=f"{path}:{line}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", source=str(path)) from None
    finally:
        loader.dispose()
    return YamlDocument(path=path, data=data, positions=positions)


def _record(node: yaml.Node, key_path: str, positions: dict[str, int], path: Path) -> None:
    if key_path:
        positions.setdefault(key_path, node.start_mark.line + 1)
    import yaml  # already loaded by load_yaml(); this is a sys.modules lookup

    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in _pairs(node):
            key = str(key_node.value)
            if key in seen:
                raise ConfigError(
                    f"duplicate key {key!r}",
                    source=f"{path}:{key_node.start_mark.line + 1}",
                    key_path=join_path(key_path, key),
                )
            seen.add(key)
            child = join_path(key_path, key)
            positions[child] = key_node.start_mark.line + 1
            _record(value_node, child, positions, path)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _record(item, join_path(key_path, index), positions, path)


def _pairs(node: yaml.MappingNode) -> Iterator[tuple[yaml.Node, yaml.Node]]:
    for key_node, value_node in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # `<<:` merge keys: PyYAML's constructor resolves them
        yield key_node, value_node
