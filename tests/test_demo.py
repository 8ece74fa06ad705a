"""``make demo``'s script (examples/demo.py): one digit through the FHE protocol and through the
hybrid protocol with Flash quadratics, each as a server process and a client process over
loopback TCP; both encrypted predictions equal onnxruntime's and the label, no dealer runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_demo_runs_both_protocols_as_two_processes(tmp_path, capsys) -> None:
    sys.path.insert(0, str(EXAMPLES))
    import demo

    import digits

    assert demo.main(["--out", str(tmp_path), "--index", "0"]) == 0
    out = capsys.readouterr().out
    label = int(digits.load_split()["test_labels"][0])
    fhe = json.loads((tmp_path / "cnn_fhe.stats.json").read_text())
    hybrid = json.loads((tmp_path / "cnn_hybrid.stats.json").read_text())
    assert fhe["protocol"] == "fhe" and fhe["prediction"] == [label]
    assert hybrid["protocol"] == "hybrid" and hybrid["prediction"] == [label]
    assert hybrid["dealer_bytes"] == 0 and hybrid["online_bytes"] > 0
    assert fhe["key_bytes"] > 0 and fhe["bytes_received"] > 0
    assert (tmp_path / "cnn_fhe.html").stat().st_size > 0
    # the client's plans hold no weights
    from picompile.plan import Plan

    full = Plan.load(tmp_path / "cnn_hybrid.piplan")
    client = Plan.load(tmp_path / "cnn_hybrid.client.piplan")
    secret = [full.steps[i].params["weight"] for i, s in enumerate(full.steps)
              if s.hybrid is not None and s.hybrid.protocol == "he_linear"]
    assert secret and not set(secret) & set(client.arrays)
    assert np.load(tmp_path / "digit.npy").shape == (1, 1, 8, 8)
    assert out.count("✔") == 2 and "dealer bytes 0" in out
