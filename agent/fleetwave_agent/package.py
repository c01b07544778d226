"""The ``.fwpkg`` container: building, reading and verifying signed packages.

Byte layout (all integers big-endian; ``docs/package-format.md`` is normative)::

    magic           8 bytes   b"\\x89FWPKG\\x01\\n"
    manifest_len    4 bytes   unsigned, 1 .. Limits.max_manifest_bytes
    manifest        manifest_len bytes of canonical JSON (manifest.py)
    signature       64 bytes  Ed25519 over SIGNING_CONTEXT + manifest
    payload         gzip'd POSIX tar, exactly manifest.payload.size bytes, to EOF

The manifest can be read (and its signature checked) without touching the payload.
Builds are reproducible: sorted members, uid/gid 0, no owner names, every mtime equal
to ``created``, gzip header mtime 0 and no file name.

Reading a manifest is on every agent session's path (the store parses release
manifests), so ``tarfile``/``gzip``, the key code (``cryptography``) and PyYAML are
imported only by the functions that build packages or verify signatures.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from fleetwave_agent.errors import (
    ChecksumError,
    ExpiredPackageError,
    ImmutableVersionError,
    PackageError,
    SizeLimitError,
)

# Re-exported: the format's constants and limits are part of this module's interface.
from fleetwave_agent.framing import _LEN
from fleetwave_agent.framing import CHUNK as CHUNK
from fleetwave_agent.framing import DEFAULT_LIMITS as DEFAULT_LIMITS
from fleetwave_agent.framing import HEADER_BYTES as HEADER_BYTES
from fleetwave_agent.framing import MAGIC as MAGIC
from fleetwave_agent.framing import SIGNATURE_BYTES as SIGNATURE_BYTES
from fleetwave_agent.framing import Limits as Limits
from fleetwave_agent.manifest import (
    HOOK_NAMES,
    FileEntry,
    HealthCheckSpec,
    HookSpec,
    Manifest,
    validate_name,
    validate_version,
)
from fleetwave_core.durations import parse_duration
from fleetwave_core.errors import ConfigError
from fleetwave_core.fsutil import fsync_dir
from fleetwave_core.safefile import FileRefusedError, open_regular
from fleetwave_core.timefmt import iso_utc

if TYPE_CHECKING:
    from fleetwave_agent.keys import Keyring
    from fleetwave_core.yamlsrc import YamlDocument

PACKAGE_SUFFIX = ".fwpkg"
#: Optional file at the root of a source directory declaring hooks and health checks.
PACKAGE_CONFIG = "fleetwave-package.yaml"


@dataclass(frozen=True)
class PackageHeader:
    """What precedes the payload, as read from a file. No trust decision made yet."""

    manifest: Manifest
    manifest_bytes: bytes
    signature: bytes
    payload_offset: int
    file_size: int


# --------------------------------------------------------------------------- reading


def read_header(path: Path, limits: Limits = DEFAULT_LIMITS) -> PackageHeader:
    """Parse magic, manifest and signature strictly; the payload is not read."""
    try:
        with open_regular(path) as fh:
            file_size = os.fstat(fh.fileno()).st_size
            if file_size > limits.max_package_bytes:
                raise SizeLimitError(
                    f"{path}: package is {file_size} bytes, limit {limits.max_package_bytes}"
                )
            head = _read_exact(fh, HEADER_BYTES, path, "header")
            if head[: len(MAGIC)] != MAGIC:
                raise PackageError(f"{path}: not a fleetwave package (bad magic)")
            (manifest_len,) = _LEN.unpack_from(head, len(MAGIC))
            if manifest_len == 0 or manifest_len > limits.max_manifest_bytes:
                raise SizeLimitError(
                    f"{path}: manifest is {manifest_len} bytes, limit {limits.max_manifest_bytes}"
                )
            raw = _read_exact(fh, manifest_len, path, "manifest")
            signature = _read_exact(fh, SIGNATURE_BYTES, path, "signature")
    except FileRefusedError as exc:
        raise PackageError(f"{path}: cannot be a package: {exc}") from None
    except OSError as exc:
        raise PackageError(f"{path}: cannot read package: {exc.strerror}") from None
    try:
        manifest = parse_manifest(raw)
    except PackageError as exc:
        raise type(exc)(f"{path}: {exc}") from None  # keep the class: unsafe stays unsafe
    return PackageHeader(
        manifest=manifest,
        manifest_bytes=raw,
        signature=signature,
        payload_offset=HEADER_BYTES + manifest_len + SIGNATURE_BYTES,
        file_size=file_size,
    )


def parse_manifest(raw: bytes) -> Manifest:
    """Parse untrusted manifest bytes; every failure is a PackageError.

    ``Manifest.from_bytes`` can also raise RecursionError (deeply nested JSON),
    UnicodeEncodeError (an escaped lone surrogate) or ValueError/TypeError (a
    health-check field of the wrong type); a hostile file must not crash the agent.
    """
    try:
        return Manifest.from_bytes(raw)
    except PackageError:
        raise
    except (RecursionError, UnicodeError, ValueError, TypeError) as exc:
        raise PackageError(f"malformed manifest: {type(exc).__name__}: {exc}") from None


def _read_exact(fh: BinaryIO, size: int, path: Path, what: str) -> bytes:
    data = fh.read(size)
    if len(data) != size:
        raise PackageError(f"{path}: truncated package: {what} ends early")
    return data


def read_manifest(path: Path) -> Manifest:
    """The manifest of a package file, parsed strictly but NOT verified."""
    return read_header(path).manifest


def verify_header(path: Path, keyring: Keyring, *, now: float, limits: Limits) -> PackageHeader:
    """Everything :func:`verify_package` checks except the payload digest.

    Checks the download size cap, the framing, the signature (and revocation), the
    expiry, the manifest's own caps, and that the file is exactly as long as the
    manifest says. Extraction then checks the payload digest in the same pass.
    """
    header = read_header(path, limits)
    manifest = header.manifest
    keyring.verify(manifest.key_id, manifest.signing_message(), header.signature)
    if manifest.expires is not None and now >= manifest.expires:
        raise ExpiredPackageError(
            f"{path}: {manifest.name} {manifest.version} expired at "
            f"{iso_utc(manifest.expires)} (now {iso_utc(now)})"
        )
    check_manifest_limits(manifest, limits, path)
    actual_payload = header.file_size - header.payload_offset
    if actual_payload != manifest.payload_size:
        raise ChecksumError(
            f"{path}: payload is {actual_payload} bytes, manifest says {manifest.payload_size}"
            + (" (truncated download?)" if actual_payload < manifest.payload_size else "")
        )
    return header


def check_manifest_limits(manifest: Manifest, limits: Limits, where: Path | str) -> None:
    """Refuse a manifest whose own declared sizes exceed the caps (before any I/O)."""
    if len(manifest.files) > limits.max_members:
        raise SizeLimitError(
            f"{where}: {len(manifest.files)} files, limit {limits.max_members} members"
        )
    expanded = sum(f.size for f in manifest.files)
    if expanded > limits.max_expanded_bytes:
        raise SizeLimitError(
            f"{where}: payload expands to {expanded} bytes, limit {limits.max_expanded_bytes}"
        )


def verify_package(
    path: Path, keyring: Keyring, *, now: float, limits: Limits = DEFAULT_LIMITS
) -> Manifest:
    """Every check an agent's install makes, writing nothing; return the manifest.

    :func:`verify_header`, then the extractor's own walk over the payload
    (:func:`extract.check_payload`) with a sink that writes nothing: member types,
    paths, modes, every file's size and digest against the manifest, missing and
    extra files, the gzip and tar framing and the payload digest. A package this
    accepts is one an agent with the same ``limits`` installs, and a refusal is the
    error the agent would give.
    """
    from fleetwave_agent.extract import check_payload

    header = verify_header(path, keyring, now=now, limits=limits)
    check_payload(path, header.manifest, limits)
    return header.manifest


def check_payload_digest(path: Path, header: PackageHeader) -> None:
    """Hash the payload of ``path`` and compare it with the manifest (ChecksumError)."""
    digest = hashlib.sha256()
    try:
        with open_regular(path) as fh:
            fh.seek(header.payload_offset)
            while chunk := fh.read(CHUNK):
                digest.update(chunk)
    except FileRefusedError as exc:
        raise PackageError(f"{path}: cannot be a package: {exc}") from None
    except OSError as exc:
        raise PackageError(f"{path}: cannot read payload: {exc.strerror}") from None
    if digest.hexdigest() != header.manifest.payload_sha256:
        raise ChecksumError(f"{path}: payload sha256 does not match the signed manifest")


# --------------------------------------------------------------------------- building


def build_package(
    src_dir: Path,
    *,
    name: str,
    version: str,
    private_key: Path,
    out_dir: Path,
    expires: int | None = None,
    created: int | None = None,
) -> Path:
    """Build and sign ``out_dir/NAME-VERSION.fwpkg`` from the files under ``src_dir``.

    ``created`` defaults to ``SOURCE_DATE_EPOCH``, else the newest source mtime, so
    building the same tree twice yields the same bytes and the same package id.
    ``fleetwave-package.yaml`` at the root declares hooks and health checks and is not
    itself part of the payload. Symlinks and special files are refused: the format
    only carries regular files. An existing output with different bytes is refused
    (a version, once built, is immutable).
    """
    validate_name(name)
    validate_version(version)
    from fleetwave_agent.keys import key_id, load_private_key

    key = load_private_key(private_key)
    if not src_dir.is_dir():
        raise ConfigError("source directory not found", source=str(src_dir))
    sources = list(_walk_sources(src_dir))
    config_path = src_dir / PACKAGE_CONFIG
    hooks: dict[str, HookSpec] = {}
    checks: tuple[HealthCheckSpec, ...] = ()
    if config_path.is_file():
        hooks, checks = load_package_config(config_path)
    if created is None:
        created = _default_created(sources, config_path)
    entries_by_path = {rel: st for rel, st in sources}
    _check_hook_paths(hooks, checks, entries_by_path, config_path)

    out_dir.mkdir(parents=True, exist_ok=True)
    out_path = out_dir / f"{name}-{version}{PACKAGE_SUFFIX}"
    payload_tmp = _temp_path(out_dir, "payload")
    final_tmp = _temp_path(out_dir, "package")
    try:
        with payload_tmp.open("wb") as raw_out:
            writer = _HashingWriter(raw_out)
            files = _write_payload(src_dir, sources, writer, created)
        manifest = Manifest(
            name=name,
            version=version,
            created=created,
            key_id=key_id(key.public_key()),
            payload_sha256=writer.digest.hexdigest(),
            payload_size=writer.size,
            files=files,
            hooks=hooks,
            health_checks=checks,
            expires=expires,
        )
        raw_manifest = manifest.canonical_bytes()
        Manifest.from_bytes(raw_manifest)  # what we sign must be what agents accept
        signature = key.sign(manifest.signing_message())
        with final_tmp.open("wb") as out, payload_tmp.open("rb") as payload:
            out.write(MAGIC + _LEN.pack(len(raw_manifest)) + raw_manifest + signature)
            while chunk := payload.read(CHUNK):
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if out_path.exists() and not _same_bytes(out_path, final_tmp):
            raise ImmutableVersionError(
                f"{out_path} already exists with different contents; "
                "versions are immutable, build a new version"
            )
        os.replace(final_tmp, out_path)
        fsync_dir(out_dir)
    finally:
        payload_tmp.unlink(missing_ok=True)
        final_tmp.unlink(missing_ok=True)
    return out_path


def _temp_path(out_dir: Path, what: str) -> Path:
    return out_dir / f".fwpkg-{what}-{os.getpid()}-{os.urandom(4).hex()}.tmp"


def _same_bytes(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    with a.open("rb") as fa, b.open("rb") as fb:
        while True:
            ca, cb = fa.read(CHUNK), fb.read(CHUNK)
            if ca != cb:
                return False
            if not ca:
                return True


def _walk_sources(src_dir: Path) -> Iterator[tuple[str, os.stat_result]]:
    """Regular files under ``src_dir`` as (relative posix path, stat), sorted by path."""
    found: list[tuple[str, os.stat_result]] = []
    for dirpath, dirnames, filenames in os.walk(src_dir, followlinks=False):
        base = Path(dirpath)
        for entry in [*dirnames, *filenames]:
            full = base / entry
            st = full.lstat()
            rel = full.relative_to(src_dir).as_posix()
            try:
                rel.encode("utf-8")
            except UnicodeEncodeError:
                raise PackageError(f"{full}: file name is not valid UTF-8") from None
            if stat.S_ISLNK(st.st_mode):
                raise PackageError(f"{full}: symlinks cannot be packaged; copy the target")
            if stat.S_ISDIR(st.st_mode):
                continue
            if not stat.S_ISREG(st.st_mode):
                raise PackageError(f"{full}: only regular files and directories can be packaged")
            if rel == PACKAGE_CONFIG:
                continue
            found.append((rel, st))
    found.sort(key=lambda item: item[0])
    yield from found


def _default_created(sources: list[tuple[str, os.stat_result]], config: Path) -> int:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch is not None:
        if not epoch.isdigit():
            raise ConfigError(f"SOURCE_DATE_EPOCH must be an integer, got {epoch!r}")
        return int(epoch)
    mtimes = [int(st.st_mtime) for _, st in sources]
    if config.is_file():
        mtimes.append(int(config.stat().st_mtime))
    return max(mtimes, default=0)


class _HashingWriter(io.RawIOBase):
    """Counts and hashes everything written through it (the compressed payload)."""

    def __init__(self, out: BinaryIO) -> None:
        super().__init__()
        self._out = out
        self.digest = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self.digest.update(view)
        self._out.write(view)
        self.size += len(view)
        return len(view)


class _HashingReader(io.RawIOBase):
    def __init__(self, src: BinaryIO) -> None:
        super().__init__()
        self._src = src
        self.digest = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self._src.read(size)
        self.digest.update(data)
        self.size += len(data)
        return data


def _write_payload(
    src_dir: Path, sources: list[tuple[str, os.stat_result]], writer: _HashingWriter, mtime: int
) -> tuple[FileEntry, ...]:
    import gzip
    import tarfile

    entries: list[FileEntry] = []
    # filename="" and mtime=0 keep the gzip header free of build-specific bytes.
    with (
        gzip.GzipFile(filename="", mode="wb", compresslevel=6, fileobj=writer, mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w|", format=tarfile.PAX_FORMAT, bufsize=CHUNK) as tar,
    ):
        for rel, st in sources:
            info = tarfile.TarInfo(rel)
            info.type = tarfile.REGTYPE
            info.size = st.st_size
            info.mode = stat.S_IMODE(st.st_mode) & 0o777
            info.mtime = mtime
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            with open_regular(src_dir / rel) as fh:
                reader = _HashingReader(fh)
                try:
                    tar.addfile(info, reader)
                except (OSError, tarfile.TarError) as exc:
                    raise PackageError(f"{src_dir / rel}: changed while packaging: {exc}") from None
                if reader.size != st.st_size or fh.read(1):
                    raise PackageError(f"{src_dir / rel}: changed while packaging")
            entries.append(
                FileEntry(
                    path=rel, mode=info.mode, size=st.st_size, sha256=reader.digest.hexdigest()
                )
            )
    return tuple(entries)


# --------------------------------------------------------------------------- config


def load_package_config(path: Path) -> tuple[dict[str, HookSpec], tuple[HealthCheckSpec, ...]]:
    """Parse ``fleetwave-package.yaml``; errors name file:line and the key path."""
    from fleetwave_core.yamlsrc import load_yaml

    doc = load_yaml(path)
    data = doc.data if doc.data is not None else {}
    _mapping(doc, data, "", {"hooks", "health_checks"})
    hooks_raw = data.get("hooks") or {}
    _mapping(doc, hooks_raw, "hooks", set(HOOK_NAMES))
    hooks: dict[str, HookSpec] = {}
    for hook_name, spec in hooks_raw.items():
        where = f"hooks.{hook_name}"
        _mapping(doc, spec, where, {"argv", "timeout"})
        hooks[hook_name] = HookSpec(
            argv=_yaml_argv(doc, spec.get("argv"), f"{where}.argv"),
            **_yaml_durations(doc, spec, where, HookSpec, ("timeout",)),
        )
    checks_raw = data.get("health_checks") or []
    if not isinstance(checks_raw, list):
        raise doc.error("health_checks", "must be a list")
    checks = [_yaml_check(doc, item, i) for i, item in enumerate(checks_raw)]
    names = [c.name for c in checks]
    for i, check_name in enumerate(names):
        if check_name in names[:i]:
            raise doc.error(f"health_checks[{i}].name", f"duplicate check name {check_name!r}")
    return hooks, tuple(checks)


_CHECK_KEYS = {
    "name",
    "kind",
    "url",
    "expect_status",
    "host",
    "port",
    "argv",
    "timeout",
    "interval",
    "deadline",
}


def _yaml_check(doc: YamlDocument, item: Any, index: int) -> HealthCheckSpec:
    where = f"health_checks[{index}]"
    _mapping(doc, item, where, _CHECK_KEYS)
    check_name = item.get("name")
    if not isinstance(check_name, str) or not check_name:
        raise doc.error(f"{where}.name", "must be a non-empty string")
    kind = item.get("kind")
    if kind not in ("http", "tcp", "command"):
        raise doc.error(f"{where}.kind", "must be http, tcp or command")
    allowed = {"http": {"url", "expect_status"}, "tcp": {"host", "port"}, "command": {"argv"}}
    for key in sorted(set(item) & {"url", "expect_status", "host", "port", "argv"}):
        if key not in allowed[kind]:
            raise doc.error(f"{where}.{key}", f"not used by {kind} checks")
    url = item.get("url", "")
    if kind == "http" and (not isinstance(url, str) or not url.startswith(("http://", "https://"))):
        raise doc.error(f"{where}.url", "http checks need an http:// or https:// URL")
    expect = item.get("expect_status", 200)
    if not isinstance(expect, int) or isinstance(expect, bool) or not 100 <= expect <= 599:
        raise doc.error(f"{where}.expect_status", "must be an HTTP status 100-599")
    host = item.get("host", "127.0.0.1")
    if not isinstance(host, str) or not host:
        raise doc.error(f"{where}.host", "must be a host name or address")
    port = item.get("port", 0)
    if kind == "tcp" and (
        not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536
    ):
        raise doc.error(f"{where}.port", "tcp checks need a port 1-65535")
    argv = _yaml_argv(doc, item.get("argv"), f"{where}.argv") if kind == "command" else ()
    return HealthCheckSpec(
        name=check_name,
        kind=kind,
        url=url if kind == "http" else "",
        expect_status=expect,
        host=host,
        port=port if kind == "tcp" else 0,
        argv=argv,
        **_yaml_durations(doc, item, where, HealthCheckSpec, ("timeout", "interval", "deadline")),
    )


def _mapping(doc: YamlDocument, value: Any, where: str, allowed: set[str]) -> None:
    if not isinstance(value, dict):
        raise doc.error(where, "must be a mapping")
    for key in value:
        if key not in allowed:
            hint = ""
            if isinstance(key, str) and key.removesuffix("_ms") in allowed:
                # The manifest's signed field is `timeout_ms`; people read it in
                # `package inspect --json` and write it here. One spelling: durations.
                hint = f"; write {key.removesuffix('_ms')}: with a unit, e.g. 30s or 500ms"
            raise doc.error(
                f"{where}.{key}" if where else str(key),
                f"unknown key {str(key)[:64]!r} (allowed: {', '.join(sorted(allowed))}){hint}",
            )


def _yaml_argv(doc: YamlDocument, value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(a, str) for a in value):
        raise doc.error(where, "must be a non-empty list of strings")
    return tuple(value)


def _yaml_durations(
    doc: YamlDocument, obj: dict[str, Any], where: str, spec: type[Any], keys: tuple[str, ...]
) -> dict[str, int]:
    """``timeout: 30s`` -> ``{"timeout_ms": 30000}``, for the keys ``obj`` sets.

    The YAML says durations (``timeout``, ``interval``, ``deadline``); the manifest
    stores integer milliseconds in ``<key>_ms``. Unset keys are left out, so the
    defaults have one home: the :class:`HookSpec` / :class:`HealthCheckSpec` fields.
    """
    fields = {f.name for f in dataclasses.fields(spec)}
    out: dict[str, int] = {}
    for key in keys:
        assert f"{key}_ms" in fields, (spec, key)
        if key not in obj:
            continue
        value = obj[key]
        try:
            milliseconds = round(parse_duration(value) * 1000)
        except ValueError as exc:
            raise doc.error(f"{where}.{key}", str(exc)) from None
        if milliseconds < 1:
            raise doc.error(f"{where}.{key}", f"must be at least 1ms, got {value!r}")
        out[f"{key}_ms"] = milliseconds
    return out


def _check_hook_paths(
    hooks: dict[str, HookSpec],
    checks: tuple[HealthCheckSpec, ...],
    files: dict[str, os.stat_result],
    config: Path,
) -> None:
    """A relative ``argv[0]`` with a ``/`` names a packaged file: catch typos at build time."""
    argvs = [(f"hooks.{n}", h.argv) for n, h in hooks.items()]
    argvs += [(f"health_checks.{c.name}", c.argv) for c in checks if c.argv]
    for where, argv in argvs:
        program = argv[0]
        if "/" not in program or program.startswith("/"):
            continue
        rel = program.removeprefix("./")
        st = files.get(rel)
        if st is None:
            raise ConfigError(
                f"{program!r} is not a file in the package",
                source=str(config),
                key_path=f"{where}.argv",
            )
        if not st.st_mode & 0o100:
            raise ConfigError(
                f"{program!r} is not executable (chmod +x)",
                source=str(config),
                key_path=f"{where}.argv",
            )
