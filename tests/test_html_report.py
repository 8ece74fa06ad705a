"""The HTML plan report: numbers equal the plan's, plots embed and render, the CLI writes it.

Plans: (a) the CNN with a uniform degree and insecure test CKKS parameters (layout, levels,
calibration, no accuracy search), (b) the CNN with an accuracy budget (closed-loop degrees),
(c) the MLP without calibration (exact activations: no levels, no costs, no histograms).
"""

from __future__ import annotations

import base64
import copy
import html
import io
import re
import subprocess
import sys
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import onnx
import pytest

import picompile
from conftest import EXAMPLES, ROOT, model_input
from picompile.plan import Plan
from picompile.report import render_html, write_html
from picompile.report.facts import key_sizes, predicted_latency, step_seconds
from picompile.report.formatting import fmt, fmt_accuracy, fmt_seconds

CHROMIUM = Path("/usr/bin/chromium")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
IMAGE = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"')

#: Evaluation-key sizes worked out by hand for the CKKS parameters of the example plans, keyed
#: by (ring dimension N, multiplicative depth): towers = depth + 1; OpenFHE's default hybrid key
#: switching uses 3 digits above depth 3; special primes = ceil(towers / digits); one key is
#: 2 polynomials x digits x N x (towers + special primes) x 8 bytes.
#:   N = 4096, depth 7:  8 towers, 3 digits, 3 special: 2 * 3 * 4096 * 11 * 8 = 2,162,688 B
#:   N = 16384, depth 5: 6 towers, 3 digits, 2 special: 2 * 3 * 16384 * 8 * 8 = 6,291,456 B
#: Value: (towers, digits, bytes per key, bytes per key as the report prints it).
KEY_SIZES_BY_HAND = {
    (4096, 7): (8, 3, 2_162_688, "2.1 MiB"),     # 2,162,688 / 2^20 = 2.0625
    (16384, 5): (6, 3, 6_291_456, "6.0 MiB"),    # 6,291,456 / 2^20 = 6
}


@pytest.fixture(scope="module")
def plans(digits_split: dict[str, np.ndarray]) -> dict[str, Plan]:
    calib = {"input": model_input(digits_split["calib_images"], "img8"),
             "labels": digits_split["calib_labels"]}
    cnn = EXAMPLES / "cnn_digits.onnx"
    return {
        "fhe": picompile.compile(cnn, calib=calib, degree=3, insecure_test_params=True),
        "budget": picompile.compile(cnn, calib=calib, accuracy_budget=1.0),
        "plain": picompile.compile(EXAMPLES / "mlp_digits.onnx"),
    }


@pytest.fixture(scope="module")
def reports(plans: dict[str, Plan]) -> dict[str, str]:
    return {name: render_html(plan) for name, plan in plans.items()}


def images(document: str) -> list[np.ndarray]:
    """Every embedded PNG, decoded (checks the signature on the way)."""
    decoded = []
    for data in IMAGE.findall(document):
        raw = base64.b64decode(data, validate=True)
        assert raw.startswith(PNG_SIGNATURE)
        decoded.append(mpimg.imread(io.BytesIO(raw), format="png"))
    return decoded


@pytest.mark.parametrize("name", ["fhe", "budget", "plain"])
def test_every_step_and_summary_value_appears(plans, reports, name):
    plan, document = plans[name], reports[name]
    assert document.startswith("<!DOCTYPE html>")
    for index, step in enumerate(plan.steps):
        assert f'<td class="name">{html.escape(step.name)}</td>' in document
        assert f'<td class="num">{index}</td>' in document
    assert html.escape(plan.model["sha256"]) in document
    assert f"<td>{plan.model['opset']}</td>" in document
    assert f"<td>{html.escape(plan.model['producer'])}</td>" in document
    assert f"<td>{plan.security['activations']}</td>" in document
    for record in plan.passes:
        assert f"<td>{record['name']}</td>" in document
        assert f"{record['seconds']:.3f}" in document
        for line in record["diagnostics"]:
            assert f"<li>{html.escape(line)}</li>" in document
    # self-contained: no scripts, every src/href is inline data
    assert "<script" not in document.lower()
    assert all(link.startswith("data:") for link in re.findall(r'(?:src|href)="([^"]*)"',
                                                               document))


@pytest.mark.parametrize("name", ["fhe", "budget"])
def test_ckks_numbers_equal_the_plan(plans, reports, name):
    plan, document = plans[name], reports[name]
    ckks = plan.ckks
    ring = ckks.ring_dimension
    assert f"{ring:,} (2^{ring.bit_length() - 1})" in document
    assert f"<th>multiplicative depth</th><td>{ckks.multiplicative_depth}</td>" in document
    assert f"<th>slots</th><td>{ckks.slots:,}</td>" in document
    assert (f"<th>log2 q (without special primes)</th>"
            f"<td>{ckks.log2_q_without_special_primes}</td>") in document
    assert f"<td>{html.escape(ckks.security)}</td>" in document
    assert f"<th>rotation keys</th><td>{len(plan.layout.rotation_keys)}</td>" in document
    # key sizes: against sizes worked out by hand for these parameters
    depth = ckks.multiplicative_depth
    assert (ring, depth) in KEY_SIZES_BY_HAND, (
        f"work out the key size for N={ring}, depth {depth} by hand and add it")
    towers, digits, per_key, printed = KEY_SIZES_BY_HAND[ring, depth]
    sizes = key_sizes(plan)
    assert (sizes.towers, sizes.digits, sizes.per_key) == (towers, digits, per_key)
    assert f"<th>relinearization key (est.)</th><td>{printed}</td>" in document
    assert f"<th>one rotation key (est.)</th><td>{printed}</td>" in document
    rotation_keys = len(plan.layout.rotation_keys)
    assert sizes.rotation_keys == rotation_keys
    assert sizes.rotation_total == per_key * rotation_keys
    assert sizes.total == per_key * (rotation_keys + 1)
    assert f"({rotation_keys} keys)</td>" in document
    # latency: the cost pass's per-step estimates when present, else the activations' estimates
    seconds, _ = predicted_latency(plan)
    if any("estimated_seconds" in s.meta for s in plan.steps):
        expected = sum(s.meta.get("estimated_seconds", 0.0) for s in plan.steps)
        if "cost" in plan.analysis:
            assert expected == pytest.approx(plan.analysis["cost"]["predicted_seconds"])
    else:
        expected = sum(s.meta["approximation"]["estimated_seconds"]
                       for s in plan.steps if s.op == "Polynomial")
    assert seconds == pytest.approx(expected)
    assert fmt_seconds(seconds) in document
    for step in plan.steps:
        if step.fhe is not None and step.fhe.level_in is not None:
            assert (f'<td class="num">{step.fhe.level_in}</td>'
                    f'<td class="num">{step.fhe.level_out}</td>') in document
        if step.op == "Polynomial":
            record = step.meta["approximation"]
            assert f'<td class="num">{fmt(record["max_error"])}</td>' in document
            assert f'<td class="num">{fmt(step_seconds(step))}</td>' in document
            folded = ", square folded into producer" if step.meta.get("folded_square") else ""
            assert f"<td>{step.attrs['method']}{folded}</td>" in document
        if step.fhe is not None and step.fhe.linear is not None:
            assert f'<td class="num">{step.fhe.linear.diagonal_count}</td>' in document


def test_summary_counts_equal_the_onnx_model(reports):
    """The MLP's step and parameter counts, counted in the ONNX model with onnx itself: one
    step per MatMul (its Add folded in) and per Relu; the parameters are the MatMul weights and
    Add biases (the head's ``classes`` and shape tensor are not step parameters)."""
    model = onnx.load(EXAMPLES / "mlp_digits.onnx")
    sizes = {t.name: int(np.prod(t.dims)) for t in model.graph.initializer}
    steps = sum(node.op_type in ("MatMul", "Relu") for node in model.graph.node)
    parameters = sum(sizes[name] for node in model.graph.node if node.op_type in ("MatMul", "Add")
                     for name in node.input if name in sizes)
    assert (steps, parameters) == (5, 2778)
    assert f"<th>steps</th><td>{steps} ({parameters:,} parameters)</td>" in reports["plain"]


def test_latency_falls_back_to_activation_estimates(plans):
    plan = copy.deepcopy(plans["fhe"])
    for step in plan.steps:
        step.meta.pop("estimated_seconds", None)
    seconds, source = predicted_latency(plan)
    assert seconds == pytest.approx(sum(s.meta["approximation"]["estimated_seconds"]
                                        for s in plan.steps if s.op == "Polynomial"))
    assert "linear layers not included" in source
    document = render_html(plan)
    assert fmt_seconds(seconds) in document
    assert document.count("<img") == 3  # the cost plot now shows the activations only


def test_accuracy_budget_numbers(plans, reports):
    degrees = plans["budget"].analysis["degrees"]
    document = reports["budget"]
    assert (f"<th>original model accuracy</th><td>{fmt_accuracy(degrees['base_accuracy'])}"
            "</td>") in document
    assert (f"<th>predicted accuracy (this plan)</th>"
            f"<td>{fmt_accuracy(degrees['achieved_accuracy'])}</td>") in document
    assert f"{degrees['accuracy_budget_points']} points" in document
    assert f"<td>{len(degrees['iterations'])}</td>" in document
    # without an accuracy search the report says the accuracy was not predicted
    assert "Accuracy was not predicted at compile time" in reports["fhe"]


@pytest.mark.parametrize("name, expected", [
    ("fhe", 3),     # per-step cost, level timeline, activation fits
    ("budget", 4),  # ... and accuracy versus budget
    ("plain", 0),   # no costs, levels, histograms or search: notes instead
])
def test_plots_embed_decode_and_are_not_blank(reports, name, expected):
    document = reports[name]
    assert document.count("<img") == expected
    decoded = images(document)
    assert len(decoded) == expected
    for image in decoded:
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
        assert float(np.std(image[..., :3])) > 0.0


def test_missing_data_is_a_note_and_a_dash(reports):
    document = reports["plain"]
    for note in ("the plan carries no cost estimates", "the plan carries no CKKS levels",
                 "no calibration histograms", "recorded no accuracy-budget search",
                 "No CKKS parameters"):
        assert note in document
    assert '<td class="num">–</td>' in document
    assert "Accuracy versus budget: the compile recorded no" in reports["fhe"]


@pytest.fixture(scope="module")
def resnet_plan(digits_split: dict[str, np.ndarray]) -> Plan:
    """The ResNet-20 example with calibrated uniform degree-5 polynomials (19 activations)."""
    calib = {"input": model_input(digits_split["calib_images"], "img32x3"),
             "labels": digits_split["calib_labels"]}
    return picompile.compile(EXAMPLES / "resnet20_digits.onnx", calib=calib, degree=5)


def test_resnet20_report_plots_render(resnet_plan):
    document = render_html(resnet_plan)
    for step in resnet_plan.steps:
        assert html.escape(step.name) in document
    decoded = images(document)
    assert len(decoded) >= 2
    assert all(float(np.std(image[..., :3])) > 0.0 for image in decoded)


@pytest.mark.parametrize("which", ["budget", "resnet20"])
def test_chromium_renders_the_report(plans, resnet_plan, which, tmp_path):
    if not CHROMIUM.exists():
        pytest.skip("chromium not installed")
    plan = resnet_plan if which == "resnet20" else plans["budget"]
    report = write_html(plan, tmp_path / "report.html")
    shot = tmp_path / "shot.png"
    command = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync",
               f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
               "--window-size=1400,3000", "--enable-logging=stderr", "--v=0",
               report.resolve().as_uri()]
    result = subprocess.run(command, capture_output=True, text=True, timeout=90,
                            check=False)
    assert shot.exists(), result.stderr[-2000:]
    pixels = mpimg.imread(shot)
    assert float(np.std(pixels[..., :3])) > 0.0
    problems = [line for line in result.stderr.splitlines()
                if "Uncaught" in line or ("CONSOLE" in line.upper() and report.name in line)]
    assert not problems, problems


def test_cli_report_writes_html_and_prints_text(plans, tmp_path):
    plan_path = tmp_path / "cnn.piplan"
    plans["fhe"].save(plan_path)
    out = tmp_path / "out.html"
    result = subprocess.run([sys.executable, "-m", "picompile.cli", "report", str(plan_path),
                             "--html", str(out)], capture_output=True, text=True, cwd=ROOT,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "plan summary" in result.stdout and "compile phases" in result.stdout
    assert f"wrote {out}" in result.stdout
    document = out.read_text(encoding="utf-8")
    assert document == render_html(Plan.load(plan_path))


@pytest.mark.parametrize("op, attrs, x, expected", [
    ("Polynomial", {"function": "relu"}, [-2.0, 0.5], [0.0, 0.5]),
    ("Polynomial", {"function": "clip", "lo": -1.0, "hi": 2.0}, [-3.0, 1.0, 5.0],
     [-1.0, 1.0, 2.0]),
    ("Polynomial", {"function": "leaky_relu", "alpha": 0.1}, [-2.0, 3.0], [-0.2, 3.0]),
    ("Polynomial", {"function": "relu6"}, [-1.0, 7.0], [0.0, 6.0]),
    ("Clip", {"min": 0.0, "max": 6.0}, [-1.0, 7.0], [0.0, 6.0]),
    ("LeakyRelu", {}, [-1.0], [-0.01]),
    # GELU(1) = Phi(1) = 0.8413447...; its tanh approximation gives 0.8411920...
    ("Gelu", {"approximate": "none"}, [1.0], [0.8413447460685429]),
    ("Gelu", {"approximate": "tanh"}, [1.0], [0.8411919906082768]),
])
def test_exact_curves_drawn_for_activations(op, attrs, x, expected):
    from picompile.plan import Step
    from picompile.report.facts import exact_curve

    curve = exact_curve(Step("s", op, ["x"], ["y"], attrs=attrs))
    assert curve is not None
    assert np.allclose(curve(np.asarray(x)), expected, rtol=0, atol=1e-12)
