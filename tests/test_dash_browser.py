"""minedraft-dash in headless Chromium, as a person uses it: load, change controls, see the figures move,
type nonsense, read the message, no console errors; a screenshot.

Marker ``browser``: needs the ``dash`` extra, Playwright (``pip install playwright``; no browser download) and
Debian's Chromium (``apt-get install -y chromium``). Screenshots go to the pytest tmp folder, or to the folder
named by ``--save-screenshots DIR`` (when conftest registers it) or ``MINEDRAFT_SCREENSHOTS=DIR``.
"""

import os
from pathlib import Path

import pytest

pytest.importorskip("dash")
from minedraft.planner import browser as br  # noqa: E402

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(br.available() is not None, reason=br.available() or "")]


def shots(request, tmp_path) -> Path:
    where = request.config.getoption("--save-screenshots", default=None) or os.environ.get("MINEDRAFT_SCREENSHOTS")
    d = Path(where) if where and where is not True else tmp_path
    d.mkdir(parents=True, exist_ok=True)
    return d


def text(page, sel):
    return page.inner_text(sel).strip()


def wait_command(page, fragment, present=True):
    js = ("f => (document.querySelector('#command')?.innerText || '').includes(f)" if present else
          "f => !(document.querySelector('#command')?.innerText || '').includes(f)")
    page.wait_for_function(js, arg=fragment, timeout=60000)


def test_dashboard_in_a_browser(request, tmp_path):
    out = shots(request, tmp_path)
    with br.dash_server() as url, br.browser() as b:
        pg = br.Page(b, 1400, 1100)
        page = pg.page
        page.goto(url)
        page.wait_for_function("() => document.querySelector('#gantt-graph .js-plotly-plot')?.data?.length > 0",
                               timeout=60000)
        wait_command(page, "--max-num-seqs 16")
        assert text(page, "#error") == ""
        before = br.graph_data(page, "throughput-graph")
        assert before[0]["x"] == ["ar", "sd", "psd", "pearl"]
        assert all(y > 0 for y in before[0]["y"])
        assert "roofline" in text(page, "#header")
        page.screenshot(path=str(out / "dash.png"), full_page=True)

        # a bigger batch: the command and the bars follow
        page.fill("#max-num-seqs", "32")
        page.press("#max-num-seqs", "Enter")
        wait_command(page, "--max-num-seqs 32")
        after = br.graph_data(page, "throughput-graph")
        assert all(a > b0 for a, b0 in zip(after[0]["y"], before[0]["y"]))
        rows = page.locator("#results-table tbody tr")
        assert rows.count() == 4

        # untick AR: three policies left, everywhere
        page.get_by_label("AR", exact=True).uncheck()
        wait_command(page, "--policy sd,psd,pearl")
        assert br.graph_data(page, "throughput-graph")[0]["x"] == ["sd", "psd", "pearl"]
        assert rows.count() == 3

        # constant step times: the page says so
        page.get_by_label("constant (ms)").check()
        wait_command(page, "--verify-ms 10")
        assert text(page, "#header").startswith("constant step times")
        good = br.graph_data(page, "throughput-graph")

        # nonsense: a rising acceptance curve -> one line in the page, the figures stay, nothing crashes
        page.fill("#accept-curve", "0.5,0.9")
        page.press("#accept-curve", "Enter")
        page.wait_for_function("() => document.querySelector('#error').innerText.includes('error: --accept-curve')",
                               timeout=60000)
        assert "non-increasing" in text(page, "#error")
        assert br.graph_data(page, "throughput-graph") == good
        page.fill("#verify-ms", "-2")
        page.press("#verify-ms", "Enter")
        page.wait_for_function("() => document.querySelector('#error').innerText.includes('--')", timeout=60000)

        # and back to sense: the message goes away
        page.fill("#accept-curve", "0.8")
        page.press("#accept-curve", "Enter")
        page.fill("#verify-ms", "12")
        page.press("#verify-ms", "Enter")
        wait_command(page, "--verify-ms 12")
        page.wait_for_function("() => document.querySelector('#error').innerText.trim() === ''", timeout=60000)
        assert "--accept-curve 0.8" in text(page, "#command")
        page.screenshot(path=str(tmp_path / "dash_after.png"), full_page=True)
        assert pg.errors == []
