"""MPC share evaluator: 2-party additive secret sharing over Z_2^64, vectorized in numpy.

Reads: ring-encoded (uint64) or float arrays to share, a :class:`FixedPoint` configuration and a
dealer seed (all through a :class:`Session`).
Writes: :class:`Shared` (additive, x = p0 + p1 mod 2^64) and :class:`BoolShared` (XOR,
x = p0 ^ p1) pairs of uint64 arrays, one array per party, and, in the session's
:class:`Transcript`, one :class:`Message` per send. Nothing is sent over a network.

Security model. Two semi-honest (honest-but-curious), non-colluding parties P0 and P1 and a
trusted dealer. The dealer runs in the OFFLINE phase: it sees no input, only shapes, and hands
each party its share of input-independent correlated randomness (Beaver triples, square pairs,
bit-sliced AND triples, random shared bits). The ONLINE phase is the parties' exchange of masked
values. Both parties run in this one process, but every protocol step is written as a party-local
computation that reads only that party's own shares, its own dealer material and the opened
values, followed by :func:`open_`, which is the only place where data crosses from one party to
the other (and the only online traffic the transcript counts). Each opened value is masked by a
fresh uniform one-time pad from the dealer (x - a for a uniform a; X ^ A for uniform bits A), so a
party's online view is uniformly distributed and independent of the inputs. numpy's PCG64 is NOT
a cryptographic generator: this package models the protocol and its costs; it is not a secure
implementation. Inputs are assumed to arrive already shared (:func:`share` records nothing).

Modules (each depends only on those above it):

* :mod:`.sharing` — ring, :class:`FixedPoint`, :class:`Shared`, :class:`BoolShared`, ``share``,
  ``reconstruct``;
* :mod:`.transcript` — :class:`Message`, :class:`Transcript`;
* :mod:`.dealer` — :class:`Dealer` (offline correlated randomness);
* :mod:`.session` — :class:`Session`, :func:`open_`;
* :mod:`.arithmetic` — local linear ops, SecureML truncation, Beaver ``mul`` and ``square``;
* :mod:`.boolean` — bit-sliced AND rounds, ``msb``, ``drelu``, ``a2b``, ``b2a``;
* :mod:`.protocols` — ``relu``, ``max_pool_pairwise``, ``maximum_reduce``, ``polynomial``,
  ``quadratic``;
* :mod:`.costs` — ``cost(op, n)``, the analytic bytes and rounds (docs/mpc.md).

This package re-exports their public names: use ``from picompile.runtime import mpc`` and
``mpc.X``.
"""

from __future__ import annotations

from picompile.runtime.mpc.arithmetic import (
    add,
    add_public,
    add_public_ring,
    mul,
    mul_public,
    mul_public_int,
    neg,
    same_shape,
    square,
    sub,
    truncate,
)
from picompile.runtime.mpc.boolean import A2B_AND_GATES, MSB_AND_GATES, a2b, b2a, drelu, msb
from picompile.runtime.mpc.costs import LOCAL_OPS, cost
from picompile.runtime.mpc.dealer import Dealer
from picompile.runtime.mpc.protocols import (
    max_pool_pairwise,
    maximum_reduce,
    polynomial,
    quadratic,
    relu,
)
from picompile.runtime.mpc.session import Session, open_
from picompile.runtime.mpc.sharing import (
    MASK64,
    RING_BITS,
    BoolShared,
    FixedPoint,
    Shared,
    reconstruct,
    share,
    u64,
)
from picompile.runtime.mpc.transcript import PARTIES, PHASES, Message, Transcript, packed_bytes

__all__ = [
    "A2B_AND_GATES", "LOCAL_OPS", "MASK64", "MSB_AND_GATES", "PARTIES", "PHASES", "RING_BITS",
    "BoolShared", "Dealer", "FixedPoint", "Message", "Session", "Shared", "Transcript",
    "a2b", "add", "add_public", "add_public_ring", "b2a", "cost", "drelu", "max_pool_pairwise",
    "maximum_reduce", "msb", "mul", "mul_public", "mul_public_int", "neg", "open_",
    "packed_bytes", "polynomial", "quadratic", "reconstruct", "relu", "same_shape", "share",
    "square", "sub", "truncate", "u64",
]
