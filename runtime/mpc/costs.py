"""mpc.costs — the analytic communication of each protocol, per call on n elements.

Reads: an op name and an element count.
Writes: {online_rounds, online_bytes, offline_rounds, offline_bytes}, both parties together
(online bytes = 2 x what each party sends; offline bytes = 2 x what the dealer sends each
party). The compiler reads it through ``picompile.runtime.interface.mpc_cost``; the tests check
that the transcripts match it (docs/mpc.md, "Communication accounting").

mul 1 round / 32n bytes online, square 1 / 16n, msb and drelu 7 rounds (183 AND gates per
element), a2b 7 rounds (631 gates), b2a 1 round / 2 ceil(n / 8), relu 9 rounds.

With ``correlations="two-party"`` the offline bytes are those of producing the same correlations
by OT between the parties (docs/protocol.md §11.5, IKNP: 16 bytes per OT): 32 per AND gate,
2 × 1284 per Beaver triple, 1284 per square pair, 24 per random shared bit.
"""

from __future__ import annotations

from collections.abc import Sequence

from picompile.runtime.mpc.boolean import A2B_AND_GATES, MSB_AND_GATES
from picompile.runtime.mpc.transcript import packed_bytes

#: Both parties' bytes per correlation made by OT (docs/protocol.md §11.5): an AND triple is two
#: random OTs; a Gilboa product 64 correlated OTs plus 2080 bits of corrections; a random bit one
#: correlated OT with a 64-bit correction.
OT_BYTES = 16
GILBOA_BYTES = 64 * OT_BYTES + (64 * 65 // 2) // 8
TWO_PARTY_BYTES = {"and": 2 * OT_BYTES, "triple": 2 * GILBOA_BYTES, "square": GILBOA_BYTES,
                   "bit": OT_BYTES + 8}

LOCAL_OPS = frozenset({"add", "sub", "neg", "add_public", "mul_public_int", "mul_public",
                       "truncate", "polynomial1"})


def cost(op: str, n: int, correlations: str = "dealer") -> dict[str, int]:
    """Documented communication of one call on n elements, both parties together (online bytes
    = 2 x what each party sends; offline bytes = 2 x what the dealer sends each party, or with
    ``correlations="two-party"`` what the parties exchange to make the same correlations by OT;
    offline rounds count correlation requests).

    ops: the local ones (LOCAL_OPS), "mul", "square", "msb", "drelu", "a2b", "b2a", "relu",
    "max" (n pairs), "quadratic", "polynomial2", "polynomial3".
    """

    def c(rounds: int, online_each: int, flights: int, offline_each: int) -> dict[str, int]:
        return {"online_rounds": rounds, "online_bytes": 2 * online_each,
                "offline_rounds": flights, "offline_bytes": 2 * offline_each}

    def plus(*ds: dict[str, int]) -> dict[str, int]:
        return {k: sum(d[k] for d in ds) for k in ds[0]}

    def circuit(gates: Sequence[int]) -> dict[str, int]:
        return c(len(gates), sum(packed_bytes(2 * g * n) for g in gates), len(gates),
                 sum(packed_bytes(3 * g * n) for g in gates))

    if op in LOCAL_OPS:
        return c(0, 0, 0, 0)
    table = {
        "mul": lambda: c(1, 16 * n, 1, 24 * n),
        "square": lambda: c(1, 8 * n, 1, 16 * n),
        "msb": lambda: circuit(MSB_AND_GATES),
        "drelu": lambda: circuit(MSB_AND_GATES),
        "a2b": lambda: circuit(A2B_AND_GATES),
        "b2a": lambda: c(1, packed_bytes(n), 1, packed_bytes(n) + 8 * n),
        "relu": lambda: plus(cost("drelu", n), cost("b2a", n), cost("mul", n)),
        "max": lambda: cost("relu", n),
        "quadratic": lambda: cost("square", n),
        "polynomial2": lambda: cost("square", n),
        "polynomial3": lambda: plus(cost("square", n), cost("mul", n)),
    }
    if op not in table:
        raise ValueError(f"unknown op {op!r}")
    result = table[op]()
    if correlations == "two-party":
        result["offline_bytes"] = two_party_offline_bytes(op, n)
    return result


def two_party_offline_bytes(op: str, n: int) -> int:
    """Bytes both parties exchange to make one call's correlations by OT (§11.5)."""
    per = TWO_PARTY_BYTES
    table = {
        "mul": per["triple"], "square": per["square"], "quadratic": per["square"],
        "polynomial2": per["square"], "polynomial3": per["square"] + per["triple"],
        "msb": per["and"] * sum(MSB_AND_GATES), "drelu": per["and"] * sum(MSB_AND_GATES),
        "a2b": per["and"] * sum(A2B_AND_GATES), "b2a": per["bit"],
    }
    table["relu"] = table["max"] = table["drelu"] + table["b2a"] + table["mul"]
    return 0 if op in LOCAL_OPS else table[op] * n
