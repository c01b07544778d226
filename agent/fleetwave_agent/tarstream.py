"""A strict, bounded reader of the tar stream inside a package payload.

Python's ``tarfile`` reads a pax or GNU long-name header's data whole, however large
the header says it is, and parses pax records with no count limit: a 286 KiB package
could make it allocate 223 MB, and a 12 KiB one burn seconds of CPU. This reader
reads every header into a buffer of fixed size and refuses what does not fit:

* ustar headers (POSIX ``ustar\\0``/``00`` or GNU ``ustar  \\0`` magic), with their
  checksum verified; numbers in octal or base-256;
* pax extended headers (``x``) of at most :data:`MAX_EXTENDED_BYTES` and
  :data:`MAX_PAX_RECORDS` records, each keyword at most once; only ``path``,
  ``linkpath`` and ``size`` change the member, ``GNU.sparse.*`` marks it sparse,
  other keywords (times, owners, xattrs) are ignored since extraction sets them;
* GNU long names and long link names (``L``, ``K``) of at most PATH_MAX bytes;
* at most one extended header of each kind before a member; global pax headers
  (``g``) are refused, as they would change how every later member is read.

It yields :class:`TarMember` values and the data of the current member on request; it
never seeks, and its memory use does not depend on the input. Which member types and
names are acceptable is the extractor's decision (:mod:`extract`), except where a
header cannot be read at all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from fleetwave_agent.errors import UnsafePackageError

BLOCK = 512
#: Largest path the kernel accepts (PATH_MAX 4096, without its NUL).
PATH_MAX_BYTES = 4095
#: Largest data of a pax extended header: a PATH_MAX path and link path and some change.
MAX_EXTENDED_BYTES = 16 << 10
MAX_PAX_RECORDS = 32
_POSIX_MAGIC = b"ustar\x0000"
_GNU_MAGIC = b"ustar  \x00"
_EXTENDED = (b"x", b"L", b"K")
_SIZE_DIGITS = 20  # a pax size record holds at most 2**64


class MalformedTar(ValueError):
    """The stream breaks the tar framing (the extractor maps it to a PackageError)."""


@dataclass(frozen=True)
class TarMember:
    """One member header, after its pax or GNU extended headers were applied."""

    name: str
    type: bytes  # the ustar typeflag: b"0", b"5", b"2", ...
    mode: int
    size: int
    linkname: str = ""
    sparse: bool = False  # a GNU sparse member (type ``S`` or ``GNU.sparse.*`` records)

    @property
    def is_file(self) -> bool:
        return self.type in (b"0", b"\x00") and not self.sparse

    @property
    def is_dir(self) -> bool:
        return self.type == b"5"


class TarReader:
    """Members of the tar stream that ``read(n)`` yields (at most ``n`` bytes a call).

    Iterate over :meth:`members`; between two members, :meth:`read` returns the data
    of the current one. Data left unread is skipped, in bounded reads, when the next
    member is asked for. :attr:`end_offset` is where the end-of-archive marker begins.
    """

    def __init__(self, read: Callable[[int], bytes]) -> None:
        self._read = read
        self._offset = 0
        self._left = 0  # data bytes of the current member not yet read
        self._pad = 0  # padding after them, up to the next block
        self.end_offset: int | None = None

    def members(self) -> Iterator[TarMember]:
        """Yield every member up to the end-of-archive marker (a zero block)."""
        while True:
            self._skip_rest()
            member = self._next_member()
            if member is None:
                return
            self._left = member.size
            self._pad = -member.size % BLOCK
            yield member

    def read(self, size: int) -> bytes:
        """Up to ``size`` bytes of the current member's data; ``b""`` at its end."""
        if self._left <= 0:
            return b""
        data = self._read(min(size, self._left))
        if not data:
            raise MalformedTar("tar stream ends inside a member")
        self._left -= len(data)
        self._offset += len(data)
        return data

    # ------------------------------------------------------------------ internals

    def _skip_rest(self) -> None:
        while self._left:
            self.read(1 << 16)
        if self._pad:
            self._exact(self._pad)
            self._pad = 0

    def _exact(self, size: int) -> bytes:
        parts: list[bytes] = []
        need = size
        while need:
            data = self._read(need)
            if not data:
                raise MalformedTar("tar stream ends early")
            parts.append(data)
            need -= len(data)
        self._offset += size
        return b"".join(parts)

    def _next_member(self) -> TarMember | None:
        pax: dict[str, bytes] = {}
        long_name: bytes | None = None
        long_link: bytes | None = None
        seen: set[bytes] = set()
        while True:
            start = self._offset
            block = self._exact(BLOCK)
            if block.count(0) == BLOCK:
                if seen:
                    raise MalformedTar("extended header without a member")
                self.end_offset = start
                return None
            header = _parse_header(block)
            kind = header.type
            if kind == b"g":
                raise UnsafePackageError("payload has a global pax header; it is not allowed")
            if kind not in _EXTENDED:
                return _apply(header, pax, long_name, long_link)
            if kind in seen:
                raise UnsafePackageError(f"payload repeats a {kind.decode()!r} extended header")
            seen.add(kind)
            limit = MAX_EXTENDED_BYTES if kind == b"x" else PATH_MAX_BYTES + 1
            if header.size > limit:
                what = "pax header" if kind == b"x" else "GNU long name"
                raise UnsafePackageError(
                    f"payload {what} of {header.size} bytes exceeds the {limit}-byte limit"
                )
            data = self._exact(header.size)
            self._exact(-header.size % BLOCK)
            if kind == b"x":
                pax = _parse_pax(data)
            elif kind == b"L":
                long_name = data.rstrip(b"\x00")
            else:
                long_link = data.rstrip(b"\x00")


@dataclass(frozen=True)
class _Header:
    name: bytes
    type: bytes
    mode: int
    size: int
    linkname: bytes


def _parse_header(block: bytes) -> _Header:
    stored = _number(block[148:156], "checksum")
    unsigned = sum(block[:148]) + 8 * 0x20 + sum(block[156:])
    signed = unsigned - 256 * sum(1 for b in (*block[:148], *block[156:]) if b > 127)
    if stored not in (unsigned, signed):
        raise MalformedTar("tar header checksum mismatch")
    magic = block[257:265]
    if magic not in (_POSIX_MAGIC, _GNU_MAGIC):
        raise MalformedTar("not a ustar or pax tar header")
    name = _cstring(block[0:100])
    if magic == _POSIX_MAGIC:
        prefix = _cstring(block[345:500])
        if prefix:
            name = prefix + b"/" + name
    return _Header(
        name=name,
        type=block[156:157],
        mode=_number(block[100:108], "mode"),
        size=_number(block[124:136], "size"),
        linkname=_cstring(block[157:257]),
    )


def _cstring(field: bytes) -> bytes:
    end = field.find(b"\x00")
    return field if end < 0 else field[:end]


def _number(field: bytes, what: str) -> int:
    if field[:1] == b"\x80":  # GNU base-256, positive
        return int.from_bytes(field[1:], "big")
    if field[:1] == b"\xff":
        raise MalformedTar(f"negative {what} in tar header")
    text = field.split(b"\x00", 1)[0].strip(b" ")
    if not text:
        return 0
    if not all(0x30 <= c <= 0x37 for c in text):
        raise MalformedTar(f"invalid {what} in tar header")
    return int(text, 8)


def _parse_pax(data: bytes) -> dict[str, bytes]:
    """Records ``"%d %s=%s\\n"``, each length counting the whole record; bounded loop."""
    records: dict[str, bytes] = {}
    pos = 0
    while pos < len(data):
        if len(records) >= MAX_PAX_RECORDS:
            raise UnsafePackageError(f"payload pax header has more than {MAX_PAX_RECORDS} records")
        space = data.find(b" ", pos, pos + 8)
        digits = data[pos:space]
        if space < 0 or not digits.isdigit():
            raise MalformedTar("malformed pax record length")
        length = int(digits)
        end = pos + length
        record = data[space + 1 : end - 1]
        if length <= len(digits) + 2 or end > len(data) or data[end - 1 : end] != b"\n":
            raise MalformedTar("malformed pax record")
        keyword, equals, value = record.partition(b"=")
        if not equals or not keyword:
            raise MalformedTar("malformed pax record")
        key = keyword.decode("ascii", "replace")
        if key in records:
            raise UnsafePackageError(f"payload pax header repeats {key!r}")
        records[key] = value
        pos = end
    return records


def _apply(
    header: _Header, pax: dict[str, bytes], long_name: bytes | None, long_link: bytes | None
) -> TarMember:
    name = pax.get("path", long_name if long_name is not None else header.name)
    link = pax.get("linkpath", long_link if long_link is not None else header.linkname)
    kind = header.type
    if kind == b"5" or (kind in (b"0", b"\x00") and name.endswith(b"/")):
        kind, name = b"5", name.rstrip(b"/")  # tar marks directories with a trailing "/"
    size = header.size
    if "size" in pax:
        raw = pax["size"]
        if not raw.isdigit() or len(raw) > _SIZE_DIGITS:
            raise MalformedTar("malformed pax size record")
        size = int(raw)
    for what, value in (("path", name), ("link path", link)):
        if len(value) > PATH_MAX_BYTES:
            raise UnsafePackageError(
                f"payload member {what} of {len(value)} bytes exceeds PATH_MAX ({PATH_MAX_BYTES})"
            )
    try:
        text = name.decode("utf-8")
        link_text = link.decode("utf-8")
    except UnicodeDecodeError:
        raise UnsafePackageError("payload member name is not valid UTF-8") from None
    return TarMember(
        name=text,
        type=kind,
        mode=header.mode,
        size=size,
        linkname=link_text,
        sparse=kind == b"S" or any(k.startswith("GNU.sparse.") for k in pax),
    )
