"""The plan: the only contract between compiler and runtime.

``document`` holds the plan record and its ``.piplan`` file format; ``contract`` the typed records
the runtime reads; ``ops`` the op vocabulary plans use (the op registry); ``activations`` what
each activation op computes. The runtime imports this package (and
``picompile.errors``) and nothing else of picompile.
"""

from picompile.plan.contract import (
    BfvParameters,
    BlockLayout,
    BlockPair,
    BootstrapSettings,
    CkksParameters,
    FheStep,
    HybridStep,
    LinearLayout,
    Refresh,
    SlotLayout,
)
from picompile.plan.document import (
    HASH_HEX_LENGTH,
    HEAD_ARRAY,
    SCHEMA_VERSION,
    HeadSpec,
    Plan,
    Step,
    TensorSpec,
)
from picompile.plan.ops import ACTIVATION_OPS, SLOT_MATRIX_OPS

__all__ = ["ACTIVATION_OPS", "HASH_HEX_LENGTH", "HEAD_ARRAY", "SCHEMA_VERSION", "SLOT_MATRIX_OPS",
           "BfvParameters", "BlockLayout", "BlockPair", "BootstrapSettings", "CkksParameters",
           "FheStep", "HeadSpec", "HybridStep", "LinearLayout", "Plan", "Refresh", "SlotLayout",
           "Step", "TensorSpec"]
