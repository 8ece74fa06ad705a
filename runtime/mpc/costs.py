"""mpc.costs — the analytic communication of each protocol, per call on n elements.

Reads: an op name and an element count.
Writes: {online_rounds, online_bytes, offline_rounds, offline_bytes}, both parties together
(online bytes = 2 x what each party sends; offline bytes = 2 x what the dealer sends each
party). The compiler reads it through ``picompile.runtime.interface.mpc_cost``; the tests check
that the transcripts match it (docs/mpc.md, "Communication accounting").

mul 1 round / 32n bytes online, square 1 / 16n, msb and drelu 7 rounds (183 AND gates per
element), a2b 7 rounds (631 gates), b2a 1 round / 2 ceil(n / 8), relu 9 rounds.
"""

from __future__ import annotations

from collections.abc import Sequence

from picompile.runtime.mpc.boolean import A2B_AND_GATES, MSB_AND_GATES
from picompile.runtime.mpc.transcript import packed_bytes

LOCAL_OPS = frozenset({"add", "sub", "neg", "add_public", "mul_public_int", "mul_public",
                       "truncate", "polynomial1"})


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
    return table[op]()
