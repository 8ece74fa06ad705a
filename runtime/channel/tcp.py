"""TCP channel endpoints: a connected socket (:class:`TcpChannel`) and a listener that accepts
them (:class:`TcpListener`).

Reads: frames from a connected TCP socket (every operation under a timeout).
Writes: frames to that socket (TCP_NODELAY). Connection, send and receive failures and timeouts
are each a :class:`~picompile.errors.ProtocolError` naming what was wrong.
"""

from __future__ import annotations

import contextlib
import socket
import time
from typing import Any

from picompile.errors import ProtocolError
from picompile.runtime.channel.base import DEFAULT_TIMEOUT, Channel, timeout_error


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
                    raise self._fail(str(timeout_error(wait, what)))
                self.sock.settimeout(remaining)
                k = self.sock.recv_into(view[got:], n - got)
                if k == 0:
                    break
                got += k
        except TimeoutError:
            raise self._fail(str(timeout_error(wait, what))) from None
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
