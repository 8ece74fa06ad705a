"""The fine-tuning loop: knowledge distillation into trainable polynomial activations.

Reads: the calibrated canonical graph (:func:`picompile.pipeline.calibrated_graph`), training
data (:mod:`picompile.finetuning.data`) and :class:`FinetuneOptions`.
Writes: a :class:`TrainedModel` (the jax forward, trained weights, polynomial coefficients, the
final ReLU/polynomial masks and a training summary); an ``.npz`` checkpoint at every epoch end
and on interruption when ``FinetuneOptions.checkpoint`` is set.

Loss: ``w·T²·KL(softmax(teacher/T) ‖ softmax(student/T)) + (1 - w)·CE(student, labels)`` plus a
range penalty ``λ·mean(dist(x, [lo, hi])²)/(hi - lo)²`` on every polynomial's input outside the
layer's calibrated interval (values that leave it grow layer by layer — the collapse measured
on the Fashion ResNet-20). The teacher is the original model (exact ReLUs).

Progressive replacement: activation ``i`` of ``L`` (execution order, from the input) becomes a
polynomial after ``i/L`` of the first :data:`REPLACEMENT_FRACTION` of the steps; until then it
is the exact ReLU (a per-channel mask ``m`` mixes ``m·p(x) + (1 - m)·relu(x)``), so the layers
after it adapt to each replacement in turn. The rest of the run trains with every polynomial
in place. With ``relu_budget`` the masks come instead from AutoReP's per-channel indicators
(:mod:`picompile.finetuning.selection`): selected during the first half of the steps, then fixed
to a set that never exceeds the budget for the rest.

Clipping: while training (the first ``clip_fraction`` of the steps; all of them by default), each
polynomial reads its input clipped to the calibrated interval widened by :data:`CLIP_MARGIN`, so
that one outlier cannot make a batch's loss non-finite (measured on the Fashion ResNet-20: with
the clip lifted for the last quarter of the steps, a batch overflowed within 300 steps). The
exported model has no clip (a polynomial is what FHE and the hybrid protocol evaluate): every
held-out accuracy is measured without it, on exactly what is exported.

Learning rate: Adam at ``lr`` with cosine decay to zero over the run (``schedule="cosine"``) or
constant.

Steps are jit-compiled and batched; optax Adam with global-norm gradient clipping. A step whose
loss or gradient is not finite is not applied: the state goes back to the last good snapshot
and the learning rate is halved; after :attr:`FinetuneOptions.max_backoffs` such back-offs the
run stops with a :class:`~picompile.errors.FinetuneError` (never a silent NaN model).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from picompile.atomic_files import atomic_write
from picompile.errors import FinetuneError, OptionError
from picompile.finetuning.data import TrainingData
from picompile.finetuning.forward import Forward
from picompile.finetuning.polynomials import PolynomialActivation, initial_activation
from picompile.finetuning.selection import SELECTION_FRACTION, ReluSelection, budget_count
from picompile.ir import Graph

#: Fraction of the steps over which activations are replaced one after another.
REPLACEMENT_FRACTION = 0.5
#: Steps between two snapshots of the training state (the back-off target).
SNAPSHOT_EVERY = 25
#: Batch size of evaluations (held-out accuracy, teacher logits).
EVAL_BATCH = 512
#: Polynomial inputs are clipped to the calibrated interval ± this fraction of its width during
#: the first ``FinetuneOptions.clip_fraction`` of the steps (training only; never exported).
CLIP_MARGIN = 0.5
#: Learning-rate schedules: constant, or cosine decay to zero over the run.
SCHEDULES = ("cosine", "constant")


@dataclass
class FinetuneOptions:
    """Options of ``picompile finetune`` (CLI flags) and the loss's constants."""

    method: str = "quad"
    degree: int = 2
    epochs: int = 1
    batch_size: int = 32
    lr: float = 1e-3
    seed: int = 0
    relu_budget: float | None = None
    temperature: float = 4.0
    distill_weight: float = 0.5
    range_penalty: float = 0.1
    progressive: bool = True
    clip_norm: float = 1.0
    clip_fraction: float = 1.0
    max_backoffs: int = 4
    schedule: str = "cosine"
    checkpoint: str | Path | None = None
    resume: bool = False
    progress: bool = True

    def validate(self) -> None:
        if self.epochs < 0:
            raise OptionError("--epochs must be >= 0 (0: export the calibrated polynomials)")
        if self.batch_size < 1:
            raise OptionError("--batch-size must be >= 1")
        if not (self.lr > 0 and np.isfinite(self.lr)):
            raise OptionError("--lr must be a positive number")
        if self.relu_budget is not None and not (self.relu_budget >= 0
                                                 and np.isfinite(self.relu_budget)):
            raise OptionError("--relu-budget must be a count >= 1 or a fraction in [0, 1)")
        if self.resume and self.checkpoint is None:
            raise OptionError("--resume needs an output path (its checkpoint "
                              "OUTPUT.checkpoint.npz)")
        if self.schedule not in SCHEDULES:
            raise OptionError(f"unknown learning-rate schedule {self.schedule!r}: use "
                              f"{', '.join(SCHEDULES)}")


@dataclass
class TrainedModel:
    """What training produced: everything the exporter needs."""

    forward: Forward
    weights: dict[str, dict[str, np.ndarray]]
    forms: dict[str, PolynomialActivation]
    coefficients: dict[str, np.ndarray]
    masks: dict[str, np.ndarray]
    summary: dict[str, Any] = field(default_factory=dict)

    def logits(self, inputs: np.ndarray) -> np.ndarray:
        """The trained model's output on a batch (the exported ONNX model's reference)."""
        act = mixed_activation(self.forms, self.coefficients, self.masks)
        return np.asarray(self.forward.apply(self.weights, inputs, act))


def mixed_activation(forms: dict[str, PolynomialActivation], coefficients: dict[str, Any],
                     masks: dict[str, Any], clip: bool = False) -> Callable[[Any, Any], Any]:
    """The student's activation: ``relu(x) + m·(p(x) − relu(x))`` per channel (axis 1).

    ``clip``: the polynomial reads its input clipped to the calibrated interval widened by
    :data:`CLIP_MARGIN` of its width on each side (training's early steps: one outlier input
    cannot blow up the whole batch while the range penalty pulls values back in)."""
    _, jnp, _ = _jax()

    def act(step: Any, x: Any) -> Any:
        form = forms[step.name]
        shape = (1, -1) + (1,) * (x.ndim - 2)
        mask = jnp.asarray(masks[step.name]).reshape(shape)
        exact = jnp.maximum(x, 0.0)
        inside = x
        if clip:
            lo, hi = form.interval
            margin = CLIP_MARGIN * (hi - lo)
            inside = jnp.clip(x, lo - margin, hi + margin)
        return exact + mask * (form.evaluate(inside, jnp.asarray(coefficients[step.name]))
                               - exact)

    return act


def _jax() -> tuple[Any, Any, Any]:
    try:
        import jax
        import jax.numpy as jnp
        import optax
    except ImportError as exc:
        raise FinetuneError(f"fine-tuning needs jax and optax ({exc.name} is missing): "
                            "pip install -e '.[train]'") from None
    return jax, jnp, optax


def _finite(tree: Any) -> Any:
    jax, jnp, _ = _jax()
    leaves = jax.tree_util.tree_leaves(tree)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves]))


class Trainer:
    """Builds the jit-compiled functions of one fine-tuning run and runs it."""

    def __init__(self, graph: Graph, forward: Forward, options: FinetuneOptions) -> None:
        self.forward = forward
        self.options = options
        nodes = {n.name: n for n in graph.nodes()}
        self.steps = forward.activation_steps
        self.forms = {s.name: initial_activation(nodes[s.name], options.method, options.degree)
                      for s in self.steps}
        self.teacher_weights = forward.parameters()
        jax, jnp, optax = _jax()
        self.optimizer = optax.inject_hyperparams(
            lambda learning_rate: optax.chain(optax.clip_by_global_norm(options.clip_norm),
                                              optax.adam(learning_rate)))(
            learning_rate=options.lr)
        self._train_step = jax.jit(self._step, static_argnames="clip")
        self._logits = jax.jit(self._apply)

    # -- the model ------------------------------------------------------------------------------
    def initial_state(self) -> dict[str, Any]:
        return {"weights": self.forward.parameters(),
                "coefficients": {k: f.coefficients.astype(np.float32)
                                 for k, f in self.forms.items()}}

    def masks(self, value: float) -> dict[str, np.ndarray]:
        return {k: np.full(f.channels, value, np.float32) for k, f in self.forms.items()}

    def _apply(self, state: dict[str, Any], masks: dict[str, Any], x: Any,
               taps: dict[str, Any] | None = None, clip: bool = False) -> Any:
        activation = mixed_activation(self.forms, state["coefficients"], masks, clip)
        return self.forward.apply(state["weights"], x, activation, taps)

    def _loss(self, state: dict[str, Any], masks: dict[str, Any], x: Any, labels: Any,
              teacher: Any, clip: bool) -> tuple[Any, dict[str, Any]]:
        jax, jnp, _ = _jax()
        options = self.options
        taps: dict[str, Any] = {}
        logits = self._apply(state, masks, x, taps, clip)
        log_p = jax.nn.log_softmax(logits)
        ce = -jnp.mean(jnp.take_along_axis(log_p, labels[:, None], axis=1))
        t = options.temperature
        soft_teacher = jax.nn.softmax(teacher / t)
        kd = t * t * jnp.mean(jnp.sum(
            soft_teacher * (jax.nn.log_softmax(teacher / t) - jax.nn.log_softmax(logits / t)),
            axis=1))
        penalty = 0.0
        for name, x_in in taps.items():
            lo, hi = self.forms[name].interval
            outside = jnp.maximum(x_in - hi, 0.0) + jnp.maximum(lo - x_in, 0.0)
            weight = jnp.mean(masks[name])
            penalty = penalty + weight * jnp.mean(outside ** 2) / (hi - lo) ** 2
        w = options.distill_weight
        loss = w * kd + (1 - w) * ce + options.range_penalty * penalty
        return loss, {"ce": ce, "kd": kd, "penalty": penalty}

    def _step(self, state: dict[str, Any], opt_state: Any, masks: dict[str, Any], x: Any,
              labels: Any, teacher: Any, clip: bool) -> tuple[Any, Any, Any, Any, Any]:
        """One optimizer step; also returns the loss's gradient with respect to the masks (the
        straight-through signal of the ReLU selection)."""
        jax, jnp, optax = _jax()
        (loss, parts), (grads, mask_grads) = jax.value_and_grad(
            self._loss, argnums=(0, 1), has_aux=True)(state, masks, x, labels, teacher, clip)
        updates, new_opt = self.optimizer.update(grads, opt_state, state)
        new_state = optax.apply_updates(state, updates)
        ok = jnp.isfinite(loss) & _finite(grads) & _finite(new_state)
        keep = lambda new, old: jax.tree_util.tree_map(  # noqa: E731
            lambda a, b: jnp.where(ok, a, b), new, old)
        return keep(new_state, state), keep(new_opt, opt_state), loss, ok, mask_grads

    # -- evaluation ------------------------------------------------------------------------------
    def logits(self, state: dict[str, Any], masks: dict[str, Any], inputs: np.ndarray
               ) -> np.ndarray:
        chunks = [np.asarray(self._logits(state, masks, inputs[i:i + EVAL_BATCH]))
                  for i in range(0, len(inputs), EVAL_BATCH)]
        return np.concatenate(chunks)

    def accuracy(self, state: dict[str, Any], masks: dict[str, Any], data: TrainingData
                 ) -> float:
        logits = self.logits(state, masks, data.inputs)
        finite = np.all(np.isfinite(logits), axis=1)  # a non-finite output counts as wrong
        return 100.0 * float(np.mean((np.argmax(logits, axis=1) == data.labels) & finite))

    # -- the schedule ----------------------------------------------------------------------------
    def schedule(self, total_steps: int) -> list[int]:
        """The step at which each activation (execution order) becomes a polynomial."""
        count = len(self.steps)
        if not self.options.progressive or count == 0:
            return [0] * count
        ramp = REPLACEMENT_FRACTION * total_steps
        return [int(i * ramp / count) for i in range(count)]

    def masks_at(self, step: int, starts: list[int], final: dict[str, np.ndarray]
                 ) -> dict[str, np.ndarray]:
        return {s.name: final[s.name] if step >= start else np.zeros_like(final[s.name])
                for s, start in zip(self.steps, starts, strict=True)}

    # -- the run ---------------------------------------------------------------------------------
    def selection(self, total_steps: int) -> ReluSelection | None:
        """The AutoReP indicators when a ReLU budget is set (``None`` otherwise)."""
        if self.options.relu_budget is None:
            return None
        plan = self.forward.plan
        sizes = {s.name: int(np.prod(plan.values[s.inputs[0]].shape[2:], dtype=np.int64))
                 for s in self.steps}
        channels = {k: f.channels for k, f in self.forms.items()}
        total = sum(sizes[k] * channels[k] for k in channels)
        return ReluSelection(sizes, channels, budget_count(self.options.relu_budget, total),
                             max(int(SELECTION_FRACTION * total_steps), 1))

    def resume(self, state: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, np.ndarray]]:
        """(state, epochs done, masks) from the run's checkpoint (Adam's moments restart)."""
        path = Path(self.options.checkpoint)
        if not path.exists():
            raise FinetuneError(f"--resume: no checkpoint at {path}")
        saved = load_checkpoint(path)
        try:
            restored = {"weights": {k: {r: saved["weights"][k][r].astype(np.float32)
                                        for r in roles}
                                    for k, roles in state["weights"].items()},
                        "coefficients": {k: saved["coefficients"][k].astype(np.float32)
                                         for k in state["coefficients"]}}
            masks = {k: saved["masks"][k].astype(np.float32) for k in self.forms}
        except KeyError as exc:
            raise FinetuneError(f"--resume: {path} is the checkpoint of another model or "
                                f"method (it lacks {exc.args[0]!r})") from None
        for key, value in restored["coefficients"].items():
            if value.shape != state["coefficients"][key].shape:
                raise FinetuneError(f"--resume: {path} holds {key} coefficients of shape "
                                    f"{value.shape}, this run trains "
                                    f"{state['coefficients'][key].shape}")
        return restored, int(saved["epoch"]), masks

    def learning_rate(self, step: int, total: int, scale: float) -> float:
        """The schedule's rate at ``step`` (``scale``: the product of the back-offs)."""
        rate = self.options.lr * scale
        if self.options.schedule == "cosine" and total > 0:
            rate *= 0.5 * (1.0 + np.cos(np.pi * min(step, total) / total))
        return float(rate)

    def run(self, train: TrainingData, held_out: TrainingData,
            final_masks: dict[str, np.ndarray] | None = None) -> TrainedModel:
        """Train; returns the trained model with its summary.

        With a ReLU budget the masks come from the AutoReP selection (and ``final_masks`` is
        ignored); otherwise from the progressive schedule towards ``final_masks`` (default:
        every channel polynomial)."""
        jax, _, _ = _jax()
        options = self.options
        start_time = time.perf_counter()
        state = self.initial_state()
        teacher_state = {"weights": self.teacher_weights,
                         "coefficients": state["coefficients"]}
        relu_masks = self.masks(0.0)
        teacher_logits = self.logits(teacher_state, relu_masks, train.inputs)
        reference = self.accuracy(teacher_state, relu_masks, held_out)
        batch = min(options.batch_size, train.size)
        per_epoch = max(train.size // batch, 1)
        total = per_epoch * options.epochs
        selection = self.selection(total)
        clip_steps = int(options.clip_fraction * total)
        if selection is not None:
            final_masks = None
            starts = [0] * len(self.steps)
        else:
            final_masks = final_masks if final_masks is not None else self.masks(1.0)
            starts = self.schedule(max(total, 1))
        before = self.accuracy(state, final_masks if final_masks is not None
                               else self.masks(1.0), held_out)
        rng = np.random.default_rng(options.seed)
        first_epoch = 0
        if options.resume:
            state, first_epoch, saved_masks = self.resume(state)
            if selection is not None and first_epoch * per_epoch >= selection.selection_steps:
                final_masks = saved_masks  # the selection had ended: keep its choice
            elif selection is not None:
                selection.restart(saved_masks)
        opt_state = self.optimizer.init(state)
        snapshot = (state, opt_state)
        backoffs, step, losses, lr_scale = 0, first_epoch * per_epoch, [], 1.0
        accuracy_history: list[float] = []
        with _progress(options.progress) as bar:
            task = bar.add_task("fine-tuning", total=total, completed=step)
            try:
                for epoch in range(options.epochs):
                    order = rng.permutation(train.size)
                    if epoch < first_epoch:  # done before the interruption (same batch order)
                        continue
                    epoch_losses = []
                    for index in range(per_epoch):
                        rows = order[index * batch:(index + 1) * batch]
                        if final_masks is None and step >= selection.selection_steps:
                            final_masks = selection.final()
                        masks = (selection.masks() if final_masks is None
                                 else self.masks_at(step, starts, final_masks))
                        opt_state.hyperparams["learning_rate"] = self.learning_rate(
                            step, total, lr_scale)
                        new_state, new_opt, loss, ok, mask_grads = self._train_step(
                            state, opt_state, masks, train.inputs[rows], train.labels[rows],
                            teacher_logits[rows], clip=step < clip_steps)
                        if not bool(ok):
                            backoffs += 1
                            if backoffs > options.max_backoffs:
                                raise FinetuneError(
                                    f"the loss is not finite after {options.max_backoffs} "
                                    "learning-rate back-offs (last lr "
                                    f"{self.learning_rate(step, total, lr_scale):.2e}): try "
                                    "a smaller --lr or a larger --degree")
                            state, opt_state = snapshot
                            lr_scale *= 0.5
                            continue
                        state, opt_state = new_state, new_opt
                        if final_masks is None:
                            selection.update(jax.tree_util.tree_map(np.asarray, mask_grads))
                        step += 1
                        epoch_losses.append(float(loss))
                        if step % SNAPSHOT_EVERY == 0:
                            snapshot = (state, opt_state)
                        bar.update(task, advance=1, description=_describe(
                            epoch, options.epochs, float(loss), accuracy_history))
                    snapshot = (state, opt_state)
                    current = (selection.masks() if final_masks is None
                               else self.masks_at(step, starts, final_masks))
                    accuracy_history.append(self.accuracy(state, current, held_out))
                    losses.append(float(np.mean(epoch_losses)) if epoch_losses else float("nan"))
                    bar.update(task, description=_describe(epoch, options.epochs, losses[-1],
                                                           accuracy_history))
                    if options.progress and not bar.console.is_terminal:
                        _log_epoch(epoch, options.epochs, losses[-1], accuracy_history,
                                   time.perf_counter() - start_time)
                    if options.checkpoint is not None:
                        save_checkpoint(options.checkpoint, state, current, epoch + 1)
            except KeyboardInterrupt:
                if options.checkpoint is None:
                    raise FinetuneError("fine-tuning interrupted (no checkpoint was "
                                        "requested)") from None
                save_checkpoint(options.checkpoint, snapshot[0],
                                final_masks if final_masks is not None else selection.masks(),
                                len(accuracy_history))
                raise FinetuneError(f"fine-tuning interrupted: the last checkpoint is in "
                                    f"{options.checkpoint}") from None
        if final_masks is None:  # a run shorter than its selection phase
            final_masks = selection.final()
            accuracy_history.append(self.accuracy(state, final_masks, held_out))
        numpy_state = jax.tree_util.tree_map(lambda a: np.asarray(a, dtype=np.float32), state)
        after = accuracy_history[-1] if accuracy_history else before
        summary = {
            "method": options.method, "degree": options.degree, "epochs": options.epochs,
            "batch_size": batch, "lr": options.lr, "schedule": options.schedule,
            "seed": options.seed, "relu_budget": options.relu_budget,
            "progressive": options.progressive and selection is None,
            "temperature": options.temperature, "distill_weight": options.distill_weight,
            "range_penalty": options.range_penalty,
            "train_samples": train.size, "held_out_samples": held_out.size,
            "steps": step, "backoffs": backoffs,
            "final_lr": self.learning_rate(step, total, lr_scale),
            "relu_accuracy": reference, "accuracy_before": before, "accuracy_after": after,
            "epoch_losses": losses, "epoch_accuracy": accuracy_history,
            "activations": len(self.steps),
            "relu_channels_kept": int(sum(np.sum(m < 0.5) for m in final_masks.values())),
            "relu_channels": int(sum(m.size for m in final_masks.values())),
            "seconds": time.perf_counter() - start_time,
        }
        if selection is not None:
            summary.update({"relus_kept": selection.exact_relus(), "relus_total": selection.total,
                            "relu_budget_count": selection.budget})
        return TrainedModel(self.forward, numpy_state["weights"], self.forms,
                            numpy_state["coefficients"], final_masks, summary)


def _describe(epoch: int, epochs: int, loss: float, accuracy: list[float]) -> str:
    held = f"{accuracy[-1]:.1f}%" if accuracy else "—"
    return f"epoch {epoch + 1}/{epochs}  loss {loss:.4f}  held-out {held}"


def _log_epoch(epoch: int, epochs: int, loss: float, accuracy: list[float], seconds: float
               ) -> None:
    """One line per epoch where the progress bar cannot redraw (a log file, a pipe)."""
    print(f"{_describe(epoch, epochs, loss, accuracy)}  {seconds:.0f} s", flush=True)


def _progress(enabled: bool) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), disable=not enabled, transient=False)


def save_checkpoint(path: str | Path, state: dict[str, Any], masks: dict[str, np.ndarray],
                    epoch: int) -> Path:
    """Write the training state (weights, coefficients, masks, epoch) as ``.npz``, atomically."""
    arrays: dict[str, np.ndarray] = {"epoch": np.array(epoch)}
    for step, roles in state["weights"].items():
        for role, value in roles.items():
            arrays[f"weights/{step}/{role}"] = np.asarray(value)
    for step, value in state["coefficients"].items():
        arrays[f"coefficients/{step}"] = np.asarray(value)
    for step, value in masks.items():
        arrays[f"masks/{step}"] = np.asarray(value)
    return atomic_write(path, lambda f: np.savez(f, **arrays))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint as ``{"epoch", "weights": {step: {role}}, "coefficients", "masks"}``."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise FinetuneError(f"cannot read the checkpoint {path}: {exc}") from None
    out: dict[str, Any] = {"epoch": arrays.pop("epoch", 0), "weights": {}, "coefficients": {},
                           "masks": {}}
    for key, value in arrays.items():
        kind, _, rest = key.partition("/")
        if kind == "weights":
            step, _, role = rest.rpartition("/")
            out["weights"].setdefault(step, {})[role] = value
        elif kind in ("coefficients", "masks"):
            out[kind][rest] = value
    return out
