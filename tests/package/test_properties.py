"""Property tests for the manifest parser and the container header."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetwave_agent.errors import PackageError
from fleetwave_agent.manifest import FileEntry, HealthCheckSpec, HookSpec, Manifest
from fleetwave_agent.package import MAGIC, parse_manifest, read_header

pytestmark = pytest.mark.unit

hexdigits = st.text("0123456789abcdef", min_size=64, max_size=64)
segment = st.text("abcdefghijklmnopqrstuvwxyz0123456789._-é", min_size=1, max_size=12).filter(
    lambda s: s not in (".", "..")
)


def _no_file_is_a_directory(entries: list[FileEntry]) -> bool:
    """A path that is also another path's parent is refused (it cannot be both)."""
    names = {f.path for f in entries}
    return not any(f.path.startswith(n + "/") for f in entries for n in names)


paths = st.lists(segment, min_size=1, max_size=4).map("/".join)
files = st.lists(
    st.builds(
        FileEntry,
        path=paths,
        mode=st.integers(0, 0o777),
        size=st.integers(0, 2**40),
        sha256=hexdigits,
    ),
    max_size=8,
    unique_by=lambda f: f.path,
).filter(_no_file_is_a_directory)
argv = st.lists(st.text(min_size=1, max_size=10), min_size=1, max_size=3).map(tuple)
hooks = st.dictionaries(
    st.sampled_from(["stop", "before_install", "after_install", "start", "validate"]),
    st.builds(HookSpec, argv=argv, timeout_ms=st.integers(1, 10**7)),
)
checks = st.lists(
    st.one_of(
        st.builds(HealthCheckSpec, name=st.text(max_size=8), kind=st.just("command"), argv=argv),
        st.builds(
            HealthCheckSpec,
            name=st.text(max_size=8),
            kind=st.just("tcp"),
            port=st.integers(1, 65535),
        ),
        st.builds(
            HealthCheckSpec,
            name=st.text(max_size=8),
            kind=st.just("http"),
            url=st.text(max_size=20).map(lambda s: "http://" + s),
        ),
    ),
    max_size=3,
)
manifests = st.builds(
    Manifest,
    name=st.from_regex(r"[a-z0-9][a-z0-9._-]{0,20}", fullmatch=True),
    version=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._+~-]{0,20}", fullmatch=True),
    created=st.integers(0, 2**40),
    key_id=st.text("0123456789abcdef", min_size=16, max_size=16),
    payload_sha256=hexdigits,
    payload_size=st.integers(0, 2**40),
    files=files.map(tuple),
    hooks=hooks,
    health_checks=checks.map(tuple),
    expires=st.one_of(st.none(), st.integers(0, 2**40)),
)


# No deadline: a loaded CI machine must not turn slowness into a failure.
PROPERTY = settings(deadline=None, max_examples=100)


@PROPERTY
@given(manifests)
def test_manifest_round_trips(manifest: Manifest) -> None:
    raw = manifest.canonical_bytes()
    parsed = Manifest.from_bytes(raw)
    assert parsed == manifest
    assert parsed.canonical_bytes() == raw
    assert parsed.package_id == manifest.package_id


@PROPERTY
@given(manifests, st.data())
def test_mutated_manifest_only_raises_package_error(manifest: Manifest, data) -> None:
    raw = bytearray(manifest.canonical_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "delete", "insert"]))
        at = data.draw(st.integers(0, max(0, len(raw) - 1)))
        if op == "flip" and raw:
            raw[at] ^= data.draw(st.integers(1, 255))
        elif op == "delete" and raw:
            del raw[at]
        else:
            raw.insert(at, data.draw(st.integers(0, 255)))
    try:
        parsed = parse_manifest(bytes(raw))
    except PackageError:
        return
    # Anything accepted is canonical: it re-encodes to exactly the same bytes.
    assert parsed.canonical_bytes() == bytes(raw)


@PROPERTY
@given(st.binary(max_size=200), manifests)
def test_arbitrary_package_bytes_only_raise_package_error(junk: bytes, manifest: Manifest) -> None:
    raw = manifest.canonical_bytes()
    candidates = [junk, MAGIC + junk, MAGIC + len(raw).to_bytes(4, "big") + raw + junk[:64]]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.fwpkg"
        for blob in candidates:
            path.write_bytes(blob)
            with contextlib.suppress(PackageError):
                read_header(path)


VALID = Manifest(
    name="a",
    version="1",
    created=1,
    key_id="0" * 16,
    payload_sha256="0" * 64,
    payload_size=0,
    files=(),
).canonical_bytes()

HOSTILE_MANIFESTS = {
    "deep-nesting": b"[" * 100_000 + b"]" * 100_000,
    "lone-surrogate": VALID.replace(
        b'"hooks":{}', b'"hooks":{"start":{"argv":["\\ud800"],"timeout_ms":1}}'
    ),
    "status-not-int": VALID.replace(
        b'"health_checks":[]',
        b'"health_checks":[{"argv":[],"deadline_ms":1,"expect_status":"x","host":"h",'
        b'"interval_ms":1,"kind":"tcp","name":"n","port":1,"timeout_ms":1,"url":""}]',
    ),
    "port-a-list": VALID.replace(
        b'"health_checks":[]',
        b'"health_checks":[{"argv":[],"deadline_ms":1,"expect_status":200,"host":"h",'
        b'"interval_ms":1,"kind":"tcp","name":"n","port":[],"timeout_ms":1,"url":""}]',
    ),
    "not-utf8": b"\xff\xfe",
    "float": VALID.replace(b'"created":1', b'"created":1.5'),
}


@pytest.mark.parametrize("raw", HOSTILE_MANIFESTS.values(), ids=HOSTILE_MANIFESTS.keys())
def test_hostile_manifest_bytes_raise_package_error(raw: bytes) -> None:
    assert raw != VALID
    with pytest.raises(PackageError):
        parse_manifest(raw)


def test_valid_manifest_parses() -> None:
    assert parse_manifest(VALID).canonical_bytes() == VALID
