"""ot.exchange — one message each way between the two parties, client first.

Reads: this party's payload; the peer's ``ot`` message from the channel.
Writes: this party's ``ot`` message. The client sends and then receives, the server receives
and then sends, so two large messages never wait on each other's socket buffers.
"""

from __future__ import annotations

from typing import Any

from picompile.runtime.channel import Channel

#: Party indices (as in :mod:`picompile.runtime.mpc`): the client is P0.
CLIENT, SERVER = 0, 1


def swap(channel: Channel, party: int, payload: Any) -> Any:
    """Send ``payload`` as an ``ot`` message and return the peer's."""
    if party == CLIENT:
        channel.send("ot", payload)
        return channel.expect("ot")
    received = channel.expect("ot")
    channel.send("ot", payload)
    return received
