"""Fine-tuning: trained low-degree activations (``picompile finetune``).

Reads: an ONNX model and training data (``input`` and ``labels``, the ``--calib`` format).
Writes: an ONNX model of standard ops whose activations are trained polynomials, with a training
summary in its ``metadata_props``.

Modules: ``forward`` (the canonical graph as a jax function), ``polynomials`` (the trainable
activation forms: AESPA ``hermite``, Flash ``quad``, OLA/DaPa ``wls``), ``data`` (training data
checks and split), ``train`` (knowledge distillation, progressive replacement, range penalty,
NaN back-off, checkpoints), ``export`` (the ONNX writer), ``stage`` (end to end). The package is
``picompile.finetuning`` because ``picompile.finetune`` is the API function. jax and optax are
imported lazily, by these modules only: ``compile`` and ``run`` never import them (the ``train``
extra).
"""
