"""listening — the line ``picompile serve`` and ``picompile dealer`` print once their socket is
bound, and how a launcher (tests, benchmarks) reads the port back from the service's log.

Reads: a started service process and the file its output goes to.
Writes: the announcement line (:func:`announcement`) and the port (:func:`wait_for_port`).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

LISTENING = "listening on"


def announcement(host: str, port: int, role: str = "") -> str:
    """``[ROLE ]listening on HOST:PORT``: what a service prints when it accepts connections."""
    return f"{role + ' ' if role else ''}{LISTENING} {host}:{port}"


def wait_for_port(process: subprocess.Popen, log: Path, timeout: float, name: str,
                  error: type[Exception] = RuntimeError, poll: float = 0.1) -> int:
    """The port ``process`` announced in ``log``; ``error`` (with the log) when it exits first,
    and after killing it when it has not announced one within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text()
        if LISTENING in text:
            return int(text.split(LISTENING)[1].split()[0].rsplit(":", 1)[1])
        if process.poll() is not None:
            raise error(f"{name} exited: {text}")
        time.sleep(poll)
    process.kill()
    raise error(f"{name} did not start: {log.read_text()}")
