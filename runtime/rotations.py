"""Rotation keys and the decomposition of a rotation into them (the one home of both).

Reads: a rotation amount and a slot count. Writes: nothing.

Bootstrapped plans keep only the power-of-two keys ±2^k (at N=2^16 each rotation key is
~100 MB; a ResNet's few hundred distinct rotations would need tens of GB): any rotation is then
the sum of its non-adjacent-form digits, at most ~log2(slots)/2 key switches. The CKKS runtime
rotates that way and the cost model counts the same digits.
"""

from __future__ import annotations


def power_of_two_keys(slots: int) -> list[int]:
    """The lean rotation-key set of bootstrapped plans: ±2^k below ``slots``."""
    keys = []
    power = 1
    while power < slots:
        keys += [power, -power]
        power *= 2
    return keys


def rotation_digits(amount: int, slots: int) -> list[int]:
    """Signed powers of two summing to ``amount`` modulo ``slots`` (non-adjacent form)."""
    value = amount % slots
    digits = []
    power = 1
    while value:
        if value & 1:
            digit = 2 - (value & 3)  # +1 or -1
            value -= digit
            if power % slots:
                digits.append(digit * power)
        value >>= 1
        power *= 2
    return digits
