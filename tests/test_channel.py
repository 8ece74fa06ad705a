"""The hybrid protocol's transport: framing, payloads, accounting, and every failure mode as a
prompt ProtocolError (in memory, over TCP loopback, and against a peer process that dies)."""

from __future__ import annotations

import os
import select
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest

from picompile.errors import ProtocolError
from picompile.runtime.channel import (
    HEADER_BYTES,
    MAGIC,
    MESSAGE_KINDS,
    InMemoryChannel,
    TcpChannel,
    decode_payload,
    encode_payload,
)

pytestmark = pytest.mark.timeout(30)

HOST = "127.0.0.1"


def sample_payloads() -> list[Any]:
    rng = np.random.default_rng(7)
    u64 = rng.integers(0, 2**64 - 1, size=(3, 5), dtype=np.uint64, endpoint=True)
    u64[0, 0], u64[0, 1] = 0, 2**64 - 1
    return [
        b"",
        b"\x00\xffraw bytes",
        u64,
        np.array([-(2**63), -1, 0, 2**63 - 1], dtype=np.int64),
        rng.standard_normal((2, 3, 4)),
        rng.standard_normal(7).astype(np.float32),
        np.array([True, False, True]),
        np.arange(-5, 5, dtype=np.int8),
        np.array(3.5),                                      # 0-d
        np.zeros((0, 4), dtype=np.uint32),                  # empty
        np.arange(20, dtype=np.uint16).reshape(4, 5)[:, ::2],  # non-contiguous
        np.arange(4, dtype=">i4"),                          # big-endian input
        {"header": {"step": 3, "op": "relu", "shape": [2, 3], "sigma": 40.0, "ok": True,
                    "none": None, "t": [2**50 - 2**17 + 1, -(2**100)]},
         "blobs": [b"ct0", b"ct1"], "shares": [u64, np.ones(2, dtype=np.uint64)],
         "nested": [[1, [2, [3, "x"]]], {"é": "ü"}]},
    ]


def assert_same(got: Any, want: Any) -> None:
    if isinstance(want, np.ndarray):
        assert isinstance(got, np.ndarray)
        assert got.shape == want.shape
        assert got.dtype == want.dtype.newbyteorder("=")
        assert np.array_equal(got, want)
        assert got.flags.writeable
    elif isinstance(want, (list, tuple)):
        assert isinstance(got, list) and len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            assert_same(g, w)
    elif isinstance(want, dict):
        assert isinstance(got, dict) and list(got) == list(want)
        for k in want:
            assert_same(got[k], want[k])
    else:
        assert type(got) is type(want) and got == want


def frame_bytes(payload: Any) -> int:
    return HEADER_BYTES + len(encode_payload(payload))


@contextmanager
def tcp_pair(server_fn: Callable[[TcpChannel], None] | None = None,
             timeout: float = 5.0, **kwargs: Any) -> Iterator[tuple[TcpChannel, list]]:
    """A client TcpChannel connected to a server endpoint run by ``server_fn`` in a thread
    (errors collected in the yielded list)."""
    errors: list[BaseException] = []
    with TcpChannel.listen(HOST, 0, timeout=timeout, **kwargs) as listener:
        def serve() -> None:
            try:
                server = listener.accept(timeout=timeout)
                try:
                    if server_fn is not None:
                        server_fn(server)
                finally:
                    server.close()
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                errors.append(exc)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        client = TcpChannel.connect(HOST, listener.port, timeout=timeout, **kwargs)
        try:
            yield client, errors
        finally:
            client.close()
            thread.join(timeout=10)
            assert not thread.is_alive(), "server thread hung"


@contextmanager
def raw_server(handler: Callable[[socket.socket], None]) -> Iterator[int]:
    """A plain socket server (one connection) whose handler writes arbitrary bytes."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.settimeout(5)
    listener.bind((HOST, 0))
    listener.listen(1)

    def serve() -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        conn.settimeout(5)
        try:
            handler(conn)
        except OSError:
            pass
        finally:
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        thread.join(timeout=10)
        listener.close()
        assert not thread.is_alive(), "raw server hung"


def expect_error(fn: Callable[[], Any], *words: str, within: float = 5.0) -> ProtocolError:
    start = time.monotonic()
    with pytest.raises(ProtocolError) as info:
        fn()
    elapsed = time.monotonic() - start
    assert elapsed < within, f"took {elapsed:.2f} s"
    for word in words:
        assert word in str(info.value), str(info.value)
    return info.value


# --------------------------------------------------------------------------- round trips


def test_payload_encoding_round_trip_and_rejects_unsafe_values():
    for p in sample_payloads():
        assert_same(decode_payload(encode_payload(p)), p)
    with pytest.raises(TypeError, match="dtype object"):
        encode_payload(np.array([1, "a"], dtype=object))
    with pytest.raises(TypeError, match="cannot send a set"):
        encode_payload({1, 2})
    with pytest.raises(TypeError, match="keys must be str"):
        encode_payload({1: 2})
    with pytest.raises(TypeError):
        encode_payload(np.array(["text"]))                 # unicode arrays are not allowed
    with pytest.raises(ProtocolError, match="unknown value tag"):
        decode_payload(b"\x80\x04K\x01.")                   # a pickle is rejected
    with pytest.raises(ProtocolError, match="not allowed"):
        decode_payload(b"a\x03|O8\x01" + struct.pack(">Q", 1) + b"\x00" * 8)
    with pytest.raises(ProtocolError, match="needs"):
        decode_payload(b"a\x03<u8\x01" + struct.pack(">Q", 10**12))   # no allocation first
    with pytest.raises(ProtocolError, match="trailing"):
        decode_payload(encode_payload(1) + b"N")


def test_in_memory_round_trip():
    a, b = InMemoryChannel.pair(timeout=2)
    try:
        for p in sample_payloads():
            a.send("data", p)
            assert_same(b.expect("data"), p)
            b.send("result", p)
            kind, got = a.recv()
            assert kind == "result"
            assert_same(got, p)
    finally:
        a.close()
        b.close()


def test_tcp_loopback_round_trip():
    def echo(server: TcpChannel) -> None:
        for _ in sample_payloads():
            server.send("result", server.expect("data"))
        server.expect("bye")

    with tcp_pair(echo) as (client, errors):
        for p in sample_payloads():
            client.send("data", p)
            assert_same(client.expect("result"), p)
        client.send("bye")
    assert not errors, errors


def test_tcp_large_array_round_trip():
    big = np.arange(3_000_000, dtype=np.uint64)            # 24 MB: many recv calls

    def echo(server: TcpChannel) -> None:
        server.send("ciphertexts", server.expect("ciphertexts"))

    with tcp_pair(echo) as (client, errors):
        client.send("ciphertexts", {"cts": [big]})
        assert np.array_equal(client.expect("ciphertexts")["cts"][0], big)
        assert client.traffic["online"].bytes_sent == frame_bytes({"cts": [big]})
    assert not errors, errors


# --------------------------------------------------------------------------- accounting


def test_accounting_is_exact_per_phase_with_rounds_on_direction_changes():
    a, b = InMemoryChannel.pair(timeout=2)
    keys, hello, reply = b"k" * 1000, {"plan": "ab" * 32}, np.zeros(10, dtype=np.uint64)
    shares = [np.ones(16, dtype=np.uint64), np.ones(16, dtype=np.uint64)]
    try:
        with a.phase("offline"), b.phase("offline"):
            a.send("hello", hello)                          # a -> b   flight 1
            a.send("keys", keys)                            #          (same flight)
            b.expect("hello")
            b.expect("keys")
            b.send("hello", hello)                          # b -> a   flight 2
            a.expect("hello")
        assert a.current_phase == "online" and b.current_phase == "online"
        a.send("ciphertexts", reply)                        # online: a -> b  flight 1
        b.expect("ciphertexts")
        b.send("ciphertexts", reply)                        # b -> a flight 2
        a.expect("ciphertexts")
        a.send("open", shares)                              # a -> b flight 3
        b.expect("open")

        n_hello, n_keys = frame_bytes(hello), frame_bytes(keys)
        n_ct, n_open = frame_bytes(reply), frame_bytes(shares)
        assert n_keys == HEADER_BYTES + 1 + 4 + 1000        # tag + length + bytes
        ta, tb = a.traffic, b.traffic
        assert (ta["offline"].bytes_sent, ta["offline"].bytes_received) == (
            n_hello + n_keys, n_hello)
        assert (tb["offline"].bytes_sent, tb["offline"].bytes_received) == (
            n_hello, n_hello + n_keys)
        assert (ta["offline"].messages_sent, ta["offline"].messages_received) == (2, 1)
        assert ta["offline"].rounds == tb["offline"].rounds == 2
        assert (ta["online"].bytes_sent, ta["online"].bytes_received) == (n_ct + n_open, n_ct)
        assert (tb["online"].bytes_sent, tb["online"].bytes_received) == (n_ct, n_ct + n_open)
        assert ta["online"].rounds == tb["online"].rounds == 3
        assert ta.rounds == 5
        assert ta.bytes_sent == tb.bytes_received == n_hello + n_keys + n_ct + n_open
        assert ta.by_kind == tb.by_kind == {"hello": 2 * n_hello, "keys": n_keys,
                                            "ciphertexts": 2 * n_ct, "open": n_open}
        assert ta.as_dict()["online"]["rounds"] == 3
        with pytest.raises(ValueError, match="unknown phase"), a.phase("setup"):
            pass
    finally:
        a.close()
        b.close()


def test_tcp_accounting_matches_in_memory():
    payload = {"x": np.arange(100, dtype=np.uint64)}

    def serve(server: TcpChannel) -> None:
        server.expect("data")
        server.send("result", payload)

    with tcp_pair(serve) as (client, errors):
        client.send("data", payload)
        client.expect("result")
        online = client.traffic["online"]
        assert online.bytes_sent == online.bytes_received == frame_bytes(payload)
        assert online.rounds == 2
    assert not errors, errors


# --------------------------------------------------------------------------- malformed frames


def test_bad_magic_version_and_type_in_memory():
    for raw, words in [
        (b"HTTP/1.1 200 OK\r\n", ("bad frame magic",)),
        (b"PIC\x02" + bytes([8]) + struct.pack(">I", 0), ("protocol version 2",)),
        (MAGIC + bytes([200]) + struct.pack(">I", 0), ("unknown message type 200",)),
        (MAGIC + bytes([MESSAGE_KINDS["data"]]) + struct.pack(">I", 2) + b"Zz",
         ("malformed payload", "unknown value tag")),
    ]:
        a, b = InMemoryChannel.pair(timeout=3)
        try:
            a.send_raw(raw)
            expect_error(b.recv, *words)
            expect_error(b.recv, "unusable after an earlier error")   # the channel is broken
        finally:
            a.close()
            b.close()


def test_bad_magic_over_tcp():
    def handler(conn: socket.socket) -> None:
        conn.sendall(b"GET / HTTP/1.1\r\n\r\n")
        time.sleep(0.5)

    with raw_server(handler) as port, TcpChannel.connect(HOST, port, timeout=5) as client:
        expect_error(client.recv, "bad frame magic")


def test_oversized_declared_length_rejected_before_reading_payload():
    # The peer declares 2 GiB and then stays silent: reading the payload would wait for the
    # 5 s timeout, so answering at once shows the length was checked first.
    def handler(conn: socket.socket) -> None:
        conn.sendall(MAGIC + bytes([MESSAGE_KINDS["ciphertexts"]]) + struct.pack(">I", 2**31))
        time.sleep(2.0)

    with raw_server(handler) as port, TcpChannel.connect(
            HOST, port, timeout=5, max_frame_bytes=1 << 20) as client:
        expect_error(client.recv, "2147483648", "over the limit of 1048576", within=1.5)

    a, b = InMemoryChannel.pair(timeout=1, max_frame_bytes=64)
    try:
        with pytest.raises(ProtocolError, match="over the frame limit of 64 bytes"):
            a.send("data", b"x" * 100)
        assert a.traffic.bytes_sent == 0
        a.send("data", b"x" * 10)                           # still usable: nothing was written
        assert b.expect("data") == b"x" * 10
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("cut", ["header", "payload"])
def test_truncated_frame_over_tcp(cut):
    frame = MAGIC + bytes([MESSAGE_KINDS["data"]]) + struct.pack(">I", 100) + b"y" * 40
    part = frame[:5] if cut == "header" else frame

    def handler(conn: socket.socket) -> None:
        conn.sendall(part)                                  # then close mid-frame

    with raw_server(handler) as port, TcpChannel.connect(HOST, port, timeout=10) as client:
        want = "of 9 frame header bytes" if cut == "header" else "'data' payload bytes"
        expect_error(client.recv, "truncated frame", want)


def test_truncated_frame_in_memory():
    a, b = InMemoryChannel.pair(timeout=10)
    a.send_raw(MAGIC + bytes([MESSAGE_KINDS["data"]]) + struct.pack(">I", 50) + b"z" * 7)
    a.close()
    expect_error(b.recv, "truncated frame", "after 7 of 50")
    b.close()


# --------------------------------------------------------------------------- peers that vanish


def test_unexpected_kind_and_peer_error_message():
    a, b = InMemoryChannel.pair(timeout=2)
    try:
        a.send("open", [np.zeros(2, dtype=np.uint64)])
        expect_error(lambda: b.recv("ciphertexts"), "expected a 'ciphertexts' message, got 'open'")
        c, d = InMemoryChannel.pair(timeout=2)
        c.send_error("plan hash mismatch")
        expect_error(lambda: d.recv("hello"), "peer reported an error: plan hash mismatch")
        with pytest.raises(ValueError, match="unknown message kind"):
            c.send("gossip", b"")
    finally:
        a.close()
        b.close()


def test_recv_timeout_with_silent_peer():
    a, b = InMemoryChannel.pair(timeout=5)
    try:
        err = expect_error(lambda: b.recv(timeout=0.3), "peer did not answer within 0.3 s",
                           within=2)
        assert "frame header" in str(err)
    finally:
        a.close()
        b.close()

    release = threading.Event()

    def silent(server: TcpChannel) -> None:
        release.wait(5)                                     # connected, never sends

    with tcp_pair(silent, timeout=0.5) as (client, errors):
        start = time.monotonic()
        expect_error(client.recv, "peer did not answer within 0.5 s", within=3)
        assert time.monotonic() - start >= 0.45
        release.set()
    assert not errors, errors


def test_peer_closed_cleanly():
    a, b = InMemoryChannel.pair(timeout=5)
    a.close()
    expect_error(b.recv, "peer closed the connection")
    b.close()
    c, d = InMemoryChannel.pair(timeout=5)
    d.close()
    expect_error(lambda: c.send("data", b"x"), "peer closed the connection")
    c.close()

    def close_at_once(server: TcpChannel) -> None:
        pass                                                # tcp_pair closes the server side

    with tcp_pair(close_at_once) as (client, errors):
        expect_error(client.recv, "peer closed the connection")
    assert not errors, errors


def test_connect_refused_is_prompt_protocol_error():
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    probe.bind((HOST, 0))
    port = probe.getsockname()[1]
    probe.close()                                           # nobody listens there now
    expect_error(lambda: TcpChannel.connect(HOST, port, timeout=0.5), f"{HOST}:{port}",
                 "within 0.5 s", within=3)


def test_accept_timeout():
    with TcpChannel.listen(HOST, 0) as listener:
        expect_error(lambda: listener.accept(timeout=0.2), "no peer connected within 0.2 s",
                     within=3)


PEER_CODE = """
import os, sys
from picompile.runtime.channel import TcpChannel
listener = TcpChannel.listen("127.0.0.1", 0)
print(listener.port, flush=True)
server = listener.accept(timeout=15)
server.recv("data", timeout=15)
os._exit(1)          # dies without replying or closing anything
"""


def test_peer_process_killed_mid_exchange():
    proc = subprocess.Popen([sys.executable, "-c", PEER_CODE], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    client = None
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 20)
        assert ready, "peer process did not start"
        line = proc.stdout.readline().strip()
        assert line.isdigit(), (line, proc.stderr.read() if proc.poll() is not None else "")
        client = TcpChannel.connect(HOST, int(line), timeout=5)
        client.send("data", {"share": np.arange(8, dtype=np.uint64)})
        err = expect_error(lambda: client.recv("data", timeout=3), within=4)
        assert "peer closed the connection" in str(err), str(err)
        assert proc.wait(timeout=10) == 1
    finally:
        if client is not None:
            client.close()
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()
