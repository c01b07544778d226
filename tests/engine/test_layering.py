"""The architecture's arrows, checked on the source: every module imports, no import
cycle (lazy imports inside functions count too), and no arrow that the layering
forbids. The rules are data (:data:`RULES`); the checks are proved to fail on a graph
that breaks them."""

from __future__ import annotations

import ast
import importlib
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
SOURCES = {"fleetwave": ROOT / "controller", "fleetwave_agent": ROOT / "agent",
           "fleetwave_core": ROOT / "agent"}  # fmt: skip

#: (who, the prefixes it must not import, why)
RULES: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("fleetwave.lb", ("fleetwave.rollout",), "a backend never drives the rollout"),
    ("fleetwave.transport", ("fleetwave.rollout",), "a backend never drives the rollout"),
    (
        "fleetwave.planning.model",
        ("fleetwave.lb", "fleetwave.transport"),
        "the plan model knows no backend",
    ),
    (
        "fleetwave.config",
        (
            "fleetwave.planning",
            "fleetwave.rollout",
            "fleetwave.lb",
            "fleetwave.transport",
            "fleetwave.cli",
        ),
        "configuration is the bottom layer",
    ),
    *(
        (
            f"fleetwave.rollout.{m}",
            ("fleetwave.watch", "fleetwave.rollout.watching", "fleetwave.rollout.anomaly_watch"),
            "the engine stays pure: alarms reach it as events",
        )
        for m in ("engine", "state", "transitions", "scheduler", "resume", "types", "events", "_tx")
    ),
    ("fleetwave.watch", ("fleetwave.rollout",), "metric sources never drive the rollout"),
    ("fleetwave_agent", ("fleetwave",), "the agent never imports the controller"),
    ("fleetwave_core", ("fleetwave",), "the shared core never imports the controller"),
)


def _modules() -> dict[str, Path]:
    out = {}
    for top, base in SOURCES.items():
        for path in sorted((base / top).rglob("*.py")):
            parts = path.relative_to(base).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _imports(
    name: str, path: Path, known: Iterable[str], *, runtime_only: bool = False
) -> set[str]:
    """Every module ``name`` imports anywhere in its source (functions included). With
    ``runtime_only``, not those under ``if TYPE_CHECKING:``: they are never executed,
    so they cannot make an import cycle (they still count for the layering rules)."""
    known = set(known)
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    tree = ast.parse(path.read_text(), str(path))
    for node in _runtime_nodes(tree) if runtime_only else ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = name.split(".") if is_pkg else name.split(".")[:-1]
                pkg = pkg[: len(pkg) - node.level + 1]
                base = ".".join([*pkg, base] if base else pkg)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                out.add(sub if sub in known else base)
    return out


def _runtime_nodes(tree: ast.AST) -> Iterable[ast.AST]:
    """``ast.walk`` without the bodies of ``if TYPE_CHECKING:`` blocks."""
    todo: list[ast.AST] = [tree]
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))


def _is_type_checking(test: ast.expr) -> bool:
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def _graph(*, runtime_only: bool = False) -> dict[str, set[str]]:
    mods = _modules()
    return {n: _imports(n, p, mods, runtime_only=runtime_only) for n, p in mods.items()}


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def violations(graph: Mapping[str, set[str]]) -> list[str]:
    """Every import the :data:`RULES` forbid, as ``who -> what (why)``."""
    out = []
    for mod, deps in sorted(graph.items()):
        for who, banned, why in RULES:
            if _within(mod, who):
                out += [
                    f"{mod} -> {d} ({why})"
                    for d in sorted(deps)
                    if any(_within(d, b) for b in banned)
                ]
    return out


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The import cycles among the graph's own modules (one path per cycle found)."""
    found: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(graph):
        if state.get(start):
            continue
        path = [start]
        stack = [iter(sorted(graph[start] & graph.keys()))]
        state[start] = 1
        while stack:  # iterative DFS: bounded by the graph, no recursion limit
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                found.append([*path[path.index(nxt) :], nxt])
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph[nxt] & graph.keys())))
    return found


def test_every_module_imports() -> None:
    for name in _modules():
        if not name.endswith(".__main__"):  # running it would start the CLI
            importlib.import_module(name)


def test_the_controller_has_no_import_cycle() -> None:
    graph = _graph(runtime_only=True)
    controller = {m: deps for m, deps in graph.items() if _within(m, "fleetwave")}
    assert cycles(controller) == []


def test_the_agent_and_core_have_no_import_cycle() -> None:
    agent = {
        m: deps
        for m, deps in _graph(runtime_only=True).items()
        if _within(m, "fleetwave_agent") or _within(m, "fleetwave_core")
    }
    assert cycles(agent) == []


def test_no_import_crosses_the_layering() -> None:
    assert violations(_graph()) == []


def test_the_checks_catch_what_they_forbid() -> None:
    bad = {
        "fleetwave.lb.haproxy": {"fleetwave.rollout.engine"},
        "fleetwave.planning.model": {"fleetwave.transport.base"},
        "fleetwave.config.pipeline": {"fleetwave.planning.model"},
        "fleetwave_core.errors": {"fleetwave.errors"},
        "fleetwave.rollout.engine": {"fleetwave.lb.base"},  # allowed
    }
    assert len(violations(bad)) == 4
    loop = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(loop) == [["a", "b", "c", "a"]]


def test_a_lazy_relative_import_is_an_arrow(tmp_path: Path) -> None:
    src = tmp_path / "mod.py"
    src.write_text("def f():\n    from ..rollout import engine\n")
    deps = _imports("fleetwave.lb.mod", src, {"fleetwave.rollout.engine"})
    assert deps == {"fleetwave.rollout.engine"}
    assert violations({"fleetwave.lb.mod": deps}) != []


def test_a_type_checking_import_is_no_cycle_but_still_an_arrow(tmp_path: Path) -> None:
    src = tmp_path / "mod.py"
    src.write_text("TYPE_CHECKING = False\nif TYPE_CHECKING:\n    from ..rollout import engine\n")
    known = {"fleetwave.rollout.engine"}
    assert _imports("fleetwave.lb.mod", src, known) == known
    assert _imports("fleetwave.lb.mod", src, known, runtime_only=True) == set()
