"""The HTML report in a real headless Chromium at 1280 px: no element overflows the viewport, every
verdict is visible on the first screen, no NaN is shown; a screenshot is saved as an artifact
(artifacts/test/abtest_report_1280.png).

Chromium comes from Debian (`make test` installs it when missing); a missing browser fails loudly.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from abtest.analysis import analyze
from abtest.config import Guardrail
from abtest.events import MemorySink
from abtest.report import render_html
from abtest.simulator import Effect, MarketplaceSimulator, SimulationConfig
from tests.unit.test_abtest_simulator import CONFIG, features_dir  # noqa: F401  (fixture)

WIDTH, HEIGHT = 1280, 900
ARTIFACT = Path(__file__).resolve().parents[2] / "artifacts" / "test" / "abtest_report_1280.png"

MEASURE = """<script>
window.addEventListener('load', () => {
  const limit = document.documentElement.clientWidth;
  const over = [];
  for (const el of document.querySelectorAll('body *')) {
    const r = el.getBoundingClientRect();
    if (r.width > 0 && r.right > limit + 0.5) over.push(el.tagName + '.' + el.className + ' right=' + Math.round(r.right));
  }
  const verdicts = [...document.querySelectorAll('.verdicts li')].map(li => Math.round(li.getBoundingClientRect().bottom));
  const pre = document.createElement('pre');
  pre.id = 'measure';
  pre.textContent = JSON.stringify({limit, scrollWidth: document.documentElement.scrollWidth, over, verdicts,
                                    text: document.body.innerText});
  document.body.appendChild(pre);
});
</script>"""


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    assert exe, "Chromium is not installed: `apt-get install -y chromium` (make test does it)"
    return exe


def run_chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--hide-scrollbars", f"--user-data-dir={tmp / 'profile'}",
         f"--window-size={WIDTH},{HEIGHT}", *args],
        capture_output=True, text=True, timeout=120,
    )


@pytest.fixture(scope="module")
def page(features_dir, tmp_path_factory):  # noqa: F811
    """A readout with two variants' worth of rows, guardrails, a timeline and degenerate notes."""
    cfg = CONFIG.model_copy(deep=True)
    e = cfg.layers[0].experiments[0]
    e.guardrails = [Guardrail(metric="conversion", margin=0.02)]
    sim = MarketplaceSimulator(SimulationConfig(experiment="exp", n_units=8000, days=7, pre_days=3, seed=3,
                                                effects={"treatment": Effect(ctr=0.06, purchase=0.04)}, features_dir=features_dir), cfg)
    sink = MemorySink()
    meta = sim.simulate_direct(sink)
    r = analyze(cfg, "exp", sink.exposures(), sink.outcomes(), simulation=meta)
    tmp = tmp_path_factory.mktemp("browser")
    html_path = tmp / "report.html"
    html_path.write_text(render_html(r).replace("</body>", MEASURE + "</body>"))
    return r, tmp, html_path


def test_report_fits_1280_px_shows_every_verdict_and_no_nan(page):
    r, tmp, html_path = page
    done = run_chromium(tmp, "--virtual-time-budget=3000", "--dump-dom", html_path.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    m = re.search(r"<pre id=\"measure\">(.*?)</pre>", done.stdout, re.S)
    assert m, done.stdout[-2000:]
    import html as _html

    got = json.loads(_html.unescape(m.group(1)))
    assert got["limit"] == WIDTH and got["scrollWidth"] <= WIDTH, got["scrollWidth"]
    assert got["over"] == [], got["over"][:10]
    assert len(got["verdicts"]) == len(r.verdicts) >= 1 and max(got["verdicts"]) < HEIGHT  # on the first screen
    assert not re.search(r"\bnan\b", got["text"], re.I) and "undefined" not in got["text"]
    for v in r.verdicts:
        assert v.headline.split(":")[0] in got["text"]


def test_screenshot_artifact(page):
    _, tmp, html_path = page
    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    ARTIFACT.unlink(missing_ok=True)
    done = run_chromium(tmp, f"--screenshot={ARTIFACT}", html_path.as_uri())
    assert done.returncode == 0 and ARTIFACT.exists(), done.stderr[-2000:]
    assert ARTIFACT.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and ARTIFACT.stat().st_size > 10_000
