"""Bounded parsing of payloads, and ``package verify`` = the agent's install check.

Each hostile archive here is validly signed by the trusted key, so the refusal comes
from the payload rules, not the signature. The verify-vs-install tests run every
case of ``test_hostile`` through both and demand the same error, class and text.
"""

from __future__ import annotations

import os
import tarfile
import time
import tracemalloc
import zlib
from collections.abc import Iterable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleetwave.cli import main
from fleetwave_agent.errors import PackageError, SizeLimitError, UnsafePackageError
from fleetwave_agent.extract import extract_payload
from fleetwave_agent.keys import Keyring
from fleetwave_agent.manifest import MAX_NAME_BYTES, MAX_PATH_BYTES, MAX_PATH_DEPTH, FileEntry
from fleetwave_agent.package import Limits, verify_header, verify_package
from fleetwave_agent.store import ReleaseStore

from .conftest import NOW, Keys
from .craft import Member, craft, entries_for, write_signed
from .test_hostile import CASES, Ctx

pytestmark = pytest.mark.integration

GOOD = Member("a.txt", b"hello\n")


def _block(name: str, kind: bytes, size: int, mode: int = 0o644) -> bytes:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = size
    info.mode = mode
    return info.tobuf(format=tarfile.USTAR_FORMAT)


def _pad(size: int) -> bytes:
    return bytes(-size % 512)


def _member_blocks(m: Member) -> bytes:
    return _block(m.name, m.type, len(m.data), m.mode) + m.data + _pad(len(m.data))


def _gzip(parts: Iterable[bytes]) -> bytes:
    """gzip of the concatenation of ``parts``, never holding it all in memory."""
    comp = zlib.compressobj(1, zlib.DEFLATED, 31)
    out = [comp.compress(p) for p in parts]
    return b"".join([*out, comp.flush()])


def _extended(kind: bytes, size: int, filler: Iterable[bytes]) -> Iterable[bytes]:
    yield _block("././@LongLink" if kind in (b"L", b"K") else "pax", kind, size)
    yield from filler
    yield _pad(size)


def _signed(tmp: Path, keys: Keys, payload: bytes, files: list[FileEntry]) -> Path:
    out = tmp / "hostile.fwpkg"
    write_signed(out, payload, files, keys.private)
    return out


def _chunks(total: int, unit: bytes) -> Iterable[bytes]:
    block = unit * ((1 << 20) // len(unit))
    left = total
    while left > 0:
        piece = block[:left]
        left -= len(piece)
        yield piece


def _refused_bounded(package: Path, keys: Keys, error: type[PackageError]) -> str:
    """Refused with ``error``, in less than 8 MB of Python memory and 1 s of CPU."""
    tracemalloc.start()
    cpu = time.process_time()
    try:
        with pytest.raises(PackageError) as info:
            verify_package(package, keys.keyring, now=NOW)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    spent = time.process_time() - cpu
    assert type(info.value) is error, f"{type(info.value).__name__}: {info.value}"
    assert peak < 8 << 20, f"peak {peak} bytes"
    assert spent < 1.0, f"{spent:.2f}s of CPU"
    assert "\n" not in str(info.value)
    return str(info.value)


def test_huge_pax_header_is_refused_without_reading_it(tmp_path: Path, keys: Keys) -> None:
    size = 64 << 20  # tarfile reads this whole: 64 MB for a ~70 KiB package
    payload = _gzip(
        [*_extended(b"x", size, _chunks(size, b"9 a=bcde\n")), _member_blocks(GOOD), bytes(1024)]
    )
    assert len(payload) < 1 << 20
    package = _signed(tmp_path, keys, payload, entries_for([GOOD]))
    assert "pax header of 67108864 bytes" in _refused_bounded(package, keys, UnsafePackageError)


@pytest.mark.parametrize("kind", [b"L", b"K"])
def test_huge_gnu_long_name_is_refused(tmp_path: Path, keys: Keys, kind: bytes) -> None:
    size = 64 << 20
    payload = _gzip(
        [*_extended(kind, size, _chunks(size, b"a")), _member_blocks(GOOD), bytes(1024)]
    )
    package = _signed(tmp_path, keys, payload, entries_for([GOOD]))
    assert "GNU long name" in _refused_bounded(package, keys, UnsafePackageError)


def test_many_pax_records_are_refused_cheaply(tmp_path: Path, keys: Keys) -> None:
    records = b"".join(b"%d x%d=1\n" % (len(b"x%d=1\n" % i) + 3, i) for i in range(1000, 1900))
    assert len(records) < 16 << 10
    payload = _gzip([*_extended(b"x", len(records), [records]), _member_blocks(GOOD), bytes(1024)])
    package = _signed(tmp_path, keys, payload, entries_for([GOOD]))
    assert "more than 32 records" in _refused_bounded(package, keys, UnsafePackageError)


@pytest.mark.parametrize(
    ("kind", "message"),
    [(b"g", "global pax header"), (b"x", "repeats")],
)
def test_global_and_repeated_pax_headers_are_refused(
    tmp_path: Path, keys: Keys, kind: bytes, message: str
) -> None:
    record = b"13 comment=x\n"
    head = [*_extended(kind, len(record), [record])]
    if kind == b"x":
        head = head * 2
    payload = _gzip([*head, _member_blocks(GOOD), bytes(1024)])
    package = _signed(tmp_path, keys, payload, entries_for([GOOD]))
    assert message in _refused_bounded(package, keys, UnsafePackageError)


def test_many_members_are_refused_at_the_count_limit(tmp_path: Path, keys: Keys) -> None:
    members = [Member(f"f{i}", b"") for i in range(50)]
    package = tmp_path / "many.fwpkg"
    craft(package, members, keys.private)
    with pytest.raises(SizeLimitError):
        verify_package(package, keys.keyring, now=NOW, limits=Limits(max_members=10))


LONG_PATHS = {
    "name-over-NAME_MAX": "d/" + "n" * (MAX_NAME_BYTES + 1),
    "path-over-limit": "/".join(["p" * 200] * (MAX_PATH_BYTES // 200 + 1)),
    "path-over-PATH_MAX": "/".join(["q" * 250] * 17),
    "deeper-than-limit": "/".join(["d"] * (MAX_PATH_DEPTH + 1)),
    "1100-levels": "/".join(["d"] * 1100) + "/f",
}


@pytest.mark.parametrize("listed", [True, False], ids=["in-manifest", "payload-only"])
@pytest.mark.parametrize("name", LONG_PATHS.values(), ids=LONG_PATHS.keys())
def test_overlong_and_deep_paths_are_unsafe_not_a_store_error(
    tmp_path: Path, keys: Keys, name: str, listed: bool
) -> None:
    members = [GOOD, Member(name, b"x", manifest=listed)]
    package = tmp_path / "long.fwpkg"
    payload = _gzip([*(_pax_member(m) for m in members), bytes(1024)])
    write_signed(package, payload, entries_for(members), keys.private)
    store = ReleaseStore(tmp_path / "root")
    with store.lock(), pytest.raises(PackageError) as installed:
        store.stage(package, keys.keyring, now=NOW)
    with pytest.raises(PackageError) as verified:
        verify_package(package, keys.keyring, now=NOW)
    assert type(installed.value) is UnsafePackageError, installed.value
    assert (type(verified.value), str(verified.value)) == (
        UnsafePackageError,
        str(installed.value),
    )
    assert len(str(installed.value)) < 300
    assert list(store.staging_dir.iterdir()) == []


def _pax_member(m: Member) -> bytes:
    info = tarfile.TarInfo(m.name)
    info.size, info.mode = len(m.data), m.mode
    return info.tobuf(format=tarfile.PAX_FORMAT) + m.data + _pad(len(m.data))


def test_a_path_that_is_both_file_and_directory_is_unsafe(tmp_path: Path, keys: Keys) -> None:
    package = tmp_path / "both.fwpkg"
    craft(package, [Member("a", b"1"), Member("a/b", b"2")], keys.private)
    with pytest.raises(UnsafePackageError, match="both a file and a directory"):
        verify_package(package, keys.keyring, now=NOW)


def test_a_fifo_is_refused_without_blocking(tmp_path: Path, keys: Keys) -> None:
    fifo = tmp_path / "pkg.fwpkg"
    os.mkfifo(fifo)
    with pytest.raises(PackageError, match="not a regular file"):
        verify_package(fifo, keys.keyring, now=NOW)


# ------------------------------------------------------------ verify == install


def _install_error(ctx: Ctx, store: ReleaseStore, package: Path, keyring: Keyring, limits: Limits):
    with store.lock():
        try:
            store.stage(package, keyring, now=NOW, limits=limits)
        except PackageError as exc:
            return exc
    return None


SAME = {k: v for k, v in CASES.items() if k != "reused-version"}  # the ledger is per host


@pytest.mark.parametrize("case", SAME.values(), ids=SAME.keys())
def test_verify_refuses_what_install_refuses_with_the_same_error(
    case, tmp_path: Path, keys: Keys, build, capsys
) -> None:
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "victim").write_text("original\n")
    package = case.make(Ctx(tmp=tmp_path, keys=keys, good=build("2.0")))
    keyring = keys.keyring
    if case.revoke:
        keyring = Keyring(keys=keys.keyring.keys, revoked=frozenset(keys.keyring.key_ids))
    store = ReleaseStore(tmp_path / "root")
    installed = _install_error(Ctx(tmp_path, keys, package), store, package, keyring, case.limits)
    with pytest.raises(PackageError) as verified:
        verify_package(package, keyring, now=NOW, limits=case.limits)
    assert installed is not None
    assert (type(verified.value), str(verified.value)) == (type(installed), str(installed))


CLI_CASES = {
    k: CASES[k]
    for k in (
        "dotdot-path",
        "hardlink-escape",
        "device-file",
        "setuid",
        "manifest-file-missing",
        "file-digest-mismatch",
        "second-gzip-member",
        "tampered-payload-byte",
    )
}


@pytest.mark.parametrize("case", CLI_CASES.values(), ids=CLI_CASES.keys())
def test_cli_verify_exits_with_the_agents_code(
    case, tmp_path: Path, keys: Keys, build, capsys
) -> None:
    (tmp_path / "outside").mkdir()
    package = case.make(Ctx(tmp=tmp_path, keys=keys, good=build("2.0")))
    status = main(["package", "verify", str(package), "--trust", str(keys.public_path)])
    out, err = capsys.readouterr()
    assert status == case.error.exit_code
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("fleetwave: error: ")


def test_cli_verify_trusts_every_repeated_key(tmp_path: Path, keys: Keys, build, capsys) -> None:
    from fleetwave_agent.keys import generate_keypair

    _, other = generate_keypair(tmp_path / "other")
    package = build("2.0")
    for trust in (
        ["--trust", str(keys.public_path), "--trust", str(other)],
        ["--trust", str(other), "--trust", str(keys.public_path)],
        ["--trust", str(other), str(keys.public_path)],
    ):
        assert main(["package", "verify", str(package), *trust]) == 0, trust
        assert capsys.readouterr().out.startswith("ok: app 2.0")


# ------------------------------------------------------------ property: hostile archives

names = st.one_of(
    st.sampled_from(["a.txt", "d/f", "../x", "/abs", "d/../e", "a\\b", "", ".", "d//f", "d/"]),
    st.text("ab/.\x00é", min_size=1, max_size=8),
    st.integers(90, 300).map(lambda n: "n" * n),
)
kinds = st.sampled_from([b"0", b"\x00", b"1", b"2", b"3", b"4", b"5", b"6", b"7", b"S", b"V"])
raw_members = st.lists(
    st.tuples(names, kinds, st.integers(0, 0o7777), st.binary(max_size=40), st.booleans()),
    max_size=5,
)
mutations = st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(1, 255)), max_size=3)


def _archive(members: list[tuple[str, bytes, int, bytes, bool]], flips: list[tuple[int, int]]):
    blocks = bytearray()
    files: list[FileEntry] = []
    for name, kind, mode, data, listed in members:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.mode = mode
        info.size = len(data) if kind in (b"0", b"\x00", b"7") else 0
        try:
            blocks += info.tobuf(format=tarfile.PAX_FORMAT) + data[: info.size]
        except (ValueError, UnicodeError):
            continue
        blocks += _pad(info.size)
        if listed and info.size:
            files += entries_for([Member(name, data[: info.size], mode=mode & 0o777)])
    blocks += bytes(1024)
    for at, bits in flips:
        if blocks:
            blocks[at % len(blocks)] ^= bits
    unique = {f.path: f for f in files}
    return _gzip([bytes(blocks)]), list(unique.values())


@settings(
    deadline=None, max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(raw_members, mutations)
def test_hostile_archives_get_the_same_verdict_from_verify_and_install(
    tmp_path: Path, keys: Keys, members, flips
) -> None:
    payload, files = _archive(members, flips)
    case = tmp_path / f"case-{os.urandom(6).hex()}"
    case.mkdir()
    package = case / "p.fwpkg"
    try:
        write_signed(package, payload, files, keys.private)
    except PackageError:
        return  # a manifest the builder itself refuses (unsafe or colliding paths)
    verdicts: list[tuple[type[PackageError], str] | None] = []
    for run in ("verify", "extract"):
        try:
            if run == "verify":
                verify_package(package, keys.keyring, now=NOW)
            else:
                staging = case / "staging"
                staging.mkdir()
                header = verify_header(package, keys.keyring, now=NOW, limits=Limits())
                extract_payload(package, header.manifest, staging, Limits(), fsync=False)
            verdicts.append(None)
        except PackageError as exc:  # anything else fails the test: no tracebacks
            verdicts.append((type(exc), str(exc)))
    assert verdicts[0] == verdicts[1]
