"""(Re)write the fuzz seed corpus (``fuzz/corpus/``) from the test models.

Reads: the small ONNX models of ``tests/onnx_models.py``.
Writes: ``fuzz/corpus/plan_file/`` (plain, FHE and hybrid plans of the small conv model),
``onnx_model/`` (the small models), ``numpy_input/`` (an input, a calibration set, a wrong
shape), ``fhe_session/`` and ``hybrid_session/`` (a client's messages — hello with the plan's
real fingerprint, keys, ciphertexts, bye — in their real structure, the key and ciphertext
bytes short stand-ins: real keys are megabytes each).

    .venv/bin/python fuzz/make_corpus.py
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))

from harnesses import CORPUS, _session_frames  # noqa: E402

import picompile  # noqa: E402
from onnx_models import conv_model, residual_model, shared_activation_model  # noqa: E402
from picompile.runtime.session import PROTOCOL_VERSION  # noqa: E402


def write(folder: str, name: str, data: bytes) -> None:
    path = CORPUS / folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    print(f"{path.relative_to(HERE.parent)}: {len(data):,} bytes")


def main() -> None:
    rng = np.random.default_rng(0)
    calib = rng.normal(size=(32, 2, 6, 6)).astype(np.float32)
    model = conv_model().SerializeToString()
    plain = picompile.compile(model)
    fhe = picompile.compile(model, calib=calib, degree=2, method="quad",
                            insecure_test_params=True)
    hybrid = picompile.compile(model, calib=calib, protocol="hybrid", degree=2, method="quad",
                               quadratic_protocol="flash")
    for name, plan in (("conv_plain.piplan", plain), ("conv_fhe.piplan", fhe),
                       ("conv_hybrid.piplan", hybrid)):
        write("plan_file", name, plan.to_bytes())
    for name, onnx_model in (("conv.onnx", conv_model()), ("residual.onnx", residual_model()),
                             ("shared_activation.onnx", shared_activation_model())):
        write("onnx_model", name, onnx_model.SerializeToString())
    for name, array in (("input.npy", calib[:1]), ("wrong_shape.npy", calib[:1, :1])):
        buffer = io.BytesIO()
        np.save(buffer, array)
        write("numpy_input", name, buffer.getvalue())
    buffer = io.BytesIO()
    np.savez(buffer, input=calib[:4], labels=np.arange(4))
    write("numpy_input", "calib.npz", buffer.getvalue())

    from picompile.runtime.fhe_session import fhe_fingerprint

    name = fhe.inputs[0].name
    stand_in = b"\x00" * 64   # keys are megabytes: the structure is real, the bytes stand in
    write("fhe_session", "session.bin", _session_frames([
        ("hello", {"version": PROTOCOL_VERSION, "protocol": "fhe",
                   "plan": fhe_fingerprint(fhe)}),
        ("keys", {"context": stand_in, "public_key": stand_in,
                  "multiplication_key": stand_in, "rotation_chunks": 1}),
        ("data", stand_in),
        ("ciphertexts", {name: stand_in}),
        ("bye", b"")]))

    from picompile.runtime.hybrid.views import client_view, fingerprint, he_linear_steps

    view = client_view(hybrid)
    stand_in = [b"\x00" * 64] * len(hybrid.bfv.primes)
    ciphertexts = {step.name: [stand_in] for step in he_linear_steps(view)
                   if step.hybrid.flash_from is None}
    ciphertexts.update({f"flash:{s.name}": {"c": [stand_in], "c2": [stand_in]}
                        for s in view.steps if s.hybrid and s.hybrid.protocol ==
                        "flash_quadratic"})
    write("hybrid_session", "session.bin", _session_frames([
        ("hello", {"version": PROTOCOL_VERSION, "plan": fingerprint(view), "role": "client",
                   "session": "0" * 32, "correlations": hybrid.bfv.correlations}),
        ("keys", {"contexts": stand_in, "public_keys": stand_in, "rotation_keys": stand_in}),
        ("ciphertexts", ciphertexts),
        ("bye", b"")]))


if __name__ == "__main__":
    main()
