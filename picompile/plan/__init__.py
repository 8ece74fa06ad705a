"""The plan: the only contract between compiler and runtime.

``document`` holds the plan record and its ``.piplan`` file format; ``contract`` the typed records
the runtime reads; ``ops`` the op vocabulary plans use. The runtime imports this package (and
``picompile.errors``) and nothing else of picompile.
"""

from picompile.plan.document import (
    ACTIVATION_OPS,
    HASH_HEX_LENGTH,
    HEAD_ARRAY,
    SCHEMA_VERSION,
    SLOT_MATRIX_OPS,
    HeadSpec,
    Plan,
    Step,
    TensorSpec,
)

__all__ = ["ACTIVATION_OPS", "HASH_HEX_LENGTH", "HEAD_ARRAY", "SCHEMA_VERSION", "SLOT_MATRIX_OPS",
           "HeadSpec", "Plan", "Step", "TensorSpec"]
