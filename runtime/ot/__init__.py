"""ot — oblivious transfer between the two hybrid parties (no third party).

Reads: a :class:`~picompile.runtime.channel.Channel` to the peer, choice bits and counts.
Writes: ``ot`` messages; random and correlated OT outputs as numpy arrays.

Modules (docs/protocol.md §11): :mod:`.primitives` (AES-CTR PRG, fixed-key-AES correlation
robust hash, SHA-256 key derivation), :mod:`.base` (Chou–Orlandi base OTs on Ed25519 through
libsodium), :mod:`.iknp` (IKNP extension: sender and receiver state, bit-matrix transpose),
:mod:`.exchange` (the simultaneous swap of one message each way over the channel).
"""

from picompile.runtime.ot.base import BASE_OTS, base_ot_receive, base_ot_send
from picompile.runtime.ot.exchange import swap
from picompile.runtime.ot.iknp import ExtensionReceiver, ExtensionSender, ot_pair
from picompile.runtime.ot.primitives import correlation_robust_hash, prg

__all__ = ["BASE_OTS", "ExtensionReceiver", "ExtensionSender", "base_ot_receive", "base_ot_send",
           "correlation_robust_hash", "ot_pair", "prg", "swap"]
