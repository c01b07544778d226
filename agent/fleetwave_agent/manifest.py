"""The signed package manifest: data model, strict parsing and canonical encoding.

The manifest is what a package's signature covers. It is encoded canonically (JSON,
sorted keys, no insignificant white space, UTF-8, integers only) so that every
implementation produces the same bytes for the same manifest; the signature is made
over ``SIGNING_CONTEXT + canonical_bytes`` (domain separation), and the package id is
the SHA-256 of the canonical bytes. ``docs/package-format.md`` is the normative text.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from fleetwave_agent.errors import PackageError, UnsafePackageError

FORMAT_VERSION = 1
#: Prefix of every signed message, so a signature made for anything else never verifies.
SIGNING_CONTEXT = b"fleetwave/package-manifest/v1\x00"

HOOK_NAMES = ("stop", "before_install", "after_install", "start", "validate")
HealthKind = Literal["http", "tcp", "command"]

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+~-]{0,63}$")
_HEX64_RE = re.compile(r"^[0-9a-f]{64}$")
_KEY_ID_RE = re.compile(r"^[0-9a-f]{16}$")

#: Longest file name (a path component) Linux accepts: NAME_MAX.
MAX_NAME_BYTES = 255
#: Longest relative path in a package, in UTF-8 bytes: PATH_MAX (4096) less 1 KiB
#: left for the agent root and the release directory the path is installed under.
MAX_PATH_BYTES = 3072
#: Most components in a path. Deeper trees are refused before anything walks them.
MAX_PATH_DEPTH = 128


def check_member_path(path: str) -> list[str]:
    """The components of a package path; UnsafePackageError unless it is safe to create.

    Safe: relative, ``/``-separated, no empty, ``.`` or ``..`` component, no ``\\`` or
    NUL, at most MAX_PATH_BYTES long, MAX_PATH_DEPTH deep, each part MAX_NAME_BYTES.
    The manifest parser and the extractor both use this one rule.
    """
    parts = path.split("/")
    if (
        not path
        or path.startswith("/")
        or "\x00" in path
        or "\\" in path
        or any(p in ("", ".", "..") for p in parts)
    ):
        raise UnsafePackageError(f"unsafe path {_short(path)}: must be relative, without '..'")
    try:
        size = len(path.encode("utf-8"))
    except UnicodeEncodeError:
        raise UnsafePackageError(f"path {_short(path)} is not valid UTF-8") from None
    if size > MAX_PATH_BYTES:
        raise UnsafePackageError(
            f"path {_short(path)} is {size} bytes long, limit {MAX_PATH_BYTES}"
        )
    if len(parts) > MAX_PATH_DEPTH:
        raise UnsafePackageError(
            f"path {_short(path)} is {len(parts)} levels deep, limit {MAX_PATH_DEPTH}"
        )
    for part in parts:
        if len(part.encode("utf-8")) > MAX_NAME_BYTES:
            raise UnsafePackageError(
                f"path {_short(path)} has a name longer than {MAX_NAME_BYTES} bytes (NAME_MAX)"
            )
    return parts


def _short(path: str) -> str:
    """``repr`` of a path, cut to 80 characters: an error line stays one readable line."""
    return repr(path if len(path) <= 80 else path[:60] + "..." + path[-17:])


def validate_name(name: str) -> str:
    if not _NAME_RE.fullmatch(name):
        raise PackageError(f"invalid package name {name!r}: use 1-64 of [a-z0-9._-]")
    return name


def validate_version(version: str) -> str:
    if not _VERSION_RE.fullmatch(version):
        raise PackageError(f"invalid version {version!r}: use 1-64 of [A-Za-z0-9._+~-]")
    return version


@dataclass(frozen=True)
class FileEntry:
    """One regular file of the payload. ``path`` is relative and uses ``/``."""

    path: str
    mode: int  # permission bits only (0o7777 masked to 0o777 at build time)
    size: int
    sha256: str


@dataclass(frozen=True)
class HookSpec:
    """A lifecycle hook. ``argv[0]``, when relative, is resolved inside the release."""

    argv: tuple[str, ...]
    timeout_ms: int = 60_000


@dataclass(frozen=True)
class HealthCheckSpec:
    """A health check run after ``start``, retried every ``interval_ms`` until ``deadline_ms``.

    ``http`` uses ``url`` and ``expect_status``; ``tcp`` uses ``host`` and ``port``;
    ``command`` uses ``argv`` (exit 0 is healthy).
    """

    name: str
    kind: HealthKind
    url: str = ""
    expect_status: int = 200
    host: str = "127.0.0.1"
    port: int = 0
    argv: tuple[str, ...] = ()
    timeout_ms: int = 2_000
    interval_ms: int = 500
    deadline_ms: int = 30_000


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    created: int  # seconds since the epoch (SOURCE_DATE_EPOCH or newest source mtime)
    key_id: str
    payload_sha256: str
    payload_size: int
    files: tuple[FileEntry, ...]
    hooks: Mapping[str, HookSpec] = field(default_factory=dict)
    health_checks: tuple[HealthCheckSpec, ...] = ()
    expires: int | None = None
    format: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "package": {
                "name": self.name,
                "version": self.version,
                "created": self.created,
                "key_id": self.key_id,
                "expires": self.expires,
            },
            "payload": {"sha256": self.payload_sha256, "size": self.payload_size},
            "files": [
                {"path": f.path, "mode": f.mode, "size": f.size, "sha256": f.sha256}
                for f in self.files
            ],
            "hooks": {
                name: {"argv": list(h.argv), "timeout_ms": h.timeout_ms}
                for name, h in sorted(self.hooks.items())
            },
            "health_checks": [_health_to_dict(h) for h in self.health_checks],
        }

    def canonical_bytes(self) -> bytes:
        return canonical_json(self.to_dict())

    @property
    def package_id(self) -> str:
        """SHA-256 (hex) of the canonical manifest: names this exact signed package."""
        return hashlib.sha256(self.canonical_bytes()).hexdigest()

    def signing_message(self) -> bytes:
        return SIGNING_CONTEXT + self.canonical_bytes()

    @classmethod
    def from_dict(cls, data: Any) -> Manifest:
        """Parse strictly: unknown keys, wrong types or bad values raise PackageError."""
        top = _obj(
            data, "manifest", {"format", "package", "payload", "files", "hooks", "health_checks"}
        )
        if top.get("format") != FORMAT_VERSION:
            raise PackageError(f"manifest.format: unsupported format {top.get('format')!r}")
        pkg = _obj(
            top.get("package"),
            "manifest.package",
            {"name", "version", "created", "key_id", "expires"},
        )
        payload = _obj(top.get("payload"), "manifest.payload", {"sha256", "size"})
        key_id = _str(pkg, "key_id", "manifest.package")
        if not _KEY_ID_RE.fullmatch(key_id):
            raise PackageError(f"manifest.package.key_id: not a key id: {key_id!r}")
        expires = pkg.get("expires")
        if expires is not None and not _is_int(expires):
            raise PackageError("manifest.package.expires: must be an integer or null")
        files = tuple(_file_from_dict(f, i) for i, f in enumerate(_list(top, "files")))
        paths = {f.path for f in files}
        if len(paths) != len(files):
            raise PackageError("manifest.files: duplicate path")
        for f in files:
            for parent in _parents(f.path):
                if parent in paths:
                    raise UnsafePackageError(
                        f"manifest.files: {_short(parent)} is both a file and a directory"
                    )
        hooks_raw = _obj(top.get("hooks", {}), "manifest.hooks", set(HOOK_NAMES))
        hooks = {name: _hook_from_dict(spec, name) for name, spec in hooks_raw.items()}
        checks = tuple(_health_from_dict(h, i) for i, h in enumerate(_list(top, "health_checks")))
        return cls(
            name=validate_name(_str(pkg, "name", "manifest.package")),
            version=validate_version(_str(pkg, "version", "manifest.package")),
            created=_int(pkg, "created", "manifest.package"),
            key_id=key_id,
            payload_sha256=_hex64(payload, "sha256", "manifest.payload"),
            payload_size=_int(payload, "size", "manifest.payload"),
            files=files,
            hooks=hooks,
            health_checks=checks,
            expires=expires,
        )

    @classmethod
    def from_bytes(cls, raw: bytes) -> Manifest:
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise PackageError(f"manifest is not valid JSON: {exc}") from None
        manifest = cls.from_dict(data)
        try:
            canonical = manifest.canonical_bytes()
        except UnicodeEncodeError:  # an escaped lone surrogate decodes but never re-encodes
            raise PackageError("manifest holds text that is not valid UTF-8") from None
        if canonical != raw:
            raise PackageError("manifest is not in canonical form")
        return manifest


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no white space, UTF-8; floats are refused so encodings never differ."""
    _refuse_floats(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _refuse_floats(value: Any) -> None:
    if isinstance(value, float):
        raise PackageError("canonical JSON has no floats; use integers")
    if isinstance(value, dict):
        for item in value.values():
            _refuse_floats(item)
    elif isinstance(value, list):
        for item in value:
            _refuse_floats(item)


def _health_to_dict(h: HealthCheckSpec) -> dict[str, Any]:
    return {
        "name": h.name,
        "kind": h.kind,
        "url": h.url,
        "expect_status": h.expect_status,
        "host": h.host,
        "port": h.port,
        "argv": list(h.argv),
        "timeout_ms": h.timeout_ms,
        "interval_ms": h.interval_ms,
        "deadline_ms": h.deadline_ms,
    }


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _obj(value: Any, where: str, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PackageError(f"{where}: must be an object")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise PackageError(f"{where}: unknown key {unknown[0]!r}")
    return value


def _list(obj: Mapping[str, Any], key: str) -> list[Any]:
    value = obj.get(key, [])
    if not isinstance(value, list):
        raise PackageError(f"manifest.{key}: must be a list")
    return value


def _str(obj: Mapping[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise PackageError(f"{where}.{key}: must be a string")
    return value


def _int(obj: Mapping[str, Any], key: str, where: str, minimum: int = 0) -> int:
    value = obj.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise PackageError(f"{where}.{key}: must be an integer >= {minimum}")
    return value


def _hex64(obj: Mapping[str, Any], key: str, where: str) -> str:
    value = _str(obj, key, where)
    if not _HEX64_RE.fullmatch(value):
        raise PackageError(f"{where}.{key}: must be 64 lower-case hex digits")
    return value


def _argv(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(a, str) for a in value):
        raise PackageError(f"{where}.argv: must be a non-empty list of strings")
    return tuple(value)


def _file_from_dict(data: Any, index: int) -> FileEntry:
    where = f"manifest.files[{index}]"
    obj = _obj(data, where, {"path", "mode", "size", "sha256"})
    path = _str(obj, "path", where)
    try:
        check_member_path(path)
    except UnsafePackageError as exc:
        raise UnsafePackageError(f"{where}.path: {exc}") from None
    mode = _int(obj, "mode", where)
    if mode & ~0o777:
        raise PackageError(f"{where}.mode: only permission bits 0o777 are allowed")
    return FileEntry(
        path=path, mode=mode, size=_int(obj, "size", where), sha256=_hex64(obj, "sha256", where)
    )


def _parents(path: str) -> Iterator[str]:
    """``a/b/c`` -> ``a``, ``a/b`` (without building a list per level)."""
    cut = path.find("/")
    while cut >= 0:
        yield path[:cut]
        cut = path.find("/", cut + 1)


def _hook_from_dict(data: Any, name: str) -> HookSpec:
    where = f"manifest.hooks.{name}"
    obj = _obj(data, where, {"argv", "timeout_ms"})
    return HookSpec(
        argv=_argv(obj.get("argv"), where), timeout_ms=_int(obj, "timeout_ms", where, minimum=1)
    )


def _health_from_dict(data: Any, index: int) -> HealthCheckSpec:
    where = f"manifest.health_checks[{index}]"
    obj = _obj(
        data,
        where,
        {
            "name",
            "kind",
            "url",
            "expect_status",
            "host",
            "port",
            "argv",
            "timeout_ms",
            "interval_ms",
            "deadline_ms",
        },
    )
    kind = obj.get("kind")
    if kind not in ("http", "tcp", "command"):
        raise PackageError(f"{where}.kind: must be http, tcp or command")
    argv_raw = obj.get("argv", [])
    if kind == "command":
        argv = _argv(argv_raw, where)
    elif argv_raw == []:
        argv = ()
    else:
        raise PackageError(f"{where}.argv: only command checks take argv")
    defaults = {"url": "", "expect_status": 200, "host": "127.0.0.1", "port": 0}
    obj = {**defaults, **obj}
    check = HealthCheckSpec(
        name=_str(obj, "name", where),
        kind=kind,
        url=_str(obj, "url", where),
        expect_status=_int(obj, "expect_status", where),
        host=_str(obj, "host", where),
        port=_int(obj, "port", where),
        argv=argv,
        timeout_ms=_int(obj, "timeout_ms", where, 1),
        interval_ms=_int(obj, "interval_ms", where, 1),
        deadline_ms=_int(obj, "deadline_ms", where, 1),
    )
    if kind == "http" and not check.url.startswith(("http://", "https://")):
        raise PackageError(f"{where}.url: http checks need an http(s) URL")
    if kind == "tcp" and not 0 < check.port < 65536:
        raise PackageError(f"{where}.port: tcp checks need a port 1-65535")
    return check
