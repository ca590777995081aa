"""minedraft-plan's HTML report in headless Chromium with the network cut off: it must render every figure
from the file alone, with no console errors; a screenshot.

Marker ``browser``: needs Playwright (``pip install playwright``; no browser download) and Debian's Chromium
(``apt-get install -y chromium``). Screenshots go to the pytest tmp folder, or to ``--save-screenshots DIR``
(when conftest registers it) or ``MINEDRAFT_SCREENSHOTS=DIR``.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from minedraft.planner import browser as br

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(br.available() is not None, reason=br.available() or "")]

ARGS = ["--gpu", "h100,h200", "--target", "qwen3-32b", "--draft", "qwen3-0.6b", "-tp", "1,4", "-k", "3,5",
        "--max-num-seqs", "16,32", "--psd-capacity", "double", "--sd-drafter", "shared", "--survivors", "1",
        "--accept-sweep", "0.6,0.8", "--num-prompts", "100", "--output-len", "128", "--request-rate", "8",
        "--slo-tpot-ms", "40", "--gpu-hour-cost", "h100=2.5,h200=3.5", "--workers", "2", "--quiet"]


def shots(request, tmp_path) -> Path:
    where = request.config.getoption("--save-screenshots", default=None) or os.environ.get("MINEDRAFT_SCREENSHOTS")
    d = Path(where) if where and where is not True else tmp_path
    d.mkdir(parents=True, exist_ok=True)
    return d


def test_plan_report_opens_offline(request, tmp_path):
    out = tmp_path / "plan"
    p = subprocess.run([sys.executable, "-m", "minedraft.cli.plan", *ARGS, "--out", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    plan = json.loads((out / "plan.json").read_text())
    with br.browser() as b:
        pg = br.Page(b, 1300, 900, offline=True)
        page = pg.page
        page.goto((out / "plan.html").resolve().as_uri())
        page.wait_for_selector("#fig-acceptance .main-svg", timeout=60000)
        n = page.evaluate("() => document.querySelectorAll('.js-plotly-plot').length")
        assert n == 5
        drawn = page.evaluate("() => Array.from(document.querySelectorAll('.js-plotly-plot'))"
                              ".map(e => [e.id, e.data.length, e.querySelectorAll('.main-svg').length])")
        assert all(traces > 0 and svgs > 0 for _, traces, svgs in drawn), drawn
        head = page.inner_text("#headline")
        rec = plan["recommendation"]
        assert rec and head.startswith(f"Recommended: {rec.upper()}")
        assert plan["best"][rec]["config"] in head
        # the best-configuration table lists every policy; prices were given, so costs are in $
        table = page.inner_text("#best-table")
        assert "$ / M output tokens" in table
        for pol in ("ar", "sd", "psd", "pearl"):
            assert pol in table
        # two GPU types were weighed: the per-GPU table is there
        assert "Best per GPU type and target" in page.content()
        # the Pareto figure's points are the plan's points
        xs = page.evaluate("() => document.querySelector('#fig-pareto').data.filter(t => t.mode === 'markers')"
                           ".reduce((n, t) => n + t.x.length, 0)")
        assert xs == len(plan["pareto"]["points"])
        page.screenshot(path=str(shots(request, tmp_path) / "plan_report.png"), full_page=False)
        assert pg.errors == [] and pg.requests == []  # nothing failed, nothing left the file
