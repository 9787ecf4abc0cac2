"""The one codec for every stored payload: JSON, zstd above a small size, framed and checksummed.

Every blob column (inputs, outputs, errors, flows, history, events, chunks, ...) holds::

    byte 0      MAGIC (0xD7)
    byte 1      flags: low nibble = format version (1); bit 0x80 = payload is zstd-compressed
    bytes 2..5  CRC32 of the payload bytes that follow, big-endian
    bytes 6..   payload: UTF-8 JSON, or a zstd frame holding it

`encode` writes compact UTF-8 JSON (``ensure_ascii=False``) and compresses it with zstd when it
is longer than `COMPRESS_THRESHOLD` bytes and compression actually makes it shorter.
`decode` checks the frame and raises `pydynflow.errors.CorruptData` for anything else: a
truncated or bit-flipped blob, a pickle, random bytes. Nothing is ever unpickled or evaluated.

`OutputReference` objects nested in a value travel as ``{"__output_reference__": {...}}`` and
come back as `OutputReference` objects.

zstd compressor and decompressor objects are not thread-safe (a shared one segfaulted in a
prototype), so each thread gets its own (`threading.local`).
"""

from __future__ import annotations

import json
import struct
import threading
import zlib
from typing import Any

import zstandard

from pydynflow.errors import CorruptData, SerializationError
from pydynflow.references import OutputReference

__all__ = ["COMPRESS_THRESHOLD", "MAGIC", "VERSION", "decode", "decode_at", "encode"]

MAGIC = 0xD7
VERSION = 1
FLAG_ZSTD = 0x80
VERSION_MASK = 0x0F
COMPRESS_THRESHOLD = 256
ZSTD_LEVEL = 3

_HEADER = struct.Struct(">BBI")
_HEADER_SIZE = _HEADER.size
_REFERENCE_KEY = "__output_reference__"
_REFERENCE_MARKER = _REFERENCE_KEY.encode()
_KNOWN_FLAGS = FLAG_ZSTD | VERSION_MASK


def _default(value: Any) -> Any:
    if isinstance(value, OutputReference):
        return {_REFERENCE_KEY: value.to_dict()}
    raise TypeError(f"a value of type {type(value).__qualname__} is not JSON-serialisable")


def _object_hook(data: dict[str, Any]) -> Any:
    if len(data) == 1:
        inner = data.get(_REFERENCE_KEY)
        if isinstance(inner, dict):
            try:
                return OutputReference.from_dict(inner)
            except (KeyError, TypeError):
                return data
    return data


_ENCODER = json.JSONEncoder(
    ensure_ascii=False,
    separators=(",", ":"),
    allow_nan=False,
    check_circular=False,
    default=_default,
)


def _make_dumps() -> Any:
    """Return the fastest compact, non-ASCII-escaping JSON dumper this Python has.

    CPython's C encoder called directly skips `json.JSONEncoder.encode`'s per-call set-up,
    which dominates on the small payloads most values are; other interpreters get the encoder.
    """
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is not None:
        try:
            iterencode = make(
                None, _default, json.encoder.encode_basestring, None, ":", ",", False, False, False
            )
            if "".join(iterencode({"a": [1, 2.5, None, True, "é"]}, 0)) == (
                '{"a":[1,2.5,null,true,"é"]}'
            ):
                return lambda value: "".join(iterencode(value, 0))
        except TypeError:  # another signature: fall back to the public API
            pass
    return _ENCODER.encode


_dumps = _make_dumps()
_DECODER = json.JSONDecoder()
_REFERENCE_DECODER = json.JSONDecoder(object_hook=_object_hook)

_local = threading.local()


def _compressor() -> zstandard.ZstdCompressor:
    try:
        return _local.compressor  # type: ignore[no-any-return]
    except AttributeError:
        _local.compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
        return _local.compressor  # type: ignore[no-any-return]


def _decompressor() -> zstandard.ZstdDecompressor:
    try:
        return _local.decompressor  # type: ignore[no-any-return]
    except AttributeError:
        _local.decompressor = zstandard.ZstdDecompressor()
        return _local.decompressor  # type: ignore[no-any-return]


def encode(value: Any) -> bytes:
    """Return the framed blob for a JSON-compatible ``value``.

    Args:
        value: dicts with ``str`` keys, lists (tuples become lists), ``str``, ``int``, finite
            ``float``, ``bool``, ``None`` and `OutputReference`, nested freely.

    Raises:
        SerializationError: if ``value`` holds something JSON cannot represent (an object, a
            NaN or infinite float).
    """
    if type(value) is dict and not value and _EMPTY_DICT is not None:
        return _EMPTY_DICT  # most outputs, and many inputs, are empty: frame them once
    try:
        text = _dumps(value)
    except (TypeError, ValueError) as exc:
        raise SerializationError(f"cannot encode a stored payload: {exc}") from exc
    except RecursionError as exc:
        raise SerializationError(
            "cannot encode a stored payload: it nests too deeply or contains itself"
        ) from exc
    try:
        payload = text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: keep it as a \uXXXX escape, which decodes back
        payload = json.dumps(
            value, ensure_ascii=True, separators=(",", ":"), allow_nan=False, default=_default
        ).encode("ascii")
    flags = VERSION
    if len(payload) > COMPRESS_THRESHOLD:
        compressed = _compressor().compress(payload)
        if len(compressed) < len(payload):
            payload = compressed
            flags |= FLAG_ZSTD
    return _HEADER.pack(MAGIC, flags, zlib.crc32(payload)) + payload


_EMPTY_DICT: bytes | None = None
_EMPTY_DICT = encode({})


def decode(blob: bytes | bytearray | memoryview) -> Any:
    """Return the value stored in ``blob`` by `encode`.

    Raises:
        CorruptData: naming what is wrong: not bytes, truncated, bad magic (a foreign blob
            such as a pickle), unknown version or flags, checksum mismatch, bad zstd, bad
            UTF-8 or bad JSON.
    """
    if not isinstance(blob, bytes):
        if isinstance(blob, (bytearray, memoryview)):
            blob = bytes(blob)
        else:
            raise CorruptData(f"stored payload is a {type(blob).__qualname__}, not bytes")
    if len(blob) < _HEADER_SIZE:
        raise CorruptData(
            f"stored payload truncated: {len(blob)} bytes, shorter than the "
            f"{_HEADER_SIZE}-byte header"
        )
    magic, flags, checksum = _HEADER.unpack_from(blob)
    if magic != MAGIC:
        raise CorruptData(
            f"stored payload has bad magic byte 0x{magic:02x} (expected 0x{MAGIC:02x}): "
            "not a pydynflow payload"
        )
    if flags & VERSION_MASK != VERSION or flags & ~_KNOWN_FLAGS:
        raise CorruptData(
            f"stored payload has unknown version/flags byte 0x{flags:02x} "
            f"(this pydynflow reads version {VERSION})"
        )
    payload = blob[_HEADER_SIZE:]
    if zlib.crc32(payload) != checksum:
        raise CorruptData("stored payload checksum mismatch (the blob was truncated or altered)")
    if flags & FLAG_ZSTD:
        try:
            payload = _decompressor().decompress(payload)
        except zstandard.ZstdError as exc:
            raise CorruptData(f"stored payload has bad zstd data: {exc}") from exc
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CorruptData(f"stored payload is not valid UTF-8: {exc}") from exc
    decoder = _REFERENCE_DECODER if _REFERENCE_MARKER in payload else _DECODER
    try:
        return decoder.decode(text)
    except ValueError as exc:  # json.JSONDecodeError, and "Out of range float values"
        raise CorruptData(f"stored payload is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise CorruptData("stored payload nests too deeply to decode") from exc


def decode_at(blob: bytes | bytearray | memoryview, where: str) -> Any:
    """`decode` ``blob``, naming ``where`` it is stored (a plan, a column) in its `CorruptData`."""
    try:
        return decode(blob)
    except CorruptData as exc:
        raise CorruptData(f"{where}: {exc}") from exc
