"""Framed, counted message channel between the two parties of the hybrid protocol.

Reads: frames from a peer (an in-memory queue or a TCP socket).
Writes: frames to the peer, and a :class:`Traffic` record of every message (bytes, messages and
rounds per phase). docs/protocol.md §8 specifies the format.

Frame: ``MAGIC`` (4 bytes: b"PIC" + frame version) | message type (1 byte) | payload length
(4 bytes, big-endian) | payload. A declared length above ``max_frame_bytes`` is rejected before any
payload byte is read. Every transport failure is a :class:`~picompile.errors.ProtocolError` naming
what was wrong: bad magic or version, unknown type, oversized or truncated frame, malformed payload,
a peer that does not answer within the timeout, a peer that closed the connection.

Payload: one value in a small self-describing tagged encoding (never pickle): None, bool, int
(arbitrary size), float, str, bytes, numpy arrays (dtype string + shape + raw little-endian bytes;
bool/int/uint/float/complex dtypes only) and lists/tuples/dicts (str keys) of those, nested at most
``MAX_DEPTH`` deep. Tuples come back as lists; numpy scalars as Python scalars.

An endpoint is used by one thread at a time. After a ProtocolError the channel is broken (the
stream position is unknown) and every later call raises again.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from picompile.errors import ProtocolError

#: Version of the framing and payload encoding (this module's format), in every frame header.
#: Not the session protocol's version (``picompile.runtime.session.PROTOCOL_VERSION``, carried
#: in ``hello``): that one changes with the messages' meaning, this one with their encoding.
FRAME_VERSION = 1
MAGIC = b"PIC" + bytes([FRAME_VERSION])
HEADER = struct.Struct(">4sBI")
HEADER_BYTES = HEADER.size  # 9
DEFAULT_MAX_FRAME_BYTES = 1 << 30
DEFAULT_TIMEOUT = 30.0
PHASES = ("offline", "online")
MAX_DEPTH = 32

# Message kinds and their 1-byte type codes (docs/protocol.md §4).
MESSAGE_KINDS: dict[str, int] = {
    "hello": 1, "keys": 2, "dealer": 3, "ciphertexts": 4, "reshare": 5, "open": 6,
    "result": 7, "data": 8, "error": 9, "bye": 10,
}
_KIND_OF_CODE = {code: kind for kind, code in MESSAGE_KINDS.items()}

# dtypes an array payload may carry (numpy dtype.str, little-endian or byte-order free).
ALLOWED_DTYPES = frozenset({"|b1", "|i1", "|u1", "<i2", "<u2", "<i4", "<u4", "<i8", "<u8",
                            "<f2", "<f4", "<f8", "<c8", "<c16"})


class Message(NamedTuple):
    kind: str
    payload: Any


# --------------------------------------------------------------------------- accounting


@dataclass
class PhaseTraffic:
    bytes_sent: int = 0
    bytes_received: int = 0
    messages_sent: int = 0
    messages_received: int = 0
    rounds: int = 0

    @property
    def bytes(self) -> int:
        return self.bytes_sent + self.bytes_received

    @property
    def messages(self) -> int:
        return self.messages_sent + self.messages_received


@dataclass
class Traffic:
    """Everything one endpoint sent and received, frame headers included, per phase.

    ``rounds`` counts flights: a message starts a new flight when its direction differs from the
    previous message of the same phase (the first message of a phase starts one). A
    request/response is 2 flights at both ends.
    """

    phases: dict[str, PhaseTraffic] = field(
        default_factory=lambda: {p: PhaseTraffic() for p in PHASES})
    by_kind: dict[str, int] = field(default_factory=dict)   # bytes both ways, per message kind
    _last_direction: dict[str, str] = field(default_factory=dict, repr=False)

    def record(self, phase: str, direction: str, kind: str, nbytes: int) -> None:
        p = self.phases[phase]
        if direction == "sent":
            p.bytes_sent += nbytes
            p.messages_sent += 1
        else:
            p.bytes_received += nbytes
            p.messages_received += 1
        if self._last_direction.get(phase) != direction:
            p.rounds += 1
            self._last_direction[phase] = direction
        self.by_kind[kind] = self.by_kind.get(kind, 0) + nbytes

    def __getitem__(self, phase: str) -> PhaseTraffic:
        return self.phases[phase]

    @property
    def bytes_sent(self) -> int:
        return sum(p.bytes_sent for p in self.phases.values())

    @property
    def bytes_received(self) -> int:
        return sum(p.bytes_received for p in self.phases.values())

    @property
    def rounds(self) -> int:
        return sum(p.rounds for p in self.phases.values())

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, p in self.phases.items():
            out[name] = {"bytes_sent": p.bytes_sent, "bytes_received": p.bytes_received,
                         "messages_sent": p.messages_sent,
                         "messages_received": p.messages_received, "rounds": p.rounds}
        out["by_kind"] = dict(self.by_kind)
        return out


# --------------------------------------------------------------------------- payload encoding


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


# --------------------------------------------------------------------------- channels


class Channel:
    """One endpoint: framing, payload encoding, timeouts and accounting over a byte transport.

    Subclasses provide ``_write(data)``, ``_read_into(buf, deadline, what)`` and ``_close()``.
    ``timeout`` (seconds) bounds every recv unless the call passes its own.
    """

    def __init__(self, *, timeout: float = DEFAULT_TIMEOUT,
                 max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES, name: str = "") -> None:
        if not 0 < max_frame_bytes <= 0xFFFFFFFF:
            raise ValueError("max_frame_bytes must be in [1, 2^32 - 1]")
        if not timeout > 0:
            raise ValueError("timeout must be positive")
        self.timeout = float(timeout)
        self.max_frame_bytes = int(max_frame_bytes)
        self.name = name
        self.traffic = Traffic()
        self.current_phase = "online"
        self._broken: str | None = None
        self._closed = False

    # -- phases

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[Channel]:
        """Count the messages of the block under phase ``name`` ("offline" or "online")."""
        if name not in PHASES:
            raise ValueError(f"unknown phase {name!r} (phases: {', '.join(PHASES)})")
        previous, self.current_phase = self.current_phase, name
        try:
            yield self
        finally:
            self.current_phase = previous

    # -- send / recv

    def _check_usable(self) -> None:
        if self._closed:
            raise ProtocolError("channel is closed")
        if self._broken is not None:
            raise ProtocolError(f"channel unusable after an earlier error: {self._broken}")

    def _fail(self, message: str) -> ProtocolError:
        self._broken = message
        return ProtocolError(message)

    def send(self, kind: str, payload: Any = b"") -> int:
        """Send one message; returns the bytes put on the wire (header included)."""
        if kind not in MESSAGE_KINDS:
            raise ValueError(f"unknown message kind {kind!r} (kinds: {', '.join(MESSAGE_KINDS)})")
        self._check_usable()
        body = encode_payload(payload)
        if len(body) > self.max_frame_bytes:
            raise ProtocolError(f"cannot send a {len(body)}-byte {kind!r} message: over the "
                                f"frame limit of {self.max_frame_bytes} bytes")
        header = HEADER.pack(MAGIC, MESSAGE_KINDS[kind], len(body))
        try:
            self._write(header, body)
        except ProtocolError as exc:
            self._broken = str(exc)
            raise
        nbytes = HEADER_BYTES + len(body)
        self.traffic.record(self.current_phase, "sent", kind, nbytes)
        return nbytes

    def send_error(self, text: str) -> None:
        """Tell the peer this side gives up (its next recv raises ProtocolError with ``text``)."""
        with contextlib.suppress(ProtocolError):
            self.send("error", text)

    def recv(self, expected_kind: str | None = None, *, timeout: float | None = None) -> Message:
        """Receive one message. With ``expected_kind``, any other kind is a ProtocolError; a peer's
        ``error`` message is always raised as a ProtocolError carrying the peer's text."""
        if expected_kind is not None and expected_kind not in MESSAGE_KINDS:
            raise ValueError(f"unknown message kind {expected_kind!r}")
        self._check_usable()
        wait = self.timeout if timeout is None else float(timeout)
        deadline = time.monotonic() + wait
        try:
            header = self._read_exact(HEADER_BYTES, deadline, wait, "frame header", True)
            magic, code, length = HEADER.unpack(header)
            if magic != MAGIC:
                if magic[:3] == MAGIC[:3]:
                    raise self._fail(f"peer speaks protocol version {magic[3]}, this side "
                                     f"speaks {FRAME_VERSION}")
                raise self._fail(f"bad frame magic {magic!r} (expected {MAGIC!r}): the peer is "
                                 "not a picompile channel")
            if code not in _KIND_OF_CODE:
                raise self._fail(f"unknown message type {code} in frame header")
            kind = _KIND_OF_CODE[code]
            if length > self.max_frame_bytes:
                raise self._fail(f"frame declares a {length}-byte {kind!r} payload, over the "
                                 f"limit of {self.max_frame_bytes} bytes (max_frame_bytes)")
            body = self._read_exact(length, deadline, wait, f"{kind!r} payload", False)
        except ProtocolError as exc:
            self._broken = str(exc)
            raise
        self.traffic.record(self.current_phase, "received", kind, HEADER_BYTES + length)
        try:
            payload = decode_payload(body)
        except ProtocolError as exc:
            raise self._fail(f"{kind!r} message: {exc}") from None
        if kind == "error":
            raise self._fail(f"peer reported an error: {payload}")
        if expected_kind is not None and kind != expected_kind:
            raise self._fail(f"expected a {expected_kind!r} message, got {kind!r}")
        return Message(kind, payload)

    def expect(self, kind: str, *, timeout: float | None = None) -> Any:
        """recv(kind) and return only the payload."""
        return self.recv(kind, timeout=timeout).payload

    def _read_exact(self, n: int, deadline: float, wait: float, what: str,
                    at_boundary: bool) -> bytearray:
        buf = bytearray(n)
        got = self._read_into(buf, deadline, wait, what)
        if got < n:
            if got == 0 and at_boundary:
                raise self._fail("peer closed the connection")
            raise self._fail(f"truncated frame: peer closed the connection after {got} of {n} "
                             f"{what} bytes")
        return buf

    # -- lifecycle

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._close()

    def __enter__(self) -> Channel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport hooks

    def _write(self, header: bytes, body: bytes) -> None:
        raise NotImplementedError

    def _read_into(self, buf: bytearray, deadline: float, wait: float, what: str) -> int:
        """Fill ``buf``; return how many bytes arrived before EOF (len(buf) when complete)."""
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError


def _timeout_error(wait: float, what: str) -> ProtocolError:
    return ProtocolError(f"peer did not answer within {wait:g} s (waiting for the {what})")


_EOF = None


class InMemoryChannel(Channel):
    """Queue-based endpoint (tests, single-process runs). Create connected pairs with
    :meth:`pair`; closing an endpoint is an EOF for its peer."""

    def __init__(self, inbox: queue.Queue, outbox: queue.Queue, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._inbox = inbox
        self._outbox = outbox
        self._pending = bytearray()
        self._eof = False
        self._peer: InMemoryChannel | None = None

    @classmethod
    def pair(cls, **kwargs: Any) -> tuple[InMemoryChannel, InMemoryChannel]:
        a_to_b: queue.Queue = queue.Queue()
        b_to_a: queue.Queue = queue.Queue()
        a = cls(b_to_a, a_to_b, name="a", **kwargs)
        b = cls(a_to_b, b_to_a, name="b", **kwargs)
        a._peer, b._peer = b, a
        return a, b

    def _write(self, header: bytes, body: bytes) -> None:
        if self._peer is not None and self._peer._closed:
            raise ProtocolError("peer closed the connection")
        self._outbox.put(header + body)

    def send_raw(self, data: bytes) -> None:
        """Put raw bytes on the wire (tests: malformed frames). Not counted."""
        self._outbox.put(bytes(data))

    def _read_into(self, buf: bytearray, deadline: float, wait: float, what: str) -> int:
        n = len(buf)
        while len(self._pending) < n and not self._eof:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._fail(str(_timeout_error(wait, what)))
            try:
                chunk = self._inbox.get(timeout=remaining)
            except queue.Empty:
                raise self._fail(str(_timeout_error(wait, what))) from None
            if chunk is _EOF:
                self._eof = True
            else:
                self._pending += chunk
        got = min(n, len(self._pending))
        buf[:got] = self._pending[:got]
        del self._pending[:got]
        return got

    def _close(self) -> None:
        self._outbox.put(_EOF)


class TcpChannel(Channel):
    """Endpoint over a connected TCP socket (TCP_NODELAY, every operation under a timeout)."""

    def __init__(self, sock: socket.socket, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sock = sock
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(self.timeout)

    @classmethod
    def connect(cls, host: str, port: int, timeout: float = DEFAULT_TIMEOUT,
                **kwargs: Any) -> TcpChannel:
        """Connect to a listening peer, retrying a refused connection until ``timeout``."""
        deadline = time.monotonic() + timeout
        last: OSError | None = None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                reason = f": {last.strerror or last}" if last is not None else ""
                raise ProtocolError(f"could not connect to {host}:{port} within {timeout:g} s"
                                    f"{reason}")
            try:
                sock = socket.create_connection((host, port), timeout=remaining)
            except ConnectionRefusedError as exc:
                last = exc
                time.sleep(min(0.05, max(remaining, 0.0)))
                continue
            except TimeoutError:
                last = None
                continue
            except OSError as exc:
                raise ProtocolError(f"could not connect to {host}:{port}: {exc}") from None
            return cls(sock, timeout=timeout, **kwargs)

    @classmethod
    def listen(cls, host: str = "127.0.0.1", port: int = 0, **kwargs: Any) -> TcpListener:
        """A listening socket; ``port=0`` picks a free port (see ``TcpListener.port``)."""
        return TcpListener(host, port, **kwargs)

    def _write(self, header: bytes, body: bytes) -> None:
        try:
            if len(body) < 65536:
                self.sock.sendall(header + body)
            else:
                self.sock.sendall(header)
                self.sock.sendall(body)
        except TimeoutError:
            raise ProtocolError(f"peer did not accept data within {self.timeout:g} s") from None
        except ConnectionError as exc:
            raise ProtocolError(f"peer closed the connection ({exc.__class__.__name__})") from None
        except OSError as exc:
            raise ProtocolError(f"send failed: {exc}") from None

    def send_raw(self, data: bytes) -> None:
        """Put raw bytes on the wire (tests: malformed frames). Not counted."""
        self.sock.sendall(data)

    def _read_into(self, buf: bytearray, deadline: float, wait: float, what: str) -> int:
        view = memoryview(buf)
        got, n = 0, len(buf)
        try:
            while got < n:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise self._fail(str(_timeout_error(wait, what)))
                self.sock.settimeout(remaining)
                k = self.sock.recv_into(view[got:], n - got)
                if k == 0:
                    break
                got += k
        except TimeoutError:
            raise self._fail(str(_timeout_error(wait, what))) from None
        except ConnectionError as exc:
            if got == 0 and what == "frame header":
                raise self._fail(f"peer closed the connection ({exc.__class__.__name__})") from None
            raise self._fail(f"truncated frame: peer closed the connection after {got} of {n} "
                             f"{what} bytes ({exc.__class__.__name__})") from None
        except OSError as exc:
            raise self._fail(f"receive failed: {exc}") from None
        finally:
            with contextlib.suppress(OSError):
                self.sock.settimeout(self.timeout)
        return got

    def _close(self) -> None:
        try:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
        finally:
            self.sock.close()


class TcpListener:
    """Listening socket for the server side; ``accept(timeout)`` returns a :class:`TcpChannel`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, **channel_kwargs: Any) -> None:
        self.channel_kwargs = channel_kwargs
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind((host, port))
            self.sock.listen(1)
        except OSError as exc:
            self.sock.close()
            raise ProtocolError(f"cannot listen on {host}:{port}: {exc}") from None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.sock.getsockname()[:2]
        return host, port

    @property
    def port(self) -> int:
        return self.address[1]

    def accept(self, timeout: float = DEFAULT_TIMEOUT) -> TcpChannel:
        self.sock.settimeout(timeout)
        try:
            conn, _ = self.sock.accept()
        except TimeoutError:
            raise ProtocolError(f"no peer connected within {timeout:g} s") from None
        except OSError as exc:
            raise ProtocolError(f"accept failed: {exc}") from None
        kwargs = {"timeout": timeout, **self.channel_kwargs}
        try:
            return TcpChannel(conn, **kwargs)
        except BaseException:
            conn.close()
            raise

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> TcpListener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
