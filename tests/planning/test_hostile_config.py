"""Hostile config files: each is one ConfigError line (file:line, key path), exit 2.

Covers the file itself (FIFO, device, directory, too large, not a config file at
all: its content is never quoted) and the YAML in it (alias bombs, deep nesting,
impossible dates, huge integers, durations too long to schedule).
"""

from __future__ import annotations

import os
import signal
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleetwave.cli import main
from fleetwave.config.pipeline import load_pipeline
from fleetwave.config.topology import load_topology
from fleetwave.errors import ConfigError
from fleetwave_core.yamlsrc import MAX_DEPTH, MAX_FILE_BYTES, load_yaml

from .test_pipeline_files import PARENT, TOPOLOGY, child, write

pytestmark = pytest.mark.integration

SECRET = "root:$6$s3cr3tHASH:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n"


@pytest.fixture
def team(tmp_path: Path) -> Path:
    write(tmp_path, "team/fleet/topology.yaml", TOPOLOGY)
    write(tmp_path, "team/parent.yaml", PARENT)
    return tmp_path


@pytest.fixture
def deadline() -> Iterator[None]:
    """Fail (instead of hanging the suite) if a read blocks."""

    def expired(*_: object) -> None:
        raise TimeoutError("blocked")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(10)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def _one_line(exc: ConfigError) -> str:
    text = str(exc)
    assert "\n" not in text
    assert len(text) < 400
    return text


BOMB = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 9)
)

HOSTILE_BODIES = {
    "impossible-date": (
        "windows: {default: {holidays: {dates: [2026-02-30]}}}\n",
        "windows.default.holidays.dates[0]",
        "day is out of range",
    ),
    "5000-digit-integer": (
        f"rolling: {{max_batch: {'9' * 5000}}}\n",
        "rolling.max_batch",
        "5000 digits is too large",
    ),
    "4000-digit-integer": (
        f"deploy: {{ssh: {{port: {'9' * 4000}}}}}\n",
        "deploy.ssh.port",
        "out of range",
    ),
    "duration-overflows-float": (
        f"deploy: {{drain_timeout: {'9' * 400}}}\n",
        "deploy.drain_timeout",
        "too large",
    ),
    "bake-too-long-to-schedule": (
        "stage_bake: {time: 99999999999w}\n",
        "stage_bake.time",
        "too long to schedule",
    ),
    "wave-bake-too-long": (
        "waves: [{regions: [r1], bake: {time: 999999999d}}]\n",
        "waves[0].bake.time",
        "too long to schedule",
    ),
}


@pytest.mark.parametrize(
    ("body", "key", "needle"), HOSTILE_BODIES.values(), ids=HOSTILE_BODIES.keys()
)
def test_hostile_values_are_one_positioned_error(team: Path, body: str, key: str, needle: str):
    path = child(team, body)
    with pytest.raises(ConfigError) as info:
        load_pipeline(path)
    text = _one_line(info.value)
    assert info.value.key_path == key, text
    assert needle in text
    assert info.value.source == f"{path}:4"


HOSTILE_DOCUMENTS = {
    "alias-bomb": (BOMB, "expands to more than"),
    "flow-nesting-1000": ("a: " + "[" * 1000 + "]" * 1000 + "\n", "nesting"),
    "block-nesting-300": ("".join("  " * i + "k:\n" for i in range(300)), "levels deep"),
    "alias-nesting": (
        "a0: &a0 " + "[" * 40 + "]" * 40 + "\nb: &b [" + "[" * 30 + "*a0" + "]" * 30 + "]\n",
        "levels deep",
    ),
    "recursive-alias": ("a: &a [*a]\n", "own ancestor"),
    "undefined-alias": ("a: *nothing\n", "undefined"),
    "two-documents": ("a: 1\n---\nb: 2\n", "single document"),
    "complex-key": ("? [a, b]\n: 1\n", "plain values"),
    "not-utf8": (b"name: \xff\xfe\n", "not UTF-8"),
}


@pytest.mark.parametrize(("text", "needle"), HOSTILE_DOCUMENTS.values(), ids=HOSTILE_DOCUMENTS)
def test_hostile_yaml_is_refused_fast(tmp_path: Path, text: str | bytes, needle: str):
    path = tmp_path / "p.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    began = time.process_time()
    with pytest.raises(ConfigError) as info:
        load_yaml(path)
    assert time.process_time() - began < 1.0
    text_out = _one_line(info.value)
    assert needle in text_out
    assert info.value.source
    assert info.value.source.startswith(f"{path}")


def test_depth_limit_leaves_room_for_real_files(tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text("a: " + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1) + "\n")
    assert load_yaml(path).data is not None
    merge = "base: &b {x: 1}\nuse:\n  <<: *b\n  y: 2\n"
    path.write_text(merge)
    assert load_yaml(path).data["use"] == {"x": 1, "y": 2}


@pytest.mark.parametrize("key", ["extends", "topology"])
def test_a_file_that_is_no_config_is_not_quoted(team: Path, key: str) -> None:
    shadow = team / "shadow"
    shadow.write_text(SECRET)
    if key == "extends":
        path = write(team, "svc/pipeline.yaml", f"extends: {shadow}\nname: p\nservice: s\n")
    else:
        path = write(team, "svc/pipeline.yaml", PARENT.replace("fleet/topology.yaml", str(shadow)))
        path.write_text(path.read_text() + "name: p\nservice: s\n")
    with pytest.raises(ConfigError) as info:
        load_pipeline(path)
    text = _one_line(info.value)
    assert "s3cr3t" not in text
    assert "19000" not in text
    assert "daemon" not in text
    assert "not a " in text
    assert str(shadow) in text


def test_a_yaml_scalar_file_is_not_quoted(tmp_path: Path) -> None:
    path = tmp_path / "topology.yaml"
    path.write_text("s3cr3t-token-value\n")
    with pytest.raises(ConfigError) as info:
        load_topology(path)
    assert "s3cr3t" not in _one_line(info.value)


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "directory", "too-large"])
@pytest.mark.parametrize("key", ["extends", "topology"])
def test_config_paths_must_be_small_regular_files(
    team: Path, key: str, kind: str, deadline: None
) -> None:
    target = team / "target"
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "dev-zero":
        target = Path("/dev/zero")
    elif kind == "directory":
        target.mkdir()
    else:
        with target.open("wb") as fh:
            fh.truncate(MAX_FILE_BYTES + 1)  # sparse: costs no disk
    if key == "extends":
        path = write(team, "svc/pipeline.yaml", f"extends: {target}\nname: p\nservice: s\n")
    else:
        body = PARENT.replace("fleet/topology.yaml", str(target)) + "name: p\nservice: s\n"
        path = write(team, "svc/pipeline.yaml", body)
    with pytest.raises(ConfigError) as info:
        load_pipeline(path)
    text = _one_line(info.value)
    assert str(target) in text
    assert ("not a regular file" in text) or ("byte limit" in text)


def test_cli_validate_prints_one_line_and_exits_2(team: Path, capsys) -> None:
    path = child(team, "windows: {default: {holidays: {dates: [2026-02-30]}}}\n")
    assert main(["validate", "-f", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "holidays.dates[0]" in err[0]


# ------------------------------------------------------------------ property

scalars = st.one_of(
    st.sampled_from(
        ["2026-02-30", "2026-13-01", "1:2:3", "0x" + "f" * 50, "9" * 4400, "1e999", "~", "''"]
    ),
    st.integers(-(10**30), 10**30).map(str),
    st.text("ab:-#&*!|>'\"{}[], \n", max_size=6),
)


def _documents() -> st.SearchStrategy[str]:
    leaf = scalars
    tree = st.recursive(
        leaf,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3).map(lambda xs: "[" + ", ".join(xs) + "]"),
            st.lists(st.tuples(st.sampled_from("abc"), inner), max_size=3).map(
                lambda kv: "{" + ", ".join(f"{k}: {v}" for k, v in kv) + "}"
            ),
            inner.map(lambda x: f"&n {x}"),
            st.just("*n"),
        ),
        max_leaves=12,
    )
    return st.lists(st.tuples(st.sampled_from(["topology", "rolling", "x", "<<"]), tree)).map(
        lambda kv: "".join(f"{k}: {v}\n" for k, v in kv)
    )


@settings(deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(_documents())
def test_generated_yaml_only_raises_config_error(text: str) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "p.yaml"
        path.write_text(textwrap.dedent(text))
        for load in (load_yaml, load_pipeline, load_topology):
            try:
                load(path)
            except ConfigError as exc:
                _one_line(exc)
