"""Typed payload encoding of the channel's messages (never pickle).

Reads: payload bytes (:func:`decode_payload`).
Writes: payload bytes (:func:`encode_payload`). docs/protocol.md §8 specifies the format.

One value in a small self-describing tagged encoding: None, bool, int (arbitrary size), float,
str, bytes, numpy arrays (dtype string + shape + raw little-endian bytes; bool/int/uint/float/
complex dtypes only, ``ALLOWED_DTYPES``) and lists/tuples/dicts (str keys) of those, nested at
most ``MAX_DEPTH`` deep. Tuples come back as lists; numpy scalars as Python scalars. What cannot
be encoded is a TypeError/ValueError; anything malformed on decoding is a
:class:`~picompile.errors.ProtocolError`.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from picompile.errors import ProtocolError

MAX_DEPTH = 32

# dtypes an array payload may carry (numpy dtype.str, little-endian or byte-order free).
ALLOWED_DTYPES = frozenset({"|b1", "|i1", "|u1", "<i2", "<u2", "<i4", "<u4", "<i8", "<u8",
                            "<f2", "<f4", "<f8", "<c8", "<c16"})


def _u32(n: int) -> bytes:
    return struct.pack(">I", n)


def _encode_into(value: Any, out: list[bytes], depth: int) -> None:
    if depth > MAX_DEPTH:
        raise ValueError(f"payload nested deeper than {MAX_DEPTH} levels")
    if value is None:
        out.append(b"N")
    elif isinstance(value, (bool, np.bool_)):
        out.append(b"T" if value else b"F")
    elif isinstance(value, (int, np.integer)):
        v = int(value)
        raw = v.to_bytes((v.bit_length() + 8) // 8, "big", signed=True)
        out += [b"i", _u32(len(raw)), raw]
    elif isinstance(value, (float, np.floating)):
        out += [b"f", struct.pack(">d", float(value))]
    elif isinstance(value, str):
        raw = value.encode("utf-8")
        out += [b"s", _u32(len(raw)), raw]
    elif isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        out += [b"b", _u32(len(raw)), raw]
    elif isinstance(value, np.ndarray):
        arr = value
        if arr.dtype.byteorder == ">":
            arr = arr.astype(arr.dtype.newbyteorder("<"))
        if not arr.flags.c_contiguous:
            arr = arr.copy(order="C")                   # (ascontiguousarray makes 0-d 1-d)
        dt = arr.dtype.str
        if dt not in ALLOWED_DTYPES:
            raise TypeError(f"cannot send an array of dtype {value.dtype} (allowed: bool, int, "
                            "uint, float, complex)")
        if arr.ndim > 255:
            raise ValueError("arrays of more than 255 dimensions cannot be sent")
        out += [b"a", bytes([len(dt)]), dt.encode("ascii"), bytes([arr.ndim]),
                struct.pack(f">{arr.ndim}Q", *arr.shape), arr.tobytes()]
    elif isinstance(value, (list, tuple)):
        out += [b"l", _u32(len(value))]
        for item in value:
            _encode_into(item, out, depth + 1)
    elif isinstance(value, dict):
        out += [b"d", _u32(len(value))]
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"payload dict keys must be str, got {type(key).__name__}")
            raw = key.encode("utf-8")
            out += [_u32(len(raw)), raw]
            _encode_into(item, out, depth + 1)
    else:
        raise TypeError(f"cannot send a {type(value).__name__}: payloads are None, bool, int, "
                        "float, str, bytes, numpy arrays and lists/dicts of those")


def encode_payload(value: Any) -> bytes:
    """The payload bytes of ``value`` (TypeError/ValueError for what cannot be sent)."""
    out: list[bytes] = []
    _encode_into(value, out, 0)
    return b"".join(out)


class _Reader:
    def __init__(self, data: bytes | bytearray) -> None:
        self.view = memoryview(data)
        self.pos = 0

    def take(self, n: int, what: str) -> memoryview:
        if n > len(self.view) - self.pos:
            raise ProtocolError(f"malformed payload: {what} needs {n} bytes, only "
                                f"{len(self.view) - self.pos} left")
        chunk = self.view[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def u32(self, what: str) -> int:
        return struct.unpack(">I", self.take(4, what))[0]

    def count(self, what: str) -> int:
        n = self.u32(what)
        if n > len(self.view) - self.pos:   # every item takes at least one byte
            raise ProtocolError(f"malformed payload: {what} {n} exceeds the bytes left")
        return n

    def text(self, n: int, what: str) -> str:
        try:
            return str(self.take(n, what), "utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"malformed payload: {what} is not UTF-8") from exc


def _decode(r: _Reader, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise ProtocolError(f"malformed payload: nested deeper than {MAX_DEPTH} levels")
    tag = bytes(r.take(1, "a value tag"))
    if tag == b"N":
        return None
    if tag == b"T":
        return True
    if tag == b"F":
        return False
    if tag == b"i":
        return int.from_bytes(r.take(r.u32("int length"), "int"), "big", signed=True)
    if tag == b"f":
        return struct.unpack(">d", r.take(8, "float"))[0]
    if tag == b"s":
        return r.text(r.u32("str length"), "str")
    if tag == b"b":
        return bytes(r.take(r.u32("bytes length"), "bytes"))
    if tag == b"a":
        dt = r.text(r.take(1, "dtype length")[0], "dtype")
        if dt not in ALLOWED_DTYPES:
            raise ProtocolError(f"malformed payload: array dtype {dt!r} is not allowed")
        ndim = r.take(1, "ndim")[0]
        shape = struct.unpack(f">{ndim}Q", r.take(8 * ndim, "shape"))
        dtype = np.dtype(dt)
        nbytes = dtype.itemsize
        for d in shape:
            nbytes *= d
        data = r.take(nbytes, f"array {dt} {tuple(shape)}")
        return np.frombuffer(data, dtype=dtype).reshape(shape).copy()
    if tag == b"l":
        return [_decode(r, depth + 1) for _ in range(r.count("list length"))]
    if tag == b"d":
        out = {}
        for _ in range(r.count("dict length")):
            key = r.text(r.u32("key length"), "dict key")
            out[key] = _decode(r, depth + 1)
        return out
    raise ProtocolError(f"malformed payload: unknown value tag {tag!r}")


def decode_payload(data: bytes | bytearray) -> Any:
    """Inverse of :func:`encode_payload`; anything malformed is a ProtocolError."""
    r = _Reader(data)
    value = _decode(r, 0)
    if r.pos != len(r.view):
        raise ProtocolError(f"malformed payload: {len(r.view) - r.pos} trailing bytes")
    return value
