"""Report rendering: HTML with banners, table, well-formed inline SVG; JSON; torch-free modules."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from datetime import datetime

import numpy as np

from abtest.analysis import Comparison, Readout, TimelinePoint
from abtest.report import forest_svg, render_html, timeline_svg, write_report


def comp(metric="ctr", decision="significant improvement", lift=0.05, truth=0.04):
    return Comparison(
        metric=metric, label=metric, kind="ratio", variant="treatment", control="control", n_treatment=5000, n_control=5000,
        control_value=0.05, treatment_value=0.0525, control_unadjusted=0.05, treatment_unadjusted=0.0525, abs_lift=0.0025,
        abs_ci=(0.001, 0.004), abs_p_value=0.001, rel_lift=lift, rel_se=0.01, rel_ci=(lift - 0.02, lift + 0.02), p_value=0.001, df=9998.0,
        cuped=True, theta=0.5, variance_reduction=0.3, seq_p_value=0.02, seq_ci=(lift - 0.045, lift + 0.045), chance_to_beat_control=0.99,
        expected_loss_treatment=0.0001, expected_loss_control=0.05, posterior_mean=lift, credible_interval=(lift - 0.02, lift + 0.02),
        p_adjusted=0.002, decision=decision, sequential_decision=decision, true_rel_lift=truth,
    )


def readout(valid=True):
    tl = [TimelinePoint(d, "ctr", "treatment", 1000 * (d + 1), 0.05 + 0.1 / (d + 1), (0.0, 0.1 + 0.2 / (d + 1)), (-0.5 / (d + 1), 0.6), 1.0 / (d + 1))
          for d in range(14)]
    return Readout(
        experiment="exp", layer="ranking", control="control", variants=["control", "treatment"], window=(str(datetime(2026, 1, 5)), None),
        generated_at="now", alpha=0.05, correction="holm", units={"control": 5000, "treatment": 5400},
        srm={"counts": [5000, 5400], "expected": [5200.0, 5200.0], "chi2": 15.4, "p_value": 8.7e-5 if not valid else 0.4, "threshold": 0.001, "passed": valid},
        valid=valid, comparisons=[comp(), comp("gmv_per_user", "inconclusive", float("nan"), None)], timeline=tl, primary_metric="ctr",
        simulation={"simulated": True, "label": "SIMULATED DATA: test"},
    )


def test_html_has_banners_table_and_valid_svg(tmp_path):
    html = render_html(readout(valid=False))
    assert "SAMPLE RATIO MISMATCH" in html and "INVALID" in html and "SIMULATED DATA" in html
    assert "<table>" in html and "ctr" in html and "gmv_per_user" in html
    ok = render_html(readout(valid=True))
    assert "SAMPLE RATIO MISMATCH" not in ok and "Sample ratio check passed" in ok
    svgs = [s.split("</svg>")[0] + "</svg>" for s in ok.split("<svg")[1:]]
    assert len(svgs) == 2  # forest + one timeline
    for s in svgs:
        ET.fromstring("<svg" + s)
    h, j = write_report(readout(), tmp_path / "out")
    assert h.exists() and json.loads(j.read_text())["experiment"] == "exp"
    assert json.loads(j.read_text())["comparisons"][1]["rel_lift"] is None  # NaN -> null


def test_svg_helpers_handle_degenerate_input():
    assert "no comparisons" in forest_svg([])
    assert timeline_svg([], "x") == ""
    ET.fromstring(forest_svg([comp(lift=0.0, truth=None)]))
    ET.fromstring(timeline_svg([TimelinePoint(0, "ctr", "t", 10, 0.0, (0.0, 0.0), (-np.inf, np.inf), 1.0)], "one"))


def test_abtest_modules_do_not_import_torch():
    mods = ["abtest.cli", "abtest.config", "abtest.assignment", "abtest.routing", "abtest.stats", "abtest.aggregate", "abtest.analysis",
            "abtest.simulator", "abtest.driver", "abtest.interleaving", "abtest.report", "abtest.events", "abtest.stream"]
    code = "import sys\n" + "".join(f"import {m}\n" for m in mods) + (
        "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith(('torch.', 'torchrec', 'training', 'fastapi')))\nprint(','.join(bad))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
