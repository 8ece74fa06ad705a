"""Plain-text wording shared by the text and HTML reports: numbers, sizes, durations, a step's
parameters, the CKKS bootstrapping and packing lines, a fine-tuned model's training lines.

Reads: values and records of :mod:`picompile.report.records`.
Writes: short strings (no HTML escaping, no rich markup).
"""

from __future__ import annotations

import math
from typing import Any

from picompile.report.records import (
    Ckks,
    DegreeSearch,
    Layout,
    ProtocolChoice,
    StepFacts,
    Training,
)

#: What a missing value prints as.
MISSING = "–"
MIB = 1024 * 1024


def fmt(value: Any, digits: int = 3) -> str:
    """A value as short text; ``None`` (missing) is an en dash."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return MISSING
        return f"{value:.{digits}g}"
    return str(value)


def fmt_accuracy(value: float | None) -> str:
    """An accuracy in percent points, as the report prints it."""
    return MISSING if value is None else f"{float(value):.2f}"


def fmt_bytes(count: float) -> str:
    """A byte count in MiB, or GiB from 1 GiB on."""
    if count >= 1024 * MIB:
        return f"{count / (1024 * MIB):.2f} GiB"
    return f"{count / MIB:.1f} MiB"


def fmt_seconds(seconds: float) -> str:
    """A duration: two decimals below 10 s, one up to 2 minutes, then minutes."""
    if seconds >= 120:
        return f"{seconds / 60:.1f} min ({seconds:.0f} s)"
    return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.1f} s"


def number(value: Any, digits: int = 3) -> str:
    """The text report's number: ``-`` when missing, floats to ``digits`` significant digits."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _format_attr(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "[" + ",".join(_format_attr(v) for v in value) + "]"
    return str(value)


def step_parameters(step: StepFacts) -> str:
    """Attributes and parameter array shapes of one step, as short text."""
    parts = [f"{k}={_format_attr(v)}" for k, v in step.attrs.items()]
    for role, shape in step.parameter_shapes:
        parts.append(f"{role}:{'x'.join(str(d) for d in shape) or 'scalar'}")
    return " ".join(parts)


def shapes(shape_list: tuple[tuple[int, ...], ...]) -> str:
    """Tensor shapes as ``(1, 8) (1, 4)``."""
    return " ".join(str(shape) for shape in shape_list)


def training_details(training: Training) -> list[tuple[str, str]]:
    """The training summary of a ``picompile finetune`` model (shared by the text and HTML
    reports)."""
    return [
        ("trained from", str(training.source_model)),
        ("activations", f"{training.method}, degree {training.degree}; "
                        f"{training.relu_channels_kept} of {training.relu_channels} channels "
                        "kept ReLU"),
        ("epochs", f"{training.epochs} ({number(training.seconds)} s)"),
        ("held-out accuracy", f"ReLU model {number(training.relu_accuracy)} %, polynomials "
                              f"before {number(training.accuracy_before)} %, after "
                              f"{number(training.accuracy_after)} %"),
    ]


def ckks_details(ckks: Ckks | None, layout: Layout, protocol: str) -> list[tuple[str, str]]:
    """Bootstrapping and packing lines of an FHE plan (shared by the text and HTML reports)."""
    rows = []
    boot = None if ckks is None else ckks.bootstrapping
    if boot and ckks is not None and ckks.is_runnable:
        rows.append(("bootstrapping", f"{boot.count} per inference (greedy placement "
                     f"{boot.greedy_count}), {boot.slots} sparse slots, level budget "
                     f"{boot.level_budget}, {boot.levels_after_bootstrap} levels after each"
                     + ("" if boot.correction_factor is None
                        else f", correction factor {boot.correction_factor}")
                     + (f"; {boot.scaled_values} values divided into its range"
                        if boot.scaled_values else "")
                     + (f"; {boot.upscaled_values} values multiplied up to fill it (read only by "
                        "polynomials)"
                        if boot.upscaled_values else "")))
    if layout.packing and protocol == "fhe":
        inputs = "; ".join(f"{name}: {text}" for name, text in layout.packing)
        diagonals = "?" if layout.diagonals_per_inference is None \
            else layout.diagonals_per_inference
        rows.append(("packing", f"{inputs}; strided convolutions keep their grid with channels "
                     f"multiplexed into the gaps; {diagonals} "
                     f"diagonals and {layout.rotations_per_inference} rotations per inference"
                     + (f"; tensors larger than the {layout.slots} slots span up to "
                        f"{layout.ciphertexts} ciphertexts (block matrices, bootstraps per "
                        "ciphertext)" if layout.ciphertexts > 1 else "")))
    return rows


#: Columns of the ``--protocol auto`` comparison (text and HTML reports).
PROTOCOL_CHOICE_COLUMNS = ("protocol", "online latency", "compute + transfer + round trips",
                           "bytes online / offline", "end to end (offline inline)",
                           "keys (once)", "dealer")


def protocol_choice_rows(choice: ProtocolChoice) -> list[list[str]]:
    """One row per protocol of the ``--protocol auto`` comparison, the chosen one marked."""
    rows = []
    for row in choice.rows:
        name = row["protocol"] + (" ✔ chosen" if row["protocol"] == choice.chosen else "")
        if not row.get("available"):
            rows.append([name, "—", f"not compiled: {row.get('reason')}", "", "", "", ""])
            continue
        keygen = row.get("keygen_seconds")
        rows.append([
            name, fmt_seconds(row["online_seconds"]),
            f"{fmt_seconds(row['online_compute_seconds'])} + "
            f"{fmt_seconds(row['online_transfer_seconds'])} + {row['online_round_trips']} × RTT",
            f"{fmt_bytes(row['online_bytes'])} / {fmt_bytes(row['offline_bytes'])}",
            fmt_seconds(row["end_to_end_seconds"]),
            f"{fmt_bytes(row['key_bytes'])} ({fmt_seconds(row['key_transfer_seconds'])} to send"
            + (f", {fmt_seconds(keygen)} to generate)" if keygen is not None else ")"),
            "yes" if row.get("dealer") else "no"])
    return rows


def protocol_choice_caption(choice: ProtocolChoice) -> str:
    """The network (and whether it is the default), the objective and the reason."""
    default = " (the default; set it with --network)" if choice.assumed_default_network else ""
    return (f"network {choice.network}{default}; objective: {choice.objective}. "
            f"Chosen: {choice.reason}")


def composite_summary(degrees: DegreeSearch) -> str:
    """The composite ReLUs' row: how many, what they compute, and their failure mode."""
    margin = "?" if degrees.range_margin is None else f"{degrees.range_margin:.0%}"
    return (f"{degrees.composite_layers} layers as x·(1 + sign x)/2, sign a composition of "
            "degree-7 minimax stages evaluated across bootstraps; each layer's input bound B is "
            f"its calibrated max |x| + {margin} (range margin): inputs beyond ±B are the "
            "documented failure mode")
