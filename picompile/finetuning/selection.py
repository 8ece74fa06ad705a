"""AutoReP selection while fine-tuning: which ReLU channels stay exact under a ReLU budget.

Reads: the activations being trained (:class:`PolynomialActivation`, one indicator per channel),
the number of scalar ReLUs each channel carries (its spatial size), the budget (``--relu-budget``:
a count of scalar ReLUs when ≥ 1, a fraction of all of them when < 1 — the rule of ``compile
--relu-budget``, :func:`picompile.passes.select.relu_budget_count`) and, every step, the
gradient of the loss with respect to each channel's polynomial mask.
Writes: the 0/1 masks the training step uses (1 = polynomial, 0 = exact ReLU) and, at the end of
the selection phase, the final masks, which never exceed the budget (:meth:`ReluSelection.final`
checks it and raises otherwise).

Method (AutoReP's gradient-based selection, with hysteresis):

* every channel has a real score ``s`` (start ``+1``: all channels exact); its indicator is a
  straight-through estimate — the forward pass uses the hard state, the backward pass the exact
  derivative of the loss with respect to the mask ``m`` (the student's activation
  ``relu(x) + m·(p(x) − relu(x))`` is linear in ``m``);
* each step ``s ← s + η·(ĝ − λ)``, with ``ĝ`` the mask gradient divided by a running mean of its
  magnitude (a positive ``ĝ``: the polynomial raises the loss, keep the ReLU) and ``λ`` a
  pressure that grows while more scalar ReLUs than the budget are exact and relaxes otherwise;
* hysteresis: a channel turns polynomial when ``s < −h`` and exact again only when ``s > +h``,
  so indicators do not flip on gradient noise;
* at the end of the selection phase the exact channels are cut to the budget by score (most
  important first, greedily by scalar ReLUs); training then continues with the masks fixed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from picompile.errors import FinetuneError

#: Score step per training step (in units of the normalized mask gradient).
SCORE_RATE = 0.05
#: Hysteresis half-width: a channel switches at ``s < −h`` (to polynomial) or ``s > +h``.
HYSTERESIS = 0.25
#: Fraction of the steps spent selecting (the rest trains with the final masks).
SELECTION_FRACTION = 0.5
#: Decay of the running mean of the mask-gradient magnitude.
GRADIENT_DECAY = 0.9


def budget_count(budget: float, total: int) -> int:
    """Budget as a number of scalar ReLUs (the rule of ``compile --relu-budget``)."""
    from picompile.passes.select import relu_budget_count

    if budget < 0:
        raise FinetuneError("--relu-budget must be >= 0")
    return relu_budget_count(budget, total)


@dataclass
class ReluSelection:
    """Per-channel ReLU/polynomial indicators trained under a ReLU budget."""

    sizes: dict[str, int]               # scalar ReLUs per channel, by activation step
    channels: dict[str, int]
    budget: int                         # scalar ReLUs that may stay exact
    selection_steps: int
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    exact: dict[str, np.ndarray] = field(default_factory=dict)
    pressure: float = 0.0
    gradient_scale: float = 0.0
    history: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name, count in self.channels.items():
            self.scores.setdefault(name, np.ones(count))
            self.exact.setdefault(name, np.ones(count, dtype=bool))

    @property
    def total(self) -> int:
        return int(sum(self.sizes[k] * self.channels[k] for k in self.channels))

    def exact_relus(self, exact: dict[str, np.ndarray] | None = None) -> int:
        exact = self.exact if exact is None else exact
        return int(sum(self.sizes[k] * int(np.sum(v)) for k, v in exact.items()))

    def restart(self, masks: dict[str, np.ndarray]) -> None:
        """Continue a selection from saved masks (a resumed run): scores at ±1."""
        for name, mask in masks.items():
            self.exact[name] = np.asarray(mask) < 0.5
            self.scores[name] = np.where(self.exact[name], 1.0, -1.0)

    def masks(self) -> dict[str, np.ndarray]:
        """The masks of the current state (1 = polynomial)."""
        return {k: (~v).astype(np.float32) for k, v in self.exact.items()}

    def update(self, mask_gradients: dict[str, np.ndarray]) -> None:
        """One selection step from the loss's gradient with respect to the masks."""
        magnitude = float(np.mean(np.concatenate(
            [np.abs(np.asarray(g, dtype=np.float64)).ravel() for g in mask_gradients.values()])))
        if not np.isfinite(magnitude):
            return
        self.gradient_scale = (magnitude if self.gradient_scale == 0.0 else
                               GRADIENT_DECAY * self.gradient_scale
                               + (1 - GRADIENT_DECAY) * magnitude)
        scale = max(self.gradient_scale, 1e-12)
        over = self.exact_relus() > self.budget
        step = 4.0 / max(self.selection_steps, 1)
        self.pressure = self.pressure + step if over else max(self.pressure - step, 0.0)
        for name, gradient in mask_gradients.items():
            g = np.asarray(gradient, dtype=np.float64) / scale
            score = self.scores[name] + SCORE_RATE * (g - self.pressure)
            self.scores[name] = np.clip(score, -4.0, 4.0)
            exact = self.exact[name]
            self.exact[name] = np.where(exact, score > -HYSTERESIS, score > HYSTERESIS)
        self.history.append(self.exact_relus())

    def final(self) -> dict[str, np.ndarray]:
        """Cut the exact channels to the budget by score; the final masks (1 = polynomial).

        Raises :class:`FinetuneError` if the result exceeds the budget (it cannot, by
        construction: the check is the guarantee)."""
        ranked = sorted(((float(self.scores[k][c]), k, c) for k, v in self.exact.items()
                         for c in np.flatnonzero(v)), reverse=True)
        chosen = {k: np.zeros(n, dtype=bool) for k, n in self.channels.items()}
        used = 0
        for _, name, channel in ranked:
            if used + self.sizes[name] <= self.budget:
                chosen[name][channel] = True
                used += self.sizes[name]
        self.exact = chosen
        kept = self.exact_relus()
        if kept > self.budget:
            raise FinetuneError(f"ReLU selection kept {kept} ReLUs, over the budget of "
                                f"{self.budget}")
        return self.masks()
