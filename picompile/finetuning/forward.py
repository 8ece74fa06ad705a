"""The jax forward of a canonical graph: the same computation as the plain backend, differentiable.

Reads: a :class:`~picompile.plan.Plan` lowered from the canonical (and calibrated) IR — the graph
``picompile.compile`` builds — its steps, attributes and parameter arrays.
Writes: nothing; :class:`Forward` holds the step structure (static) and hands out the trainable
parameters as a pytree (``{step: {role: array}}``) that :meth:`Forward.apply` evaluates on a
batch (leading axis) with jax.numpy.

Every activation step is evaluated by a caller-supplied function (``activation(step, x)``), so
that the same forward runs the exact ReLU teacher, the polynomial student and mixtures of both.
Ops: Conv (groups, strides, pads, dilations), Linear, ChannelAffine, Add, Mul, AveragePool
(``ceil_mode=0``), GlobalAveragePool, MaxPool (``ceil_mode=0``), ReduceMean/ReduceSum, Pad
(constant), Transpose, Concat, Reshape, Polynomial (the plan's Chebyshev series) and the exact
activations of :data:`~picompile.plan.ACTIVATION_OPS` (Relu in jax; others refused).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from picompile.errors import UnsupportedOpError
from picompile.plan import ACTIVATION_OPS, Plan, Step

#: Parameter roles that training updates (per op); other arrays stay constants.
TRAINABLE_ROLES = {"Conv": ("weight", "bias"), "Linear": ("weight", "bias"),
                   "ChannelAffine": ("scale", "shift")}
#: Ops the forward evaluates.
SUPPORTED_OPS = frozenset({"Conv", "Linear", "ChannelAffine", "Add", "Mul", "AveragePool",
                           "GlobalAveragePool", "MaxPool", "ReduceMean", "ReduceSum", "Pad",
                           "Transpose", "Concat", "Reshape", "Polynomial"}) | {"Relu"}

Params = dict[str, dict[str, Any]]
Activation = Callable[[Step, Any], Any]


def _jax() -> Any:
    import jax

    return jax


@dataclass
class Forward:
    """A plan's steps as a jax function of (parameters, batch)."""

    plan: Plan

    def __post_init__(self) -> None:
        unsupported = sorted({s.op for s in self.plan.steps} - SUPPORTED_OPS)
        if unsupported:
            raise UnsupportedOpError(f"fine-tuning does not support {', '.join(unsupported)} "
                                     f"(supported: {', '.join(sorted(SUPPORTED_OPS))})")
        ceil = [s.name for s in self.plan.steps
                if s.op in ("AveragePool", "MaxPool") and s.attrs.get("ceil_mode")]
        if ceil:
            raise UnsupportedOpError(f"fine-tuning does not support ceil_mode pooling ({ceil[0]})")

    @property
    def activation_steps(self) -> list[Step]:
        """The exact activation steps, in execution order (the ones fine-tuning replaces)."""
        return [s for s in self.plan.steps if s.op in ACTIVATION_OPS]

    @property
    def input_name(self) -> str:
        return self.plan.inputs[0].name

    @property
    def output_name(self) -> str:
        return self.plan.outputs[0].name

    def parameters(self, dtype: Any = np.float32) -> Params:
        """The trainable arrays by step and role (numpy, ``dtype``)."""
        params: Params = {}
        for step in self.plan.steps:
            roles = TRAINABLE_ROLES.get(step.op, ())
            if roles:
                params[step.name] = {r: np.asarray(self.plan.param(step, r), dtype=dtype)
                                     for r in roles}
        return params

    def apply(self, params: Params, x: Any, activation: Activation,
              taps: dict[str, Any] | None = None) -> Any:
        """The plan's output on batch ``x``; activation steps call ``activation(step, input)``.

        When ``taps`` is a dict, every activation's input is stored there by step name (for
        range penalties and statistics)."""
        jnp = _jax().numpy
        env: dict[str, Any] = {self.input_name: jnp.asarray(x)}
        dtype = env[self.input_name].dtype
        for step in self.plan.steps:
            args = [env[v] for v in step.inputs]
            if step.op in ACTIVATION_OPS:
                if taps is not None:
                    taps[step.name] = args[0]
                env[step.outputs[0]] = activation(step, args[0])
                continue
            env[step.outputs[0]] = self._step(step, params.get(step.name, {}), args, dtype)
        return env[self.output_name]

    def _constant(self, step: Step, role: str, dtype: Any) -> Any:
        return _jax().numpy.asarray(self.plan.param(step, role), dtype=dtype)

    def _step(self, step: Step, params: Mapping[str, Any], args: list[Any], dtype: Any) -> Any:
        jax = _jax()
        jnp = jax.numpy
        op, attrs, x = step.op, step.attrs, args[0]
        if op == "Conv":
            weight, bias = params["weight"], params["bias"]
            rank = weight.ndim - 2
            pads = attrs["pads"]
            y = jax.lax.conv_general_dilated(
                x, weight, window_strides=tuple(attrs["strides"]),
                padding=[(pads[i], pads[rank + i]) for i in range(rank)],
                rhs_dilation=tuple(attrs["dilations"]),
                feature_group_count=int(attrs["group"]),
                precision=jax.lax.Precision.HIGHEST)
            return y + bias.reshape((1, -1) + (1,) * rank)
        if op == "Linear":
            return jnp.matmul(x, params["weight"].T,
                              precision=jax.lax.Precision.HIGHEST) + params["bias"]
        if op == "ChannelAffine":
            shape = (1, -1) + (1,) * (x.ndim - 2)
            return x * params["scale"].reshape(shape) + params["shift"].reshape(shape)
        if op in ("Add", "Mul"):
            other = args[1] if len(args) > 1 else self._constant(step, "constant", dtype)
            return x + other if op == "Add" else x * other
        if op == "Reshape":
            return x.reshape((x.shape[0],) + tuple(attrs["shape"][1:]))
        if op == "GlobalAveragePool":
            return x.mean(axis=tuple(range(2, x.ndim)), keepdims=True)
        if op in ("AveragePool", "MaxPool"):
            return _pool(op, x, attrs)
        if op in ("ReduceMean", "ReduceSum"):
            reduce = jnp.mean if op == "ReduceMean" else jnp.sum
            return reduce(x, axis=tuple(attrs["axes"]), keepdims=bool(attrs["keepdims"]))
        if op == "Pad":
            if attrs["mode"] != "constant":
                raise UnsupportedOpError(f"fine-tuning supports constant Pad only ({step.name})")
            rank = x.ndim
            width = [(attrs["pads"][i], attrs["pads"][rank + i]) for i in range(rank)]
            return jnp.pad(x, width, constant_values=attrs["value"])
        if op == "Transpose":
            return x.transpose(attrs["perm"])
        if op == "Concat":
            return jnp.concatenate(args, axis=attrs["axis"])
        if op == "Polynomial":
            y = chebyshev_series(x, self._constant(step, "coefficients", dtype),
                                 self.plan.param(step, "interval"))
            if "relu_channels" in step.params:  # a partial ReLU
                exact = self._constant(step, "relu_channels", dtype)
                exact = exact.reshape((1, -1) + (1,) * (x.ndim - 2))
                y = y + exact * (jnp.maximum(x, 0.0) - y)
            return y
        raise UnsupportedOpError(f"fine-tuning has no kernel for {op}")


def _pool(op: str, x: Any, attrs: Mapping[str, Any]) -> Any:
    jax = _jax()
    jnp = jax.numpy
    rank = len(attrs["kernel_shape"])
    pads = attrs["pads"]
    window = (1, 1) + tuple(attrs["kernel_shape"])
    strides = (1, 1) + tuple(attrs["strides"])
    dilation = (1, 1) + tuple(attrs["dilations"])
    padding = [(0, 0), (0, 0)] + [(pads[i], pads[rank + i]) for i in range(rank)]
    if op == "MaxPool":
        return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, window, strides, padding,
                                     window_dilation=dilation)
    sums = jax.lax.reduce_window(x, 0.0, jax.lax.add, window, strides, padding,
                                 window_dilation=dilation)
    if attrs.get("count_include_pad"):
        inside = jnp.pad(jnp.ones((1, 1) + x.shape[2:], x.dtype), padding, constant_values=1.0)
        counts = jax.lax.reduce_window(inside, 0.0, jax.lax.add, window, strides,
                                       [(0, 0)] * (rank + 2), window_dilation=dilation)
    else:
        counts = jax.lax.reduce_window(jnp.ones((1, 1) + x.shape[2:], x.dtype), 0.0,
                                       jax.lax.add, window, strides, padding,
                                       window_dilation=dilation)
    return sums / counts


def chebyshev_series(x: Any, coefficients: Any, interval: np.ndarray) -> Any:
    """A Polynomial step's Chebyshev series on [a, b] (one row, or one per channel on axis 1),
    by Clenshaw's recurrence — the plain backend's ``chebyshev_series`` in jax."""
    a, b = float(interval[0]), float(interval[1])
    t = (2.0 * x - (a + b)) / (b - a)
    rows = coefficients.shape[0]
    shape = (1, rows) + (1,) * (x.ndim - 2) if rows > 1 else (1,) * x.ndim
    terms = [coefficients[:, k].reshape(shape) for k in range(coefficients.shape[1])]
    b1 = b2 = 0.0 * t
    for c in reversed(terms[1:]):
        b1, b2 = 2.0 * t * b1 - b2 + c, b1
    return t * b1 - b2 + terms[0]


def relu(step: Step, x: Any) -> Any:
    """The exact ReLU (the teacher's activation)."""
    if step.op != "Relu":
        raise UnsupportedOpError(f"fine-tuning replaces Relu activations only, not {step.op} "
                                 f"({step.name})")
    return _jax().numpy.maximum(x, 0.0)
