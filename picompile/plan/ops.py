"""The op registry: every op a plan step may carry, and the facts passes and runtimes ask of it.

Reads: nothing. Writes: nothing (constants). One table, :data:`PLAN_OPS`; every op set in the
project is derived from it here, so adding an op is one line in the table (plus its kernels:
``runtime/tensor_ops.py`` and ``runtime/plain.py`` for the plain backend, ``passes/packing.py``
and ``runtime/plain.op_matrix`` for CKKS/BFV matrices, ``runtime/hybrid`` for shares).

The ONNX side (what the frontend accepts, what becomes the client head) is listed too, so that
one module answers "is this op supported, and how is it run".
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

#: Kinds of plan op.
LINEAR = "linear"            # a matrix on the flattened tensor (+ bias): diagonals under CKKS
ACTIVATION = "activation"    # an exact nonlinearity (a compile with --calib makes it Polynomial)
POLYNOMIAL = "polynomial"    # a fitted polynomial (per layer or per channel)
POOL_MAX = "max_pool"        # MaxPool: comparisons, hybrid protocol only
ADD = "add"                  # residual add, or add of a constant
PRODUCT = "product"          # elementwise product of two encrypted tensors (one level)
STRUCTURAL = "structural"    # a layout no-op (Reshape) or a join (Concat)
NORMALIZATION = "normalization"  # a nonlinear normalization across channels (LRN): plain only


@dataclass(frozen=True)
class OpInfo:
    """Facts about one plan op.

    ``weighted``: a linear op with private parameters (weights); the others' matrices are public
    (pooling, padding, transposition). ``elementwise``: slot-wise on its input's packing (keeps
    the slot map). ``level_free``: consumes no multiplicative level under CKKS.
    ``fhe``: has a slot-level kernel (runs under CKKS).
    """

    kind: str
    weighted: bool = False
    elementwise: bool = False
    level_free: bool = False
    fhe: bool = True


PLAN_OPS = MappingProxyType({
    "Conv": OpInfo(LINEAR, weighted=True),
    "Linear": OpInfo(LINEAR, weighted=True),
    "ChannelAffine": OpInfo(LINEAR, weighted=True, elementwise=True),
    "Mul": OpInfo(LINEAR, weighted=True, elementwise=True),
    "AveragePool": OpInfo(LINEAR),
    "GlobalAveragePool": OpInfo(LINEAR),
    "ReduceMean": OpInfo(LINEAR),
    "ReduceSum": OpInfo(LINEAR),
    "Pad": OpInfo(LINEAR),
    "Transpose": OpInfo(LINEAR),
    "Add": OpInfo(ADD, elementwise=True, level_free=True),
    "Product": OpInfo(PRODUCT, elementwise=True),
    "Reshape": OpInfo(STRUCTURAL, level_free=True),
    "Concat": OpInfo(STRUCTURAL, fhe=False),
    "Relu": OpInfo(ACTIVATION, elementwise=True, fhe=False),
    "Clip": OpInfo(ACTIVATION, elementwise=True, fhe=False),
    "LeakyRelu": OpInfo(ACTIVATION, elementwise=True, fhe=False),
    "PRelu": OpInfo(ACTIVATION, elementwise=True, fhe=False),
    "Sigmoid": OpInfo(ACTIVATION, elementwise=True, fhe=False),
    "Tanh": OpInfo(ACTIVATION, elementwise=True, fhe=False),
    "Gelu": OpInfo(ACTIVATION, elementwise=True, fhe=False),
    "Polynomial": OpInfo(POLYNOMIAL, elementwise=True),
    "MaxPool": OpInfo(POOL_MAX, fhe=False),
    "LRN": OpInfo(NORMALIZATION, fhe=False),
})


def _ops(**facts: object) -> frozenset[str]:
    return frozenset(name for name, info in PLAN_OPS.items()
                     if all(getattr(info, key) == value for key, value in facts.items()))


#: Exact nonlinear activations (a compile with --calib turns them into ``Polynomial`` steps).
ACTIVATION_OPS = _ops(kind=ACTIVATION)
#: Linear ops: a matrix on slots under CKKS (generalized diagonals + rotations), HE under BFV.
SLOT_MATRIX_OPS = _ops(kind=LINEAR)
#: Linear ops whose matrix is public (no weights): each hybrid party applies it to its share.
PUBLIC_MATRIX_OPS = _ops(kind=LINEAR, weighted=False)
#: Ops with a slot-level CKKS kernel.
FHE_OPS = _ops(fhe=True)
#: Ops that consume no CKKS level.
LEVEL_FREE_OPS = _ops(level_free=True)
#: Slot-wise ops (their output keeps the input's slot map, ``packing`` pass).
ELEMENTWISE_OPS = _ops(elementwise=True)
#: Ops that can scale their output for free (their diagonals or coefficients are scaled): a
#: bootstrap's range scaling is folded into them (``levels`` pass) instead of costing a level.
FREE_SCALING_OPS = SLOT_MATRIX_OPS | {"Polynomial"}
#: Activations as reports list them (exact, fitted, or a composite ReLU's product).
REPORTED_ACTIVATION_OPS = ACTIVATION_OPS | {"Polynomial", "Product"}
#: Hybrid plans: ops each party applies to its own share with no interaction.
LOCAL_OPS = frozenset({"Reshape", "Add"})
#: Ops a canonical IR may hold (``canonicalize`` pass).
CANONICAL_OPS = frozenset(PLAN_OPS) - {"Polynomial"}

#: ONNX ops (default domain) the frontend accepts on the server side.
ONNX_SERVER_OPS = frozenset({
    "Conv", "Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "BatchNormalization",
    "Relu", "Clip", "LeakyRelu", "PRelu", "Sigmoid", "Tanh", "Gelu",
    "AveragePool", "GlobalAveragePool", "MaxPool", "ReduceMean", "ReduceSum",
    "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Pad", "Concat",
    "Identity", "Dropout", "Cast", "Sum", "LRN",
    "Pow", "Neg",  # inside polynomial activations (recognised by canonicalize)
})
#: ONNX ops that start the client-side classifier head (with everything downstream of them).
ONNX_HEAD_OPS = frozenset({"Softmax", "LogSoftmax", "ArgMax", "ArgMin", "ZipMap"})
#: ONNX ops the canonicalizer folds into their neighbours (reshape-like: layout no-ops).
ONNX_RESHAPE_OPS = frozenset({"Flatten", "Reshape", "Squeeze", "Unsqueeze"})
