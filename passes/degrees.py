"""degrees — OLA's layerwise degree assignment by dynamic programming, checked in closed loop.

Reads: calibrated activation nodes, the calibration set, options ``--method``,
``--max-degree``, ``--accuracy-budget`` (accuracy points; default 1), ``--allow-budget-miss``.
Writes, per activation node: ``meta["degree"]`` (and ``meta["_composite"]`` for a composite
sign-based ReLU, ``passes/composite_relu.py``), ``meta["sensitivity"]`` (output MSE per unit
of injected noise variance), ``meta["predicted_logit_mse"]`` and
``meta["predicted_accuracy_drop"]`` (points); per node, ``meta["_bound"]`` (max |output| of the
chosen plan on the calibration set, read by ``levels``); and ``context.analysis["degrees"]``: the
base and achieved calibration accuracy, the noise budget, the DP's total estimated cost and every
closed-loop iteration.

Steps:
1. *Sensitivity* — per layer, Gaussian noise of known variance is injected at the activation's
   output (plain simulation, restarting from a cached trace) and the output MSE is measured:
   ``s_l = E|Δlogits|² / σ²``.
2. *Accuracy model* — the accuracy drop caused by Gaussian noise of variance ``v`` on the logits
   is measured on the calibration set; the budget ``B`` is the largest ``v`` whose drop stays
   within the accuracy budget.
3. *Dynamic program* — for every layer and candidate degree, the fit's weighted MSE ``e_l(d)``
   (under the layer's measured distribution) and estimated cost ``c_l(d)`` (``picompile.cost``)
   are known; minimize ``Σ c_l(d_l)`` subject to ``Σ s_l e_l(d_l) ≤ B`` (a knapsack over layers
   with the error budget discretized in 2000 units).
4. *Closed loop* — the chosen plan's accuracy is measured with the plain simulation on the
   calibration data. The plan holds when the 90% upper confidence bound of its accuracy drop
   (Clopper–Pearson on the samples it newly gets wrong) is within the budget. ``B`` is then
   searched geometrically (×4 / ÷4 until bracketed, then bisected in log scale; at most 8
   rounds, each degree assignment evaluated once), keeping the cheapest plan that holds. Until
   the budget is bracketed, each step is corrected by the evaluated plan's measured logit MSE
   against the predicted Σ s·e (approximation errors are not independent Gaussian noise: the
   model is off by orders of magnitude on deep networks), which saves most of the rounds.
5. *No plan holds* — :class:`~picompile.errors.AccuracyBudgetError` with the best accuracy
   reached, its cost and what to do; with ``--allow-budget-miss`` the most accurate plan is kept
   and ``analysis["degrees"]["budget_met"]`` is False (the reports flag it). A calibration set
   too small to resolve the budget (even a plan losing no image has a bound above it) is a
   warning naming the images needed, and the most accurate plan is kept.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass

import numpy as np

from picompile.cost import DEFAULT_COST_TABLE, CostTable, activation_cost, polynomial_depth
from picompile.errors import AccuracyBudgetError
from picompile.ir import Graph, Node
from picompile.passes import fold_squares
from picompile.passes.approximate import elements, layer_error, polynomial_substitution
from picompile.passes.calibrate import activation_nodes
from picompile.passes.composite_relu import (
    COMPOSITE_OPS,
    DEFAULT_RANGE_MARGIN,
    STAGE_DESIGNS,
    CompositeForm,
    composite_form,
)
from picompile.passes.level_schedule import LevelChain, Segment, assign_scheduled, schedule_cost
from picompile.passes.levels import MAX_LEVELED_DEPTH, activation_chain, activation_cost_table
from picompile.plan import activations
from picompile.simulate import GraphSimulator

NAME = "degrees"
#: Degrees the DP chooses from: for each OpenFHE depth the largest degree it affords, plus a few
#: cheaper ones at the same depth (fewer multiplications).
CANDIDATE_DEGREES = (2, 3, 5, 7, 9, 13, 19, 27, 41, 59)
ERROR_UNITS = 2000
NOISE_FRACTION = 0.05
MAX_EVALUATIONS = 8
DEFAULT_ACCURACY_BUDGET = 1.0
#: The closed loop accepts a plan when the upper confidence bound (this one-sided level) of its
#: accuracy drop, estimated on the calibration set, is within the budget.
CONFIDENCE = 0.9


@dataclass
class Candidate:
    degree: int  # the polynomial's degree; a composite's effective degree (7^stages)
    error: float  # weighted MSE of the fit under the layer's distribution
    cost: float  # estimated seconds
    substitution: object
    composite: CompositeForm | None = None
    #: levels and top-level seconds of its pieces, no bootstrap share (``level_schedule``)
    segments: tuple[Segment, ...] = ()

    @property
    def label(self) -> str:
        return self.composite.label if self.composite is not None else str(self.degree)


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy in points (0..100)."""
    return 100.0 * float(np.mean(np.argmax(logits.reshape(len(labels), -1), axis=1) == labels))


def measure_sensitivity(simulator: GraphSimulator, nodes: list[Node], inputs: dict,
                        rng: np.random.Generator) -> dict[str, float]:
    """Output MSE per unit variance of Gaussian noise injected after each activation."""
    trace = simulator.trace(inputs)
    exact = trace[simulator.output]
    step_of = {s.name: s for s in simulator.plan.steps}
    result = {}
    for node in nodes:
        step = step_of[node.name]
        output = trace[step.outputs[0]]
        sigma = NOISE_FRACTION * max(float(np.std(output)), 1e-6)

        def noisy(x, step=step, sigma=sigma):
            clean = activations.evaluate(step.op, x, step.attrs,
                                         simulator.plan.param(step, "slope")
                                         if step.op == "PRelu" else None)
            return clean + rng.normal(0.0, sigma, size=x.shape)

        perturbed = simulator.run_from(trace, node.name, {node.name: noisy})
        result[node.name] = float(np.mean((perturbed - exact) ** 2)) / sigma**2
    return result


def accuracy_drop_upper_bound(exact_logits: np.ndarray, logits: np.ndarray, labels: np.ndarray,
                              confidence: float = CONFIDENCE) -> float:
    """Upper confidence bound (points) of the accuracy drop from exact to approximated logits.

    Samples the exact model gets right and the plan gets wrong ("lost") are binomial; their
    rate is bounded by Clopper–Pearson; samples the plan newly gets right count at face value.
    """
    from scipy.stats import beta

    n = len(labels)
    exact_right = np.argmax(exact_logits.reshape(n, -1), axis=1) == labels
    plan_right = np.argmax(logits.reshape(n, -1), axis=1) == labels
    lost = int(np.sum(exact_right & ~plan_right))
    gained = int(np.sum(~exact_right & plan_right))
    upper = 1.0 if lost >= n else float(beta.ppf(confidence, lost + 1, n - lost))
    return 100.0 * (upper - gained / n)


def images_needed(budget_points: float, confidence: float = CONFIDENCE) -> int:
    """Calibration images for which a plan losing none of them has a drop bound within the
    budget (Clopper–Pearson with no loss: 1 − (1 − confidence)^(1/n))."""
    if budget_points <= 0:
        return 0  # never resolvable: every bound is positive
    rate = min(budget_points / 100.0, 1.0 - 1e-12)
    return math.ceil(math.log(1.0 - confidence) / math.log(1.0 - rate))


def noise_accuracy_curve(logits: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
                         repeats: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy drop (points) for Gaussian logit noise of each variance in a log grid."""
    base = accuracy(logits, labels)
    scale = float(np.var(logits)) or 1.0
    variances = scale * np.logspace(-6, 1, 36)
    drops = []
    for variance in variances:
        noisy = [accuracy(logits + rng.normal(0, math.sqrt(variance), logits.shape), labels)
                 for _ in range(repeats)]
        drops.append(base - float(np.mean(noisy)))
    return variances, np.maximum.accumulate(np.maximum(np.array(drops), 0.0))


def noise_budget(variances: np.ndarray, drops: np.ndarray, budget_points: float) -> float:
    """Largest logit-noise variance whose measured drop stays within the budget."""
    within = np.nonzero(drops <= budget_points)[0]
    if len(within) == 0:
        return float(variances[0])
    return float(variances[within[-1]])


def predicted_drop(variances: np.ndarray, drops: np.ndarray, variance: float) -> float:
    if variance <= variances[0]:
        return 0.0
    return float(np.interp(np.log(variance), np.log(variances), drops))


def assign_degrees(candidates: list[list[Candidate]], sensitivities: list[float],
                   budget: float) -> list[int] | None:
    """Knapsack DP: pick one candidate per layer minimizing cost with Σ s·e ≤ budget.

    Returns the chosen candidate index per layer, or None when no choice fits the budget.
    """
    unit = budget / ERROR_UNITS
    best = np.zeros(ERROR_UNITS + 1)  # min cost of the layers so far using <= j units
    choices = []
    for layer, options in enumerate(candidates):
        new = np.full(ERROR_UNITS + 1, np.inf)
        pick = np.full(ERROR_UNITS + 1, -1)
        for index, candidate in enumerate(options):
            units = sensitivities[layer] * candidate.error / unit
            if not np.isfinite(units) or units > ERROR_UNITS:
                continue
            shift = int(math.ceil(units))
            total = np.full(ERROR_UNITS + 1, np.inf)
            total[shift:] = best[:ERROR_UNITS + 1 - shift] + candidate.cost
            better = total < new
            new[better], pick[better] = total[better], index
        choices.append(pick)
        best = new
    if not np.isfinite(best[ERROR_UNITS]):
        return None
    chosen, j = [], ERROR_UNITS
    for layer in range(len(candidates) - 1, -1, -1):
        index = int(choices[layer][j])
        chosen.append(index)
        units = sensitivities[layer] * candidates[layer][index].error / unit
        j -= int(math.ceil(units))
    return chosen[::-1]


def build_candidates(graph: Graph, nodes: list[Node], method: str, max_degree: int,
                     level_limit: int | None = None, table: CostTable = DEFAULT_COST_TABLE,
                     fold: bool = False, forms: str = "polynomial",
                     margin: float = DEFAULT_RANGE_MARGIN) -> list[list[Candidate]]:
    """Fits of every candidate degree per layer, costed with ``table``; with ``level_limit``
    only the degrees whose evaluation fits the levels left after a bootstrap (the lowest degree
    always stays). With ``fold`` (FHE plans) a degree-2 fit the ``fold_squares`` pass will fold
    into its producer is costed at its one level. ``forms``: ``polynomial`` (one polynomial per
    layer), ``composite`` (ReLUs only as composite sign forms, other activations polynomial) or
    ``auto`` (both offered; the DP picks by cost)."""
    degrees = [d for d in CANDIDATE_DEGREES if d <= max_degree] or [max_degree]
    unshared = dataclasses.replace(table, bootstrap_seconds=0.0)  # op seconds alone
    if method == "quad":
        degrees = [2]
    result = []
    for node in nodes:
        options = []
        composite = forms != "polynomial" and node.op in COMPOSITE_OPS
        if composite:
            options += composite_candidates(graph, node, margin, table, level_limit)
        for degree in degrees:
            if composite and forms == "composite" and options:
                break
            substitution, fit, coefficients, interval = polynomial_substitution(node, method,
                                                                                degree)
            bound = float(np.max(np.abs(interval)))
            folded = fold and fold_squares.would_fold(graph, node, coefficients, interval)
            if options and level_limit is not None and polynomial_depth(
                    degree, bound, folded) > level_limit:
                continue
            count = elements(graph, node)
            options.append(Candidate(
                degree, layer_error(node, fit),
                activation_cost(degree, count, table, bound=bound, folded=folded), substitution,
                segments=(Segment(polynomial_depth(degree, bound, folded),
                                  activation_cost(degree, count, unshared, bound=bound,
                                                  folded=folded)),)))
        result.append(options)
    return result


def composite_candidates(graph: Graph, node: Node, margin: float, table: CostTable,
                         level_limit: int | None) -> list[Candidate]:
    """The composite sign forms of a ReLU (``passes/composite_relu.py``), one per stage count;
    none when a stage does not fit between two bootstraps."""
    result = []
    count = elements(graph, node)
    unshared = dataclasses.replace(table, bootstrap_seconds=0.0)
    for degrees in STAGE_DESIGNS:
        form = composite_form(node, degrees, margin, count, table)
        if level_limit is not None and max(polynomial_depth(d, form.bound if i == 0 else 1.0)
                                           for i, d in enumerate(degrees)) > level_limit:
            continue
        stages = tuple(Segment(polynomial_depth(d, form.bound if i == 0 else 1.0),
                               activation_cost(d, count, unshared,
                                               bound=form.bound if i == 0 else 1.0))
                       for i, d in enumerate(degrees))
        product = Segment(1, max(1, math.ceil(count / table.slots)) * table.multiply_seconds)
        result.append(Candidate(form.effective_degree, form.error, form.cost, form, form,
                                segments=stages + (product,)))
    return result


def scheduled_chain(graph: Graph, nodes: list[Node], context, table: CostTable,
                    candidates: list[list[Candidate]]) -> LevelChain | None:
    """The chain the joint DP schedules, for an FHE plan that will bootstrap even with the
    shallowest forms (deeper than ``MAX_LEVELED_DEPTH``, no ``--schedule leveled``); None
    otherwise (the level-share knapsack then stands for the ring's growth with depth)."""
    options = context.options
    if options.protocol != "fhe" or getattr(options, "schedule", "auto") == "leveled":
        return None
    chain = activation_chain(graph, nodes, context, table)
    shallowest = sum(min(sum(s.depth for s in c.segments) for c in layer)
                     for layer in candidates)
    if sum(chain.gaps) + chain.final_gap + shallowest <= MAX_LEVELED_DEPTH:
        return None
    return chain


def choose(candidates: list[list[Candidate]], sensitivities: list[float], budget: float,
           chain: LevelChain | None) -> list[int] | None:
    """One candidate per layer within the noise ``budget``: by the joint degree/bootstrap DP
    on ``chain`` (``level_schedule``), or the level-share knapsack without one."""
    if chain is None:
        return assign_degrees(candidates, sensitivities, budget)
    unit = budget / ERROR_UNITS
    units = [[sensitivities[i] * c.error / unit for c in layer]
             for i, layer in enumerate(candidates)]
    return assign_scheduled(chain, [[c.segments for c in layer] for layer in candidates], units,
                            ERROR_UNITS)


def choice_cost(candidates: list[list[Candidate]], chosen: list[int],
                chain: LevelChain | None) -> float:
    """Predicted seconds of a choice: its schedule on ``chain``, else the summed costs."""
    if chain is not None:
        found = schedule_cost(chain, [candidates[i][k].segments for i, k in enumerate(chosen)])
        if found is not None:
            return found[0]
    return sum(candidates[i][k].cost for i, k in enumerate(chosen))


def run(graph: Graph, context) -> list[str]:
    options = context.options
    budget_points = (DEFAULT_ACCURACY_BUDGET if options.accuracy_budget is None
                     else options.accuracy_budget)
    nodes = [n for n in activation_nodes(graph) if not n.meta.get("keep_exact")]
    if not nodes:
        return ["no activations to approximate"]
    rng = np.random.default_rng(options.seed)
    calibration = context.calibration
    simulator = GraphSimulator(graph, dtype=np.float32)
    exact_logits = simulator.run(calibration.inputs)
    labels = calibration.labels
    if labels is None:  # no labels: accuracy means agreement with the exact model
        labels = np.argmax(exact_logits.reshape(calibration.size, -1), axis=1)
    base = accuracy(exact_logits, labels)
    subset = calibration.subset(min(options.sensitivity_samples, calibration.size))
    if context.progress is not None:
        context.progress(f"degrees: sensitivity of {len(nodes)} layers by noise injection")
    sensitivity = measure_sensitivity(simulator, nodes, subset.inputs, rng)
    if context.progress is not None:
        context.progress("degrees: fitting candidate polynomials")
    variances, drops = noise_accuracy_curve(exact_logits, labels, rng)
    level_limit, table = None, DEFAULT_COST_TABLE
    if options.protocol == "fhe":
        table, level_limit = activation_cost_table(graph)
    forms = options.activation_form if options.protocol == "fhe" else "polynomial"
    candidates = build_candidates(graph, nodes, options.method, options.max_degree, level_limit,
                                  table, fold=options.protocol == "fhe", forms=forms,
                                  margin=options.range_margin)
    sensitivities = [sensitivity[n.name] for n in nodes]
    chain = scheduled_chain(graph, nodes, context, table, candidates) if level_limit else None

    budget = target = noise_budget(variances, drops, budget_points)
    iterations, best = [], None
    evaluated: dict[tuple[int, ...], tuple[float, float]] = {}
    value_bounds: dict[tuple[int, ...], dict[str, float]] = {}
    fastest = choose(candidates, [0.0] * len(nodes), 1.0, chain)
    cheapest = (choice_cost(candidates, fastest, chain) if fastest is not None
                else sum(min(c.cost for c in options_) for options_ in candidates))
    failed_budget, passed_budget = None, None
    for round_index in range(MAX_EVALUATIONS):
        if context.progress is not None:
            context.progress(f"degrees: closed-loop round {round_index + 1}")
        chosen = choose(candidates, sensitivities, budget, chain)
        most_accurate = chosen is None
        if most_accurate:  # even the most accurate forms miss: use them and report it
            chosen = [int(np.argmin([c.error for c in options_])) for options_ in candidates]
        key = tuple(chosen)
        if key not in evaluated:
            substitutions = {n.name: candidates[i][k].substitution
                             for i, (n, k) in enumerate(zip(nodes, chosen, strict=True))}
            value_bounds[key] = {}
            with np.errstate(all="ignore"):  # a diverging plan fails the loop, not a warning
                logits = simulator.run(calibration.inputs, substitutions,
                                       bounds=value_bounds[key])
                measured = float(np.mean((logits.astype(np.float64) - exact_logits) ** 2))
            evaluated[key] = (accuracy(logits, labels),
                              accuracy_drop_upper_bound(exact_logits, logits, labels), measured)
        achieved, drop_bound, measured = evaluated[key]
        cost = choice_cost(candidates, chosen, chain)
        predicted = sum(sensitivities[i] * candidates[i][k].error for i, k in enumerate(chosen))
        # how far the additive-noise model is off for this plan (errors are not independent
        # Gaussian noise): the next budget is corrected by it instead of a blind ×4 / ÷4
        ratio = measured / predicted if predicted > 0 and math.isfinite(measured) else None
        holds = drop_bound <= budget_points + 1e-9
        iterations.append({"noise_budget": budget, "accuracy": achieved, "cost": cost,
                           "drop_upper_bound": drop_bound, "holds": holds,
                           "predicted_logit_mse": predicted, "measured_logit_mse": measured,
                           "degrees": [candidates[i][k].degree for i, k in enumerate(chosen)],
                           "forms": [candidates[i][k].label for i, k in enumerate(chosen)],
                           "choice": list(chosen)})
        if holds and (best is None or cost < best[1]):
            best = (chosen, cost, achieved)
        if holds and cost <= cheapest + 1e-9:
            break  # every layer already has its cheapest polynomial
        if holds:
            passed_budget = budget
            if failed_budget is not None and failed_budget / budget < 1.5:
                break
            if failed_budget is None:
                budget = max(budget * 4, target / ratio if ratio else 0.0)
            else:
                budget = math.sqrt(budget * failed_budget)
        else:
            if most_accurate:
                break  # nothing more accurate to try
            failed_budget = budget
            if passed_budget is None:
                budget = min(budget / 4, 0.5 * target / ratio if ratio else math.inf)
            else:
                budget = math.sqrt(budget * passed_budget)
    budget_met = best is not None
    # the bound of a plan that loses no sample: above the budget, no plan can ever hold
    floor = accuracy_drop_upper_bound(exact_logits, exact_logits, labels)
    resolvable = floor <= budget_points + 1e-9
    needed = images_needed(budget_points)
    if not resolvable:
        warnings.warn(
            f"{calibration.size} calibration images cannot resolve an accuracy budget of "
            f"{budget_points:g} points (a plan that loses none of them still has a "
            f"{CONFIDENCE:.0%} bound of {floor:.2f} points); pass at least {needed} images. "
            "The most accurate plan found is used", stacklevel=2)
    if best is None:  # nothing held: the most accurate evaluated plan, written only if allowed
        top = max(iterations, key=lambda it: it["accuracy"])
        if resolvable and not options.allow_budget_miss:
            raise AccuracyBudgetError(
                f"the accuracy budget of {budget_points:g} points cannot be met: the best of "
                f"{len(iterations)} degree assignments (up to degree {max(top['degrees'])}) "
                f"reaches {top['accuracy']:.2f} % on the calibration set against "
                f"{base:.2f} % exact (drop bound {top['drop_upper_bound']:.2f} points) at a "
                f"predicted {top['cost']:.1f} s of activations; use higher-degree activations "
                "(--max-degree), fine-tune the model (picompile finetune), or a larger "
                "--accuracy-budget; --allow-budget-miss writes this plan anyway")
        best = (top["choice"], top["cost"], top["accuracy"])
    chosen, cost, achieved = best
    bounds = value_bounds[tuple(chosen)]
    for node in graph.nodes():  # max |value| on the calibration set: the levels pass reads it
        node.meta["_bound"] = bounds[node.outputs[0]]
    for i, node in enumerate(nodes):
        candidate = candidates[i][chosen[i]]
        node.meta["degree"] = candidate.degree
        node.meta.pop("_composite", None)
        if candidate.composite is not None:  # the approximate pass expands it
            node.meta["_composite"] = candidate.composite
        node.meta["sensitivity"] = sensitivities[i]
        node.meta["predicted_logit_mse"] = sensitivities[i] * candidate.error
        node.meta["predicted_accuracy_drop"] = predicted_drop(
            variances, drops, sensitivities[i] * candidate.error)
    context.analysis["degrees"] = {
        "accuracy_budget_points": budget_points,
        "budget_met": budget_met,
        "budget_resolvable": resolvable,
        "calibration_images_needed": needed,
        "base_accuracy": base,
        "achieved_accuracy": achieved,
        "estimated_activation_seconds": cost,
        "cost_model": ("joint degree/bootstrap schedule" if chain is not None
                       else "level share"),
        "labels": "given" if calibration.labels is not None else "exact-model predictions",
        "iterations": iterations,
        "noise_curve": {"variances": variances.tolist(), "accuracy_drops": drops.tolist()},
    }
    degrees = [candidates[i][chosen[i]].label for i in range(len(nodes))]
    composites = sum(candidates[i][chosen[i]].composite is not None for i in range(len(nodes)))
    context.analysis["degrees"].update(activation_form=forms, composite_layers=composites,
                                       range_margin=options.range_margin)
    summary = f"degrees ({', '.join(degrees)})"
    if composites:
        summary += (f", {composites} composite ReLUs (∘: sign stages), range margin "
                    f"{options.range_margin:.0%}")
    return [summary, f"calibration accuracy {achieved:.2f} (exact {base:.2f}, "
            f"budget {budget_points} points"
            + (")" if budget_met else ": MISSED, written because of --allow-budget-miss)"),
            f"estimated activation cost {cost:.1f} s",
            f"{len(iterations)} closed-loop evaluations"]
