"""YAML loading that remembers where every key came from.

Config files are loaded once with PyYAML's safe loader, and each key path
(``waves[1].regions``) is mapped to its ``file:line``, so validation errors can name
the file, the line and the key. Duplicate keys, which ``yaml.safe_load`` silently
resolves to the last one, are an error here.

PyYAML is imported by :func:`load_yaml`, not with this module, so a process that reads
no YAML file (the agent's ``rpc`` sessions without a config file) never pays for it.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
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


#: Largest config file read, in bytes. A topology of 10,000 hosts is about 1 MiB.
MAX_FILE_BYTES = 16 << 20
#: Deepest nesting of collections, counted through aliases. Real files nest < 10 deep.
MAX_DEPTH = 64
#: Most nodes, counting every use of an alias as a copy of what it names (so an
#: alias bomb's expansion is what counts, not its few lines of text).
MAX_NODES = 1_000_000


def load_yaml(path: Path | str, *, text: str | None = None) -> YamlDocument:
    """Load one YAML document with the safe loader; raise ConfigError naming file:line.

    The file must be a regular file of at most MAX_FILE_BYTES (a FIFO or a device is
    refused without blocking or reading it). The document may nest at most MAX_DEPTH
    deep and hold at most MAX_NODES nodes with aliases expanded; a scalar YAML cannot
    turn into a value (a 5,000-digit integer, the date 2026-02-30) is an error at its
    line and key path. Errors never quote the file's content beyond a key path, so a
    config that names ``/etc/shadow`` does not print a line of it.
    """
    import yaml

    path = Path(path)
    if text is None:
        text = _read_text(path)
    loader = _loader_class()(text)
    try:
        node = _compose(loader, path)
        if node is None:
            return YamlDocument(path=path, data=None)
        positions: dict[str, int] = {}
        node_paths = _record(node, positions, path)
        try:
            data = loader.construct_document(node)
        except _BadScalar as exc:
            key_path = node_paths.get(id(exc.node), "")
            raise ConfigError(
                exc.reason,
                source=f"{path}:{exc.node.start_mark.line + 1}",
                key_path=key_path or None,
            ) from None
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else 0
        raise ConfigError(f"invalid YAML: {exc.problem}", source=f"{path}:{line}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {type(exc).__name__}", source=str(path)) from None
    finally:
        loader.dispose()
    return YamlDocument(path=path, data=data, positions=positions)


def require_mapping(doc: YamlDocument, kind: str, known_keys: Collection[str]) -> dict[str, Any]:
    """``doc.data`` as a mapping with at least one of ``known_keys`` (empty is ``{}``).

    A file that is not a mapping, or whose top-level keys are all unknown, is not a
    ``kind`` file at all (a wrong path, ``/etc/passwd``): the error says so and, unlike
    an unknown-key error, does not quote a key, since the keys are the file's content.
    """
    data = doc.data if doc.data is not None else {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"not a {kind} file: its top level is not a mapping", source=doc.where("")
        )
    if data and not any(isinstance(k, str) and k in known_keys for k in data):
        raise ConfigError(
            f"not a {kind} file: none of its {len(data)} top-level keys is a {kind} key "
            f"({', '.join(sorted(set(known_keys))[:6])}, ...)",
            source=str(doc.path),
        )
    return data


def _read_text(path: Path) -> str:
    from fleetwave_core.safefile import FileRefusedError, read_regular

    try:
        raw = read_regular(path, MAX_FILE_BYTES)
    except FileNotFoundError:
        raise ConfigError("file not found", source=str(path)) from None
    except FileRefusedError as exc:
        raise ConfigError(f"cannot be a config file: {exc}", source=str(path)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}", source=str(path)) from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError("not UTF-8 text", source=f"{path}:{line}") from None


class _BadScalar(Exception):
    """A scalar the constructor cannot turn into a value; carries its node."""

    def __init__(self, node: yaml.Node, reason: str) -> None:
        super().__init__(reason)
        self.node = node
        self.reason = reason


_LOADER: list[type[Any]] = []


def _loader_class() -> type[Any]:
    """The safe loader (libyaml's when present) whose int and date constructors fail
    with the node instead of a bare ValueError or OverflowError."""
    if _LOADER:
        return _LOADER[0]
    import yaml

    base: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    loader: Any = type("_PositionedLoader", (base,), {})
    for tag, what in (("int", "integer"), ("float", "number"), ("timestamp", "date")):
        full = f"tag:yaml.org,2002:{tag}"
        loader.add_constructor(full, _guarded(base.yaml_constructors[full], what))
    _LOADER.append(loader)
    return _LOADER[0]


def _guarded(construct: Any, what: str) -> Any:
    def guarded(loader: Any, node: yaml.Node) -> Any:
        try:
            return construct(loader, node)
        except (ValueError, OverflowError) as exc:
            digits = sum(c.isdigit() for c in str(node.value))
            if what == "integer" and digits > 100:
                raise _BadScalar(node, f"integer of {digits} digits is too large") from None
            detail = str(exc) if what == "date" else type(exc).__name__
            raise _BadScalar(node, f"invalid {what}: {detail}") from None

    return guarded


def _compose(loader: Any, path: Path) -> yaml.Node | None:
    """The single document's node graph, built from parser events without recursion.

    Replaces PyYAML's recursive composer so that depth and expanded size are counted
    while parsing: a document nested 100,000 deep stops at MAX_DEPTH, an alias bomb
    at MAX_NODES, before anything walks it.
    """
    import yaml

    def refuse(message: str, mark: Any) -> ConfigError:
        return ConfigError(message, source=f"{path}:{mark.line + 1}")

    loader.get_event()  # StreamStart
    if loader.check_event(yaml.StreamEndEvent):
        loader.get_event()
        return None
    loader.get_event()  # DocumentStart
    anchors: dict[str, yaml.Node] = {}
    sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (expanded nodes, height)
    # Open collections: [node, pending mapping key, nodes so far, tallest child].
    stack: list[list[Any]] = []
    root: yaml.Node | None = None

    def attach(node: yaml.Node) -> None:
        nonlocal root
        count, height = sizes[id(node)]
        if not stack:
            root = node
            return
        top = stack[-1]
        top[2] += count
        top[3] = max(top[3], height)
        if top[2] > MAX_NODES:
            raise refuse(f"document expands to more than {MAX_NODES} nodes", node.start_mark)
        if isinstance(top[0], yaml.SequenceNode):
            top[0].value.append(node)
        elif top[1] is None:
            if not isinstance(node, yaml.ScalarNode):
                raise refuse("mapping keys must be plain values", node.start_mark)
            top[1] = node
        else:
            top[0].value.append((top[1], node))
            top[1] = None

    def anchor(event: Any, node: yaml.Node) -> None:
        if event.anchor is not None:
            if event.anchor in anchors:
                raise refuse("duplicate anchor", event.start_mark)
            anchors[event.anchor] = node

    while root is None:
        event = loader.get_event()
        if isinstance(event, yaml.AliasEvent):
            target = anchors.get(event.anchor or "")
            if target is None:
                raise refuse("alias to an undefined anchor", event.start_mark)
            if id(target) not in sizes:
                raise refuse("an alias refers to its own ancestor", event.start_mark)
            attach(target)
        elif isinstance(event, yaml.ScalarEvent):
            tag = event.tag
            if tag is None or tag == "!":
                tag = loader.resolve(yaml.ScalarNode, event.value, event.implicit)
            start: Any = event.start_mark  # libyaml's Mark is not PyYAML's in the stubs
            end: Any = event.end_mark
            node: yaml.Node = yaml.ScalarNode(tag, event.value, start, end, style=event.style)
            anchor(event, node)
            sizes[id(node)] = (1, 0)
            attach(node)
        elif isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent):
            kind = (
                yaml.SequenceNode
                if isinstance(event, yaml.SequenceStartEvent)
                else yaml.MappingNode
            )
            tag = event.tag
            if tag is None or tag == "!":
                tag = loader.resolve(kind, None, event.implicit)
            start = event.start_mark
            node = kind(tag, [], start, None, flow_style=event.flow_style)
            anchor(event, node)
            if len(stack) >= MAX_DEPTH:
                raise refuse(f"nested more than {MAX_DEPTH} levels deep", event.start_mark)
            stack.append([node, None, 1, 0])
        elif isinstance(event, yaml.SequenceEndEvent | yaml.MappingEndEvent):
            node, _, count, height = stack.pop()
            node.end_mark = event.end_mark
            if height + 1 > MAX_DEPTH:
                raise refuse(f"nested more than {MAX_DEPTH} levels deep", node.start_mark)
            sizes[id(node)] = (count, height + 1)
            attach(node)
        else:  # pragma: no cover - the parser only emits the events above here
            raise refuse(f"unexpected {type(event).__name__}", event.start_mark)
    loader.get_event()  # DocumentEnd
    if not loader.check_event(yaml.StreamEndEvent):
        raise refuse("expected a single document, found another", loader.peek_event().start_mark)
    loader.get_event()
    return root


def _record(node: yaml.Node, positions: dict[str, int], path: Path) -> dict[int, str]:
    """Fill ``positions`` (key path -> line) by an explicit-stack walk; return each
    node's first key path (for errors about a scalar). Duplicate keys are errors."""
    import yaml

    node_paths: dict[int, str] = {}
    todo: list[tuple[yaml.Node, str]] = [(node, "")]
    while todo:
        current, key_path = todo.pop()
        node_paths.setdefault(id(current), key_path)
        if key_path:
            positions.setdefault(key_path, current.start_mark.line + 1)
        if isinstance(current, yaml.MappingNode):
            seen: set[str] = set()
            children = []
            for key_node, value_node in _pairs(current):
                key = str(key_node.value)
                if key in seen:
                    raise ConfigError(
                        f"duplicate key {key[:64]!r}",
                        source=f"{path}:{key_node.start_mark.line + 1}",
                        key_path=join_path(key_path, key),
                    )
                seen.add(key)
                child = join_path(key_path, key)
                positions[child] = key_node.start_mark.line + 1
                children.append((value_node, child))
            todo.extend(reversed(children))
        elif isinstance(current, yaml.SequenceNode):
            todo.extend(
                (item, join_path(key_path, i))
                for i, item in reversed(list(enumerate(current.value)))
            )
    return node_paths


def _pairs(node: yaml.MappingNode) -> Iterator[tuple[yaml.Node, yaml.Node]]:
    for key_node, value_node in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # `<<:` merge keys: PyYAML's constructor resolves them
        yield key_node, value_node
