"""MPC share evaluator: 2-party additive secret sharing over Z_2^64, vectorized in numpy.

Reads: ring-encoded (uint64) or float arrays to share, a :class:`FixedPoint` configuration and a
dealer seed (all through a :class:`Session`).
Writes: :class:`Shared` (additive, x = p0 + p1 mod 2^64) and :class:`BoolShared` (XOR,
x = p0 ^ p1) pairs of uint64 arrays, one array per party, and, in the session's
:class:`Transcript`, one :class:`Message` per send: phase ("offline" for the dealer, "online" for
the parties), round, sender, receiver, byte count and label. Nothing is sent over a network.

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
a cryptographic generator: this module models the protocol and its costs; it is not a secure
implementation. Inputs are assumed to arrive already shared (:func:`share` records nothing).

Fixed point. A real x is encoded as round(x * 2^f) mod 2^64 (two's complement), f =
``fractional_bits``; encoding needs |x| < 2^(63 - f). A product of two encodings carries scale
2^(2f) and is brought back by :func:`truncate`.

Truncation (SecureML, Mohassel-Zhang 2017) is local: P0 computes s0 >> f (arithmetic), P1 computes
-((-s1) >> f). If |x| < 2^l (x read as a signed ring element) the result is floor(x / 2^f) or
floor(x / 2^f) + 1 (an error below one ulp), except when s0 - x wraps around as a signed 64-bit
integer, which happens with probability exactly |x| / 2^64 < 2^(l - 64) for a uniform s0 (SecureML
states the looser 2^(l + 1 - 64)). On failure the result is off by about 2^(64 - f): a
catastrophic, not a small, error. With f = 16 and fixed-point products kept below 2^40 in ring
terms (|x * y| < 2^8 in reals) the failure probability is below 2^-24 per element.

Costs per call on n elements (both parties together; see :func:`cost` and docs/mpc.md):
mul 1 round / 32n bytes online, square 1 / 16n, msb and drelu 7 rounds (a log-depth carry tree of
183 AND gates per element), b2a 1 round / 2 ceil(n / 8), relu 9 rounds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

RING_BITS = 64
MASK64 = (1 << 64) - 1
PHASES = ("offline", "online")
PARTIES = ("P0", "P1")

# AND gates per element in each of the 7 rounds of the MSB carry tree and of the full A2B.
MSB_AND_GATES = (63, 63, 31, 15, 7, 3, 1)
A2B_AND_GATES = (63, 123, 120, 114, 102, 78, 31)

LOCAL_OPS = frozenset({"add", "sub", "neg", "add_public", "mul_public_int", "mul_public",
                       "truncate", "polynomial1"})


def _u64(x: object) -> np.ndarray:
    return np.asarray(x, dtype=np.uint64)


def _ring_int(k: object) -> np.ndarray:
    """Python/numpy signed integers -> their ring elements (two's complement)."""
    return np.asarray(k, dtype=np.int64).view(np.uint64)


def _ceil8(bits: int) -> int:
    return -(-bits // 8)


# --------------------------------------------------------------------------- fixed point


@dataclass(frozen=True)
class FixedPoint:
    """Fixed-point encoding in Z_2^64: x -> round(x * 2^f) mod 2^64, two's complement.

    ``encode`` needs |x| < 2^(63 - f). ``decode`` reads the ring element as a signed 64-bit
    integer and divides by 2^f (exact while |round(x * 2^f)| <= 2^53, i.e. within float64's
    mantissa). A product of two encodings must stay below 2^62 in magnitude at scale 2^(2f)
    before :func:`truncate`, and smaller still for a small truncation failure probability.
    """

    fractional_bits: int = 16
    ring_bits: int = RING_BITS

    def __post_init__(self) -> None:
        if self.ring_bits != RING_BITS:
            raise ValueError("only the ring Z_2^64 is implemented")
        if not 0 <= self.fractional_bits < 62:
            raise ValueError("fractional_bits must be in [0, 62)")

    @property
    def ulp(self) -> float:
        return 2.0 ** -self.fractional_bits

    @property
    def max_abs(self) -> float:
        """Encodable values satisfy |x| < max_abs = 2^(63 - f)."""
        return 2.0 ** (RING_BITS - 1 - self.fractional_bits)

    def encode(self, x: object) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if not np.all(np.isfinite(x)) or np.any(np.abs(x) >= self.max_abs):
            raise ValueError(f"fixed-point encode needs finite |x| < 2^{63 - self.fractional_bits}")
        return np.rint(np.ldexp(x, self.fractional_bits)).astype(np.int64).view(np.uint64)

    def decode(self, v: object) -> np.ndarray:
        return np.ldexp(_u64(v).view(np.int64).astype(np.float64), -self.fractional_bits)


# --------------------------------------------------------------------------- shares


@dataclass
class Shared:
    """Additive shares: the secret is p0 + p1 mod 2^64; party i holds only ``p<i>``."""

    p0: np.ndarray
    p1: np.ndarray

    def __post_init__(self) -> None:
        self.p0 = _u64(self.p0)
        self.p1 = _u64(self.p1)
        if self.p0.shape != self.p1.shape:
            raise ValueError(f"share shapes differ: {self.p0.shape} vs {self.p1.shape}")

    @property
    def shape(self) -> tuple[int, ...]:
        return self.p0.shape

    @property
    def size(self) -> int:
        return int(self.p0.size)

    def share_of(self, party: int) -> np.ndarray:
        return self.p0 if party == 0 else self.p1

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter((self.p0, self.p1))


@dataclass
class BoolShared(Shared):
    """XOR shares of bit-sliced words: the secret is p0 ^ p1 (64 boolean values per uint64).

    A shared single bit (MSB, DReLU) is a BoolShared whose words are 0 or 1.
    """

    def __xor__(self, other: BoolShared) -> BoolShared:
        return BoolShared(self.p0 ^ other.p0, self.p1 ^ other.p1)

    def shl(self, bits: int) -> BoolShared:
        return BoolShared(self.p0 << np.uint64(bits), self.p1 << np.uint64(bits))

    def shr(self, bits: int) -> BoolShared:
        return BoolShared(self.p0 >> np.uint64(bits), self.p1 >> np.uint64(bits))


def share(x_ring: object, rng: np.random.Generator) -> Shared:
    """Split ring elements into two uniformly random additive shares (records nothing)."""
    x = _u64(x_ring)
    s0 = rng.integers(0, MASK64, size=x.shape, dtype=np.uint64, endpoint=True)
    with np.errstate(over="ignore"):
        return Shared(s0, x - s0)


def reconstruct(s0: Shared | np.ndarray, s1: np.ndarray | None = None) -> np.ndarray:
    """p0 + p1 mod 2^64 (or p0 ^ p1 for a BoolShared). A test oracle, not a protocol step."""
    if isinstance(s0, BoolShared):
        return s0.p0 ^ s0.p1
    if isinstance(s0, Shared):
        s0, s1 = s0.p0, s0.p1
    with np.errstate(over="ignore"):
        return _u64(s0) + _u64(s1)


# --------------------------------------------------------------------------- transcript


@dataclass(frozen=True)
class Message:
    phase: str
    round: int
    sender: str
    receiver: str
    nbytes: int
    label: str
    payload: tuple[np.ndarray, ...] | None = None


@dataclass
class Transcript:
    """Log of every send. ``rounds(phase)`` counts sequential exchanges: the messages both parties
    send at the same time (one :func:`open_`) share one round; each dealer flight is one offline
    round (the dealer's material is input independent, so all flights could be sent as one)."""

    keep_payloads: bool = False
    messages: list[Message] = field(default_factory=list)
    round_counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PHASES, 0))

    def new_round(self, phase: str) -> int:
        if phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r}")
        self.round_counts[phase] += 1
        return self.round_counts[phase] - 1

    def record(self, phase: str, round_: int, sender: str, receiver: str, nbytes: int,
               label: str, payload: Sequence[np.ndarray] | None = None) -> None:
        kept = tuple(np.array(p, copy=True) for p in payload) if (
            self.keep_payloads and payload is not None) else None
        self.messages.append(Message(phase, round_, sender, receiver, int(nbytes), label, kept))

    def bytes(self, phase: str, sender: str | None = None) -> int:
        return sum(m.nbytes for m in self.messages
                   if m.phase == phase and (sender is None or m.sender == sender))

    def rounds(self, phase: str) -> int:
        return self.round_counts[phase]

    def view(self, party: int, phase: str = "online") -> list[Message]:
        """The messages party ``party`` received in ``phase``."""
        return [m for m in self.messages if m.phase == phase and m.receiver == PARTIES[party]]

    def counts(self) -> dict[str, int]:
        return {"online_rounds": self.rounds("online"), "online_bytes": self.bytes("online"),
                "offline_rounds": self.rounds("offline"), "offline_bytes": self.bytes("offline")}


# --------------------------------------------------------------------------- dealer


class Dealer:
    """Trusted dealer (OFFLINE phase): input-independent correlated randomness.

    Every method returns a pair indexed by party: element ``i`` is exactly what party i receives,
    and each call records one offline flight (dealer -> P0 and dealer -> P1) in the transcript.
    """

    def __init__(self, seed: int | None, transcript: Transcript) -> None:
        self.rng = np.random.default_rng(seed)
        self.transcript = transcript

    def _uniform(self, shape: tuple[int, ...]) -> np.ndarray:
        return self.rng.integers(0, MASK64, size=shape, dtype=np.uint64, endpoint=True)

    def _split(self, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        v0 = self._uniform(v.shape)
        return v0, v - v0

    def _xsplit(self, v: np.ndarray, mask: int) -> tuple[np.ndarray, np.ndarray]:
        v0 = self._uniform(v.shape) & np.uint64(mask)
        return v0, v ^ v0

    def _send(self, label: str, nbytes_each: int, parts: tuple[tuple, tuple]) -> None:
        rnd = self.transcript.new_round("offline")
        for i in (0, 1):
            payload = [a for item in parts[i] for a in (item if isinstance(item, tuple)
                                                        else (item,))]
            self.transcript.record("offline", rnd, "dealer", PARTIES[i], nbytes_each, label,
                                   payload)

    def beaver_triples(self, shape: tuple[int, ...], label: str = "mul") -> tuple[tuple, tuple]:
        """Shares of (a, b, c = a*b) for uniform a, b: 24 bytes per element to each party."""
        with np.errstate(over="ignore"):
            a, b = self._uniform(shape), self._uniform(shape)
            (a0, a1), (b0, b1), (c0, c1) = self._split(a), self._split(b), self._split(a * b)
        parts = ((a0, b0, c0), (a1, b1, c1))
        self._send(label, 24 * int(np.prod(shape)), parts)
        return parts

    def square_pairs(self, shape: tuple[int, ...], label: str = "square") -> tuple[tuple, tuple]:
        """Shares of (a, a^2) for uniform a: 16 bytes per element to each party."""
        with np.errstate(over="ignore"):
            a = self._uniform(shape)
            (a0, a1), (q0, q1) = self._split(a), self._split(a * a)
        parts = ((a0, q0), (a1, q1))
        self._send(label, 16 * int(np.prod(shape)), parts)
        return parts

    def and_triples(self, specs: Sequence[tuple[tuple[int, ...], int]],
                    label: str = "and") -> list[tuple[tuple, tuple]]:
        """Bit-sliced AND triples, one per (shape, mask) spec: XOR shares of words A, B, C = A & B
        that are uniform on the mask's bits and 0 elsewhere. Each party receives 3 bits per gate,
        all the flight's bits packed together: ceil(3 * gates / 8) bytes."""
        out, gates = [], 0
        for shape, mask in specs:
            m = np.uint64(mask)
            a, b = self._uniform(shape) & m, self._uniform(shape) & m
            (a0, a1), (b0, b1), (c0, c1) = (self._xsplit(a, mask), self._xsplit(b, mask),
                                            self._xsplit(a & b, mask))
            out.append(((a0, b0, c0), (a1, b1, c1)))
            gates += mask.bit_count() * int(np.prod(shape))
        parts = (tuple(t[0] for t in out), tuple(t[1] for t in out))
        self._send(label, _ceil8(3 * gates), parts)
        return out

    def random_bits(self, shape: tuple[int, ...], label: str = "b2a") -> tuple[tuple, tuple]:
        """A uniform bit r shared twice: XOR shares (1 bit) and additive shares (8 bytes)."""
        n = int(np.prod(shape))
        r = self._uniform(shape) & np.uint64(1)
        rb0, rb1 = self._xsplit(r, 1)
        with np.errstate(over="ignore"):
            ra0, ra1 = self._split(r)
        parts = ((rb0, ra0), (rb1, ra1))
        self._send(label, _ceil8(n) + 8 * n, parts)
        return parts


# --------------------------------------------------------------------------- session, open


@dataclass
class Session:
    """Both parties of one evaluation: fixed-point config, dealer and transcript.

    ``dealer_seed`` seeds the dealer's generator, ``input_seed`` the generator that
    :meth:`share_input` uses to split inputs. ``keep_payloads`` stores every message's content.

    Two-party mode (``picompile.runtime.hybrid``): each process holds one party's shares (the
    other party's are placeholders), ``exchange(label, own_messages, op, masks)`` sends this
    party's messages to the peer and returns the peer's, and ``dealer`` is replaced by a proxy
    that receives this party's part of the dealer's material over the network.
    """

    fp: FixedPoint = field(default_factory=FixedPoint)
    dealer_seed: int | None = 0
    input_seed: int | None = None
    keep_payloads: bool = False
    exchange: Callable[..., list[np.ndarray]] | None = None
    transcript: Transcript = field(init=False)
    dealer: Dealer = field(init=False)
    input_rng: np.random.Generator = field(init=False)

    def __post_init__(self) -> None:
        self.transcript = Transcript(keep_payloads=self.keep_payloads)
        self.dealer = Dealer(self.dealer_seed, self.transcript)
        self.input_rng = np.random.default_rng(self.input_seed)

    def share_input(self, x: object) -> Shared:
        """Encode floats in fixed point and share them (inputs arrive pre-shared: not logged)."""
        return share(self.fp.encode(x), self.input_rng)

    def reveal(self, x: Shared) -> np.ndarray:
        """Open ``x`` to both parties (one logged online round) and decode it."""
        (v,) = open_(self, "reveal", [x.p0], [x.p1])
        return self.fp.decode(v)


def open_(sess: Session, label: str, msg0: Sequence[np.ndarray], msg1: Sequence[np.ndarray],
          *, op: str = "add", nbits: int | None = None,
          masks: Sequence[int] | None = None) -> list[np.ndarray]:
    """One online round: P0 sends ``msg0`` (its shares) to P1 while P1 sends ``msg1`` to P0; both
    then know the opened values (sum mod 2^64 for op="add", XOR for op="xor").

    Each party's message counts 8 bytes per ring element, or, for op="xor", ``nbits`` packed bits
    (the bits under the gates' masks) rounded up to whole bytes. ``masks`` (one per array, xor
    only) lets a two-party exchange put exactly those bits on the wire.
    """
    if len(msg0) != len(msg1):
        raise ValueError("both parties must send the same number of arrays")
    if op == "add":
        nbytes = 8 * sum(int(np.asarray(m).size) for m in msg0)
    elif op == "xor":
        if nbits is None:
            raise ValueError("op='xor' needs nbits")
        nbytes = _ceil8(nbits)
    else:
        raise ValueError(f"unknown op {op!r}")
    tr = sess.transcript
    rnd = tr.new_round("online")
    tr.record("online", rnd, "P0", "P1", nbytes, label, msg0)
    tr.record("online", rnd, "P1", "P0", nbytes, label, msg1)
    if sess.exchange is not None:
        return sess.exchange(label, msg0, msg1, op, masks)
    with np.errstate(over="ignore"):
        if op == "add":
            return [_u64(a) + _u64(b) for a, b in zip(msg0, msg1, strict=True)]
        return [_u64(a) ^ _u64(b) for a, b in zip(msg0, msg1, strict=True)]


# --------------------------------------------------------------------------- local ops


def add(x: Shared, y: Shared) -> Shared:
    with np.errstate(over="ignore"):
        return Shared(x.p0 + y.p0, x.p1 + y.p1)


def sub(x: Shared, y: Shared) -> Shared:
    with np.errstate(over="ignore"):
        return Shared(x.p0 - y.p0, x.p1 - y.p1)


def neg(x: Shared) -> Shared:
    with np.errstate(over="ignore"):
        return Shared(np.negative(x.p0), np.negative(x.p1))


def add_public_ring(x: Shared, c_ring: object) -> Shared:
    """x + c for a public ring constant: only party 0 adds it."""
    c = np.broadcast_to(_u64(c_ring), x.shape)
    with np.errstate(over="ignore"):
        return Shared(x.p0 + c, x.p1.copy())


def add_public(sess: Session, x: Shared, c: object) -> Shared:
    """x + c for public reals c (fixed-point encoded; broadcast to x's shape)."""
    return add_public_ring(x, sess.fp.encode(c))


def mul_public_int(x: Shared, k: object) -> Shared:
    """k * x for public (possibly negative) integers k: exact in the ring, no truncation."""
    kr = np.broadcast_to(_ring_int(k), x.shape)
    with np.errstate(over="ignore"):
        return Shared(x.p0 * kr, x.p1 * kr)


def mul_public(sess: Session, x: Shared, c: object) -> Shared:
    """c * x for public reals c: multiply by encode(c), then truncate by f (local)."""
    return truncate(mul_public_int(x, sess.fp.encode(c).view(np.int64)),
                    sess.fp.fractional_bits)


def truncate(x: Shared, bits: int) -> Shared:
    """SecureML local truncation by ``bits``: P0 takes s0 >> bits (arithmetic shift), P1 takes
    -((-s1) >> bits). Result floor(x / 2^bits) + {0, 1} except with probability |x| / 2^64."""
    if not 0 <= bits < RING_BITS:
        raise ValueError("bits must be in [0, 64)")
    if bits == 0:
        return Shared(x.p0.copy(), x.p1.copy())
    with np.errstate(over="ignore"):
        t0 = (x.p0.view(np.int64) >> bits).view(np.uint64)                    # party 0 only
        t1 = np.negative((np.negative(x.p1).view(np.int64) >> bits).view(np.uint64))  # party 1
    return Shared(t0, t1)


# --------------------------------------------------------------------------- Beaver products


def _beaver_masks(x_i: np.ndarray, y_i: np.ndarray, a_i: np.ndarray,
                  b_i: np.ndarray) -> list[np.ndarray]:
    """Party i's message: its shares of e = x - a and f = y - b."""
    return [x_i - a_i, y_i - b_i]


def _beaver_combine(party: int, e: np.ndarray, f: np.ndarray, a_i: np.ndarray, b_i: np.ndarray,
                    c_i: np.ndarray) -> np.ndarray:
    """Party i's share of x*y = c + e*b + f*a + e*f (the public e*f added by party 0 only)."""
    z = c_i + e * b_i + f * a_i
    return z + e * f if party == 0 else z


def _same_shape(x: Shared, y: Shared) -> tuple[Shared, Shared]:
    if x.shape == y.shape:
        return x, y
    shape = np.broadcast_shapes(x.shape, y.shape)
    bx = Shared(*(np.broadcast_to(s, shape).copy() for s in x))
    by = Shared(*(np.broadcast_to(s, shape).copy() for s in y))
    return bx, by


def mul(sess: Session, x: Shared, y: Shared, *, rescale: bool = True) -> Shared:
    """Elementwise Beaver product. Online: one round, each party sends e_i, f_i (16 bytes per
    element). Offline: a triple, 24 bytes per element to each party. ``rescale`` truncates by f
    (fixed point); with rescale=False the result is x*y mod 2^64 exactly."""
    x, y = _same_shape(x, y)
    triple = sess.dealer.beaver_triples(x.shape, "mul")
    with np.errstate(over="ignore"):
        msgs = [_beaver_masks(x.share_of(i), y.share_of(i), *triple[i][:2]) for i in (0, 1)]
        e, f = open_(sess, "mul.ef", msgs[0], msgs[1])
        z = Shared(*(_beaver_combine(i, e, f, *triple[i]) for i in (0, 1)))
    return truncate(z, sess.fp.fractional_bits) if rescale else z


def square(sess: Session, x: Shared, *, rescale: bool = True) -> Shared:
    """Elementwise x^2 from a square pair (a, a^2): open e = x - a (one round, 8 bytes per element
    per party), then x^2 = a^2 + 2*e*a + e^2 locally. Offline: 16 bytes per element per party."""
    pair = sess.dealer.square_pairs(x.shape, "square")
    with np.errstate(over="ignore"):
        msgs = [[x.share_of(i) - pair[i][0]] for i in (0, 1)]
        (e,) = open_(sess, "square.e", msgs[0], msgs[1])
        parts = []
        for i in (0, 1):
            a_i, q_i = pair[i]
            z = q_i + np.uint64(2) * e * a_i
            parts.append(z + e * e if i == 0 else z)
    z = Shared(*parts)
    return truncate(z, sess.fp.fractional_bits) if rescale else z


# --------------------------------------------------------------------------- boolean circuits


def _and_round(sess: Session, label: str,
               gates: Sequence[tuple[BoolShared, BoolShared, int]]) -> list[BoolShared]:
    """One round of bit-sliced AND gates. Each gate is (X, Y, mask): the bits of X & Y under mask
    (bits outside are 0 in the result). Each party sends its shares of E = X ^ A and F = Y ^ B on
    the masked bits only: 2 bits per gate, packed."""
    triples = sess.dealer.and_triples([(x.shape, mask) for x, _, mask in gates], label)
    msgs: tuple[list, list] = ([], [])
    for i in (0, 1):                                  # party-local: own shares and triples only
        for (x, y, mask), t in zip(gates, triples, strict=True):
            a_i, b_i, _ = t[i]
            m = np.uint64(mask)
            msgs[i].extend(((x.share_of(i) ^ a_i) & m, (y.share_of(i) ^ b_i) & m))
    nbits = sum(2 * mask.bit_count() * x.size for x, _, mask in gates)
    masks = [mask for _, _, mask in gates for _ in (0, 1)]
    opened = open_(sess, label, msgs[0], msgs[1], op="xor", nbits=nbits, masks=masks)
    out = []
    for j, t in enumerate(triples):
        e, f = opened[2 * j], opened[2 * j + 1]
        parts = []
        for i in (0, 1):
            a_i, b_i, c_i = t[i]
            z = c_i ^ (e & b_i) ^ (f & a_i)
            parts.append(z ^ (e & f) if i == 0 else z)
        out.append(BoolShared(*parts))
    return out


def _tops(width: int) -> int:
    """Mask of the top bit of every aligned group of ``width`` bits in a 64-bit word."""
    return sum(1 << (j * width + width - 1) for j in range(RING_BITS // width))


def _bits_mask(lo: int, hi: int) -> int:
    """Mask of bits lo..hi inclusive (0 when lo > hi)."""
    return 0 if lo > hi else ((1 << (hi + 1)) - 1) ^ ((1 << lo) - 1)


def _input_bits(x: Shared, shift: int) -> tuple[BoolShared, BoolShared, BoolShared]:
    """Party 0's share as the boolean sharing [s0, 0], party 1's as [0, s1], and p = s0 ^ s1."""
    a = x.p0 << np.uint64(shift)
    b = x.p1 << np.uint64(shift)
    zero = np.zeros_like(a)
    return BoolShared(a, zero), BoolShared(zero, b), BoolShared(a, b)


def _prefix_rounds(sess: Session, label: str, g: BoolShared, p: BoolShared,
                   masks: Callable[[int], tuple[int, int]]) -> BoolShared:
    """Six parallel-prefix rounds over generate/propagate bits (spans 1, 2, 4, ..., 32).

    Round k: G ^= P & (G << s) on the bits ``masks(s)[0]`` selects, and P &= P << s on
    ``masks(s)[1]`` (skipped when empty); one AND round each. Returns the final G.
    """
    for k in range(6):
        span = 1 << k
        mask_g, mask_p = masks(span)
        gates = [(p, g.shl(span), mask_g)]
        if mask_p:
            gates.append((p, p.shl(span), mask_p))
        res = _and_round(sess, f"{label}{k}", gates)
        g = g ^ res[0]
        if mask_p:
            p = res[1]
    return g


def msb(sess: Session, x: Shared) -> BoolShared:
    """XOR-shared most significant bit of x (1 for negative x), exact for every x and split.

    MSB = s0_63 ^ s1_63 ^ c_63, where c_63 is the carry into bit 63 of s0 + s1. With both shares
    shifted left by one, c_63 is the carry out of a 64-bit addition: the group generate G[0..63]
    of a binary carry tree. Round 1: g = s0 & s1 (63 gates); rounds 2-7: level k merges groups of
    2^k bits, (G, P) = (G_hi ^ P_hi & G_lo, P_hi & P_lo), at the groups' top bits, all groups of
    all elements in one word operation; the lowest group's P is never needed. 183 AND gates,
    7 rounds per element.
    """
    a, b, p = _input_bits(x, 1)
    (g,) = _and_round(sess, "msb.g", [(a, b, MASK64 ^ 1)])

    def masks(span: int) -> tuple[int, int]:
        mask_g = _tops(2 * span)
        return mask_g, mask_g & ~((1 << (2 * span)) - 1)

    g = _prefix_rounds(sess, "msb.tree", g, p, masks)
    carry = g.shr(RING_BITS - 1)
    return BoolShared((x.p0 >> np.uint64(63)) ^ carry.p0, (x.p1 >> np.uint64(63)) ^ carry.p1)


def drelu(sess: Session, x: Shared) -> BoolShared:
    """XOR-shared [x >= 0] = 1 - MSB(x): party 0 flips its bit. Same cost as :func:`msb`."""
    m = msb(sess, x)
    return BoolShared(m.p0 ^ np.uint64(1), m.p1)


def a2b(sess: Session, x: Shared) -> BoolShared:
    """Arithmetic to boolean: XOR shares of all 64 bits of x (bit-sliced, one word per element).

    Kogge-Stone parallel-prefix adder of [s0, 0] and [0, s1]: round 1 g = s0 & s1 (bits 0..62),
    rounds 2-7 level k (span s = 2^k): G[i] ^= P[i] & G[i-s] for i in [s, 62] and
    P[i] &= P[i-s] for i in [2s, 62]; then x = s0 ^ s1 ^ (G << 1). 631 AND gates, 7 rounds.
    """
    a, b, p0 = _input_bits(x, 0)
    (g,) = _and_round(sess, "a2b.g", [(a, b, _bits_mask(0, 62))])
    g = _prefix_rounds(sess, "a2b.prefix", g, p0,
                       lambda span: (_bits_mask(span, 62), _bits_mask(2 * span, 62)))
    return p0 ^ g.shl(1)


def b2a(sess: Session, bit: BoolShared) -> Shared:
    """Bit to arithmetic with a dealer bit r shared both ways: open c = b ^ r (1 bit per element
    per party, one round), then [b] = c + [r] - 2c[r] locally (c added by party 0 only)."""
    rnd = sess.dealer.random_bits(bit.shape, "b2a")
    one = np.uint64(1)
    msgs = [[(bit.share_of(i) ^ rnd[i][0]) & one] for i in (0, 1)]
    (c,) = open_(sess, "b2a.c", msgs[0], msgs[1], op="xor", nbits=bit.size, masks=[1])
    parts = []
    with np.errstate(over="ignore"):
        for i in (0, 1):
            r_i = rnd[i][1]
            z = r_i - np.uint64(2) * c * r_i
            parts.append(z + c if i == 0 else z)
    return Shared(*parts)


def relu(sess: Session, x: Shared) -> Shared:
    """ReLU(x) = x * DReLU(x): DReLU (7 rounds), B2A (1), Beaver product (1) = 9 rounds.

    The bit is the integer 0 or 1 (scale 1, not 2^f), so the product is not truncated: the result
    is exactly x or 0, in the ring and in fixed point (no truncation error, no failure)."""
    bit = b2a(sess, drelu(sess, x))
    return mul(sess, x, bit, rescale=False)


def max_pool_pairwise(sess: Session, a: Shared, b: Shared) -> Shared:
    """Elementwise max(a, b) = b + ReLU(a - b); exact when |a - b| < 2^63 (signed)."""
    a, b = _same_shape(a, b)
    return add(b, relu(sess, sub(a, b)))


def maximum_reduce(sess: Session, x: Shared, axis: int = -1) -> Shared:
    """Max over ``axis`` by a tree of pairwise maxima: ceil(log2 k) levels of 9 rounds each for an
    axis of length k (an odd element out waits for the next level)."""
    p0, p1 = np.moveaxis(x.p0, axis, 0), np.moveaxis(x.p1, axis, 0)
    if p0.shape[0] == 0:
        raise ValueError("maximum_reduce over an empty axis")
    cur = Shared(p0, p1)
    while cur.shape[0] > 1:
        k = cur.shape[0]
        h = k // 2
        m = max_pool_pairwise(sess, Shared(cur.p0[0:2 * h:2], cur.p1[0:2 * h:2]),
                              Shared(cur.p0[1:2 * h:2], cur.p1[1:2 * h:2]))
        if k % 2:
            m = Shared(np.concatenate([m.p0, cur.p0[-1:]]), np.concatenate([m.p1, cur.p1[-1:]]))
        cur = m
    return Shared(cur.p0[0], cur.p1[0])


# --------------------------------------------------------------------------- polynomials


def polynomial(sess: Session, x: Shared, power_coeffs: Sequence[object]) -> Shared:
    """sum_k c_k x^k for degree <= 3 with public real coefficients c_k (scalars or arrays that
    broadcast to x's shape, e.g. per channel).

    x^2 = square (1 round), x^3 = mul(x^2, x) (a 2nd round), each truncated by f; then
    sum_{k>=1} encode(c_k) * x^k at scale 2^(2f), one truncation, plus encode(c_0). Rounds: 0, 0,
    1, 2 for degree 0..3. Largest intermediate: |c_k x^k| * 2^(2f), which must stay well below
    2^63 (truncation failure probability |value| / 2^64).
    """
    coeffs = list(power_coeffs)
    if not 1 <= len(coeffs) <= 4:
        raise ValueError("polynomial supports degree 0 to 3")
    fp, deg = sess.fp, len(coeffs) - 1
    powers = {1: x}
    if deg >= 2:
        powers[2] = square(sess, x)
    if deg >= 3:
        powers[3] = mul(sess, powers[2], x)
    zeros = np.zeros(x.shape, dtype=np.uint64)
    acc = Shared(zeros, zeros.copy())
    for k in range(1, deg + 1):
        ck = np.broadcast_to(fp.encode(coeffs[k]), x.shape)
        acc = add(acc, mul_public_int(powers[k], ck.view(np.int64)))
    if deg >= 1:
        acc = truncate(acc, fp.fractional_bits)
    return add_public_ring(acc, np.broadcast_to(fp.encode(coeffs[0]), x.shape))


def quadratic(sess: Session, x: Shared, a: object, b: object, c: object) -> Shared:
    """a*x^2 + b*x + c with per-element (e.g. per-channel) coefficient arrays: one square."""
    return polynomial(sess, x, [c, b, a])


# --------------------------------------------------------------------------- cost model


def cost(op: str, n: int) -> dict[str, int]:
    """Documented communication of one call on n elements, both parties together (online bytes
    = 2 x what each party sends; offline bytes = 2 x what the dealer sends each party).

    ops: the local ones (LOCAL_OPS), "mul", "square", "msb", "drelu", "a2b", "b2a", "relu",
    "max" (n pairs), "quadratic", "polynomial2", "polynomial3".
    """

    def c(rounds: int, online_each: int, flights: int, offline_each: int) -> dict[str, int]:
        return {"online_rounds": rounds, "online_bytes": 2 * online_each,
                "offline_rounds": flights, "offline_bytes": 2 * offline_each}

    def plus(*ds: dict[str, int]) -> dict[str, int]:
        return {k: sum(d[k] for d in ds) for k in ds[0]}

    def circuit(gates: Sequence[int]) -> dict[str, int]:
        return c(len(gates), sum(_ceil8(2 * g * n) for g in gates), len(gates),
                 sum(_ceil8(3 * g * n) for g in gates))

    if op in LOCAL_OPS:
        return c(0, 0, 0, 0)
    table = {
        "mul": lambda: c(1, 16 * n, 1, 24 * n),
        "square": lambda: c(1, 8 * n, 1, 16 * n),
        "msb": lambda: circuit(MSB_AND_GATES),
        "drelu": lambda: circuit(MSB_AND_GATES),
        "a2b": lambda: circuit(A2B_AND_GATES),
        "b2a": lambda: c(1, _ceil8(n), 1, _ceil8(n) + 8 * n),
        "relu": lambda: plus(cost("drelu", n), cost("b2a", n), cost("mul", n)),
        "max": lambda: cost("relu", n),
        "quadratic": lambda: cost("square", n),
        "polynomial2": lambda: cost("square", n),
        "polynomial3": lambda: plus(cost("square", n), cost("mul", n)),
    }
    if op not in table:
        raise ValueError(f"unknown op {op!r}")
    return table[op]()
