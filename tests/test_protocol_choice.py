"""``--protocol auto``: both plans compiled, their costs predicted on a network, the cheaper
kept; the reports show the comparison; bad ``--network`` values are one-line errors."""

from __future__ import annotations

import pytest

import picompile
from conftest import EXAMPLES, digits
from picompile.deployment import (
    DEFAULT_NETWORK,
    DeploymentCost,
    Network,
    choose_protocol,
    fhe_cost,
    hybrid_cost,
)
from picompile.errors import OptionError
from picompile.report import render_html, render_text

CNN = EXAMPLES / "cnn_digits.onnx"


@pytest.fixture(scope="module")
def calib():
    data = digits.load_split()
    return {"input": digits.to_model_input(data["calib_images"], "img8"),
            "labels": data["calib_labels"]}


def test_network_parsing():
    assert Network.parse("100Mbit,20ms") == Network(1e8, 0.02)
    assert Network.parse("1Gbit/s, 0.5ms") == Network(1e9, 0.0005)
    assert Network.parse("10kbit,1s").describe() == "10 kbit/s, 1000 ms RTT"
    for bad in ("fast", "100Mbit", "0Mbit,1ms", "100MB,20ms", ""):
        with pytest.raises(OptionError, match="--network"):
            Network.parse(bad)
    with pytest.raises(OptionError, match="--protocol auto"):
        picompile.compile(CNN, network="1Gbit,1ms", protocol="fhe")


def test_choice_follows_the_network():
    """Compute-bound against round-trip-bound: the latency model picks each on its link."""
    fhe = DeploymentCost("fhe", 0.6, 2e6, 1, 0.0, 0.0, 0, 3e8, None, False)
    hybrid = DeploymentCost("hybrid", 0.01, 1e5, 20, 2.0, 1.2e7, 3, 4e8, 2.0, True)
    lan = choose_protocol({"fhe": fhe, "hybrid": hybrid}, Network.parse("10Gbit,0.1ms"))
    wan = choose_protocol({"fhe": fhe, "hybrid": hybrid}, Network.parse("1Gbit,100ms"))
    assert lan.chosen == "hybrid" and wan.chosen == "fhe"
    assert "round trips" in wan.reason or "compute" in wan.reason
    only = choose_protocol({"fhe": "MaxPool has no FHE lowering", "hybrid": hybrid},
                           Network.parse(DEFAULT_NETWORK))
    assert only.chosen == "hybrid" and "only protocol" in only.reason
    with pytest.raises(OptionError, match="no protocol can run"):
        choose_protocol({"fhe": "no", "hybrid": "no"}, Network.parse(DEFAULT_NETWORK))


def test_auto_on_the_cnn_picks_by_network_and_reports_why(calib):
    lan = picompile.compile(CNN, calib=calib, protocol="auto", network="10Gbit,0.1ms")
    wan = picompile.compile(CNN, calib=calib, protocol="auto", network="1Gbit,100ms")
    assert {lan.protocol, wan.protocol} == {"fhe", "hybrid"}
    choice = wan.analysis["protocol_choice"]
    assert choice["chosen"] == wan.protocol and len(choice["rows"]) == 2
    rows = {row["protocol"]: row for row in choice["rows"]}
    # the predicted costs come from each plan (hybrid bytes/rounds from the BFV pass)
    assert rows["hybrid"]["online_round_trips"] > rows["fhe"]["online_round_trips"] == 1
    assert rows["fhe"]["online_compute_seconds"] > 0 and rows["hybrid"]["offline_bytes"] > 0
    text = render_text(wan, width=220)
    assert "protocol choice (--protocol auto)" in text and "✔ chosen" in text
    assert "1 Gbit/s, 100 ms RTT" in text
    html = render_html(lan)
    assert "Protocol choice (--protocol auto)" in html
    default = picompile.compile(CNN, calib=calib, protocol="auto")
    assert default.analysis["protocol_choice"]["assumed_default_network"]
    assert "the default; set it with --network" in render_text(default, width=260)


def test_deployment_costs_of_each_plan(calib):
    fhe = picompile.compile(CNN, calib=calib, method="quad", degree=2)
    hybrid = picompile.compile(CNN, calib=calib, protocol="hybrid", method="quad", degree=2,
                               quadratic_protocol="flash")
    f, h = fhe_cost(fhe), hybrid_cost(hybrid)
    ring = fhe.ckks.ring_dimension
    assert f.online_bytes >= 2 * 2 * ring * 8      # one ciphertext each way, ≥ 1 tower
    assert f.offline_bytes == 0 and not f.dealer
    assert not h.dealer and h.online_bytes == hybrid.bfv.predicted["online_bytes"]
    assert h.online_compute_seconds > 0 and h.offline_compute_seconds > 0
    with pytest.raises(OptionError):
        hybrid_cost(fhe)


def test_cli_compile_protocol_auto(tmp_path, calib):
    import numpy as np

    from picompile.cli import main

    np.savez(tmp_path / "calib.npz", **calib)
    out = tmp_path / "cnn.piplan"
    assert main(["compile", str(CNN), "--calib", str(tmp_path / "calib.npz"), "--protocol",
                 "auto", "--network", "10Gbit,0.1ms", "-o", str(out)]) == 0
    plan = picompile.load_plan(out)
    assert plan.analysis["protocol_choice"]["chosen"] == plan.protocol
    assert (tmp_path / "cnn.client.piplan").exists()
    assert main(["compile", str(CNN), "--calib", str(tmp_path / "calib.npz"), "--protocol",
                 "auto", "--network", "fast"]) != 0


def test_auto_keeps_the_protocol_that_can_run(calib):
    """MaxPool has no FHE lowering: the FHE row says why, the hybrid plan is kept."""
    plan = picompile.compile(EXAMPLES / "maxpool_digits.onnx", calib=calib, protocol="auto",
                             network="1Gbit,100ms")
    choice = plan.analysis["protocol_choice"]
    assert plan.protocol == "hybrid" and "only protocol" in choice["reason"]
    fhe = next(row for row in choice["rows"] if row["protocol"] == "fhe")
    assert not fhe["available"] and "MaxPool" in fhe["reason"]
    assert "not compiled" in render_text(plan, width=260)
