"""The versioned, checksummed envelope around every file raystream writes for a checkpoint.

Every state file, ``_metadata`` file and savepoint file is one *blob*::

    offset  size  field
    0       6     magic  b"\\x89RSCK\\n"  (the 0x89 byte catches 7-bit/text transfers)
    6       2     format version, uint16 little endian (currently 1)
    8       4     header length H, uint32 little endian
    12      H     header: UTF-8 JSON object
    12+H    4     CRC-32 of the header bytes, uint32 little endian
    16+H    N     payload (N = header["payload_size"])

The header carries ``kind`` (what the payload is, e.g. ``"keyed-state"``),
``payload_size`` and ``crc32`` (CRC-32 of the payload). Readers ignore header keys they
do not know, so later versions can add optional fields without bumping the version; the
version is bumped only for changes an old reader cannot skip, and an old reader refuses
a newer version with a clear :class:`~engine.errors.CheckpointError`.

Payloads are mostly pickles, and unpickling runs code. With a job secret,
:func:`sign_blob` adds ``hmac_sha256`` to the header: the HMAC-SHA256 of the kind and the
payload under the secret; :func:`verify_blob_signature` refuses a blob whose HMAC is missing
or wrong before the payload is touched. The CRC-32 only catches accidents.

Example:
    >>> blob = encode_blob("state", b"hello")
    >>> decode_blob(blob, "state")
    b'hello'
    >>> verify_blob_signature(sign_blob(blob, b"job secret"), b"job secret")
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
import zlib
from dataclasses import dataclass
from typing import Sequence

from raystream.engine.errors import CheckpointError

__all__ = [
    "MAGIC",
    "FORMAT_VERSION",
    "BlobHeader",
    "encode_blob",
    "encode_blob_parts",
    "decode_blob",
    "decode_blob_view",
    "read_blob_header",
    "sign_blob",
    "verify_blob_signature",
    "SIGNATURE_FIELD",
]

MAGIC = b"\x89RSCK\n"
FORMAT_VERSION = 1
_PREFIX = struct.Struct("<6sHI")  # magic, version, header length

#: what a file that is not (or no longer) one raystream wrote tells the user to do
_NOT_OURS = (" (a file raystream did not write, or one cut short: restore from the directory of a savepoint or "
             "of a chk-<n> that raystream wrote, or start the job without it)")
_CRC = struct.Struct("<I")
_MAX_HEADER = 1 << 20
#: the header field holding the hex HMAC-SHA256 of a signed blob
SIGNATURE_FIELD = "hmac_sha256"
_MAC_CONTEXT = b"raystream checkpoint blob\x00"


@dataclass(frozen=True)
class BlobHeader:
    """The decoded header of a blob.

    Attributes:
        version: format version the blob was written with.
        kind: what the payload is (``"state"``, ``"metadata"``, ``"keyed-state"``...).
        payload_size: payload length in bytes.
        crc32: CRC-32 of the payload.
        payload_offset: where the payload starts in the blob.
        extra: header fields this reader does not interpret (kept, never required).
    """

    version: int
    kind: str
    payload_size: int
    crc32: int
    payload_offset: int
    extra: dict[str, object]  # JSON values


def encode_blob(kind: str, payload: bytes, **extra: object) -> bytes:
    """Wrap ``payload`` in the raystream envelope (magic, version, header, CRC-32).

    Args:
        kind: a short tag saying what the payload is; checked again by :func:`decode_blob`.
        payload: the bytes to store.
        **extra: optional JSON-serializable header fields (ignored by readers that do
            not know them).

    Returns:
        The complete blob.

    Example:
        >>> encode_blob("state", b"x")[:6] == MAGIC
        True
    """
    return encode_blob_parts(kind, [payload], **extra)


def encode_blob_parts(
    kind: str, parts: Sequence[bytes | bytearray | memoryview], **extra: object
) -> bytes:
    """Like :func:`encode_blob` for a payload given as pieces (joined once, no extra copy).

    Example:
        >>> decode_blob(encode_blob_parts("state", [b"ab", b"c"]), "state")
        b'abc'
    """
    if not isinstance(kind, str) or not kind:
        raise CheckpointError(f"blob kind must be a non-empty str, got {kind!r}")
    crc = 0
    size = 0
    for part in parts:
        crc = zlib.crc32(part, crc)
        size += memoryview(part).nbytes
    return _assemble(kind, size, crc, extra, parts)


def _assemble(
    kind: str, size: int, crc: int, extra: dict[str, object], parts: Sequence[bytes | bytearray | memoryview]
) -> bytes:
    header = dict(extra)
    header.update(kind=kind, payload_size=size, crc32=crc)
    header_bytes = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return b"".join(
        (
            _PREFIX.pack(MAGIC, FORMAT_VERSION, len(header_bytes)),
            header_bytes,
            _CRC.pack(zlib.crc32(header_bytes)),
            *parts,
        )
    )


def _mac(key: bytes, kind: str, payload: bytes | memoryview) -> str:
    mac = hmac.new(key, _MAC_CONTEXT + kind.encode("utf-8") + b"\x00", hashlib.sha256)
    mac.update(payload)
    return mac.hexdigest()


def sign_blob(blob: bytes | memoryview, key: bytes, name: str | None = None) -> bytes:
    """``blob`` with the HMAC-SHA256 of its kind and payload under ``key`` in its header
    (field :data:`SIGNATURE_FIELD`; a signature it had is replaced).

    Args:
        blob: a blob as written by :func:`encode_blob`.
        key: the job secret.
        name: file name or path used in error messages.

    Example:
        >>> signed = sign_blob(encode_blob("state", b"x"), b"k")
        >>> decode_blob(signed, "state"), SIGNATURE_FIELD in read_blob_header(signed).extra
        (b'x', True)
    """
    header = read_blob_header(blob, name)
    payload = _payload_view(blob, header, name)
    extra = {k: v for k, v in header.extra.items() if k != SIGNATURE_FIELD}
    extra[SIGNATURE_FIELD] = _mac(key, header.kind, payload)
    return _assemble(header.kind, header.payload_size, header.crc32, extra, [payload])


def verify_blob_signature(data: bytes | memoryview, key: bytes, name: str | None = None) -> None:
    """Check the signature :func:`sign_blob` put into ``data`` (before anything unpickles it).

    Raises:
        CheckpointError: the blob carries no signature, or one that does not match its kind
            and payload under ``key`` (tampered with, or signed with another secret); the
            message names the file when ``name`` is given.

    Example:
        >>> verify_blob_signature(encode_blob("state", b"x"), b"k")
        Traceback (most recent call last):
        ...
        raystream.engine.errors.CheckpointError: checkpoint file is not signed, but a checkpoint secret is set...
    """
    where = _where(name)
    header = read_blob_header(data, name)
    payload = _payload_view(data, header, name)
    stored = header.extra.get(SIGNATURE_FIELD)
    if stored is None:
        raise CheckpointError(
            f"checkpoint file{where} is not signed, but a checkpoint secret is set: it was "
            "written without the secret, or tampered with; refusing to load it (checkpoint "
            "files are pickles: restore only from storage you trust)"
        )
    expected = _mac(key, header.kind, payload)
    if not hmac.compare_digest(str(stored).encode("utf-8"), expected.encode("ascii")):
        raise CheckpointError(
            f"checkpoint file{where} failed its HMAC-SHA256 check: it was tampered with or "
            "signed with another secret; refusing to load it"
        )


def _where(name: str | None) -> str:
    return f" in {name!r}" if name else ""


def read_blob_header(data: bytes | memoryview, name: str | None = None) -> BlobHeader:
    """Parse and validate a blob's header without touching the payload.

    Args:
        data: the blob (at least its header).
        name: file name or path used in error messages.

    Raises:
        CheckpointError: bad magic, a version newer than this reader, or a truncated or
            corrupt header.
    """
    where = _where(name)
    if len(data) < _PREFIX.size:
        raise CheckpointError(
            f"checkpoint file{where} is truncated: {len(data)} bytes is shorter than the "
            f"{_PREFIX.size}-byte prefix{_NOT_OURS}"
        )
    magic, version, header_len = _PREFIX.unpack_from(data, 0)
    if magic != MAGIC:
        raise CheckpointError(
            f"not a raystream checkpoint file{where}: magic bytes {bytes(magic)!r}, "
            f"expected {MAGIC!r}{_NOT_OURS}"
        )
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint file{where} has format version {version}, but this raystream reads "
            f"versions up to {FORMAT_VERSION}; restore it with a newer raystream"
        )
    if version < 1 or header_len > _MAX_HEADER:
        raise CheckpointError(
            f"checkpoint file{where} is corrupt: version {version}, header length {header_len}"
        )
    start = _PREFIX.size
    end = start + header_len
    if len(data) < end + _CRC.size:
        raise CheckpointError(
            f"checkpoint file{where} is truncated: {len(data)} bytes, header alone needs "
            f"{end + _CRC.size}"
        )
    header_bytes = bytes(data[start:end])
    (header_crc,) = _CRC.unpack_from(data, end)
    if zlib.crc32(header_bytes) != header_crc:
        raise CheckpointError(f"checkpoint file{where} is corrupt: header checksum mismatch")
    try:
        header = json.loads(header_bytes.decode("utf-8"))
        kind = header.pop("kind")
        payload_size = int(header.pop("payload_size"))
        crc = int(header.pop("crc32"))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"checkpoint file{where} has an unreadable header: {exc}") from exc
    return BlobHeader(version, str(kind), payload_size, crc, end + _CRC.size, header)


def decode_blob(
    data: bytes | memoryview, expected_kind: str | None, name: str | None = None
) -> bytes:
    """Check a blob's envelope and return its payload.

    Args:
        data: the blob as written by :func:`encode_blob`.
        expected_kind: the kind the caller expects, or None to accept any.
        name: file name or path used in error messages.

    Returns:
        The payload bytes.

    Raises:
        CheckpointError: bad magic, unknown future version, wrong kind, truncated data or
            checksum mismatch; the message names the file when ``name`` is given.

    Example:
        >>> decode_blob(encode_blob("metadata", b"{}"), "metadata")
        b'{}'
    """
    return decode_blob_view(data, expected_kind, name).tobytes()


def decode_blob_view(
    data: bytes | memoryview, expected_kind: str | None, name: str | None = None
) -> memoryview:
    """Like :func:`decode_blob` but return a zero-copy view of the payload inside ``data``."""
    header = read_blob_header(data, name)
    return _check_payload(data, header, expected_kind, name)


def _check_payload(
    data: bytes | memoryview, header: BlobHeader, expected_kind: str | None, name: str | None
) -> memoryview:
    if expected_kind is not None and header.kind != expected_kind:
        raise CheckpointError(
            f"checkpoint file{_where(name)} holds {header.kind!r} data, expected {expected_kind!r}"
        )
    view = _payload_view(data, header, name)
    crc = zlib.crc32(view)
    if crc != header.crc32:
        raise CheckpointError(
            f"checkpoint file{_where(name)} is corrupt: payload checksum mismatch "
            f"(stored {header.crc32:#010x}, computed {crc:#010x})"
        )
    return view


def _payload_view(data: bytes | memoryview, header: BlobHeader, name: str | None) -> memoryview:
    """The payload of ``data``, which must end exactly where the header says."""
    where = _where(name)
    start = header.payload_offset
    end = start + header.payload_size
    if len(data) < end:
        raise CheckpointError(
            f"checkpoint file{where} is truncated: payload needs {header.payload_size} bytes, "
            f"only {len(data) - start} present"
        )
    if len(data) > end:
        raise CheckpointError(
            f"checkpoint file{where} is corrupt: {len(data) - end} unexpected trailing bytes"
        )
    return memoryview(data)[start:end]
