"""Headless Chromium for tests and screenshots (Playwright driving Debian's ``/usr/bin/chromium``).

Never downloads a browser: it launches the system's Chromium (``apt-get install chromium``), or the one
``MINEDRAFT_CHROMIUM`` names. ``python -m minedraft.planner.browser --report plan.html --dash --out DIR``
writes the screenshots the docs show (``plan_report.png``, ``dash.png``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]


def chromium_path() -> str | None:
    """The system Chromium, if there is one."""
    env = os.environ.get("MINEDRAFT_CHROMIUM")
    if env:
        return env if Path(env).exists() else None
    for name in ("/usr/bin/chromium", "/usr/bin/chromium-browser"):
        if Path(name).exists():
            return name
    return shutil.which("chromium")


def available() -> str | None:
    """None when Playwright and a system Chromium are both present; else what is missing."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install playwright)"
    if chromium_path() is None:
        return "no system Chromium (apt-get install -y chromium)"
    return None


@contextmanager
def browser():
    """A headless Chromium (Playwright ``Browser``)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path(), headless=True, args=ARGS)
        try:
            yield b
        finally:
            b.close()


class Page:
    """A page that records console errors, page errors and failed requests."""

    def __init__(self, b, width: int = 1400, height: int = 1000, offline: bool = False) -> None:
        self.page = b.new_page(viewport={"width": width, "height": height})
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", lambda m: self.errors.append(f"console {m.type}: {m.text}")
                     if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        self.page.on("requestfailed", lambda r: self.errors.append(f"request failed: {r.url}"))
        if offline:  # a file:// page must not reach the network: block and record anything else
            def route(r):
                if r.request.url.startswith(("file:", "data:", "blob:")):
                    r.continue_()
                else:
                    self.requests.append(r.request.url)
                    r.abort()

            self.page.route("**/*", route)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def dash_server(port: int | None = None, timeout: float = 60.0):
    """``minedraft-dash`` in a subprocess on 127.0.0.1; yields its URL, stops it (and only it) after."""
    port = port or free_port()
    proc = subprocess.Popen([sys.executable, "-m", "minedraft.cli.dash", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        t0 = time.monotonic()
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"minedraft-dash exited: {proc.stdout.read()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() - t0 > timeout:
                raise RuntimeError("minedraft-dash did not answer in time")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def graph_data(page, graph_id: str) -> list[dict]:
    """The traces a dcc.Graph currently draws (what a person sees), as plain data."""
    return page.evaluate(f"""() => {{
        const el = document.querySelector('#{graph_id} .js-plotly-plot');
        if (!el || !el.data) return null;
        return el.data.map(t => ({{name: t.name, x: Array.from(t.x || []), y: Array.from(t.y || [])}}));
    }}""")


def screenshot_report(b, report: Path, out: Path) -> list[str]:
    pg = Page(b, 1300, 900, offline=True)
    pg.page.goto(report.resolve().as_uri())
    pg.page.wait_for_selector("#fig-pareto .main-svg", timeout=30000)
    pg.page.screenshot(path=str(out), full_page=False)
    return pg.errors + [f"blocked request: {u}" for u in pg.requests]


def screenshot_dash(b, url: str, out: Path) -> list[str]:
    pg = Page(b, 1400, 1100)
    pg.page.goto(url)
    pg.page.wait_for_selector("#gantt-graph .main-svg", timeout=60000)
    pg.page.wait_for_function("() => document.querySelector('#gantt-graph .js-plotly-plot')?.data?.length > 0",
                              timeout=60000)
    pg.page.wait_for_timeout(500)
    pg.page.screenshot(path=str(out), full_page=True)
    return pg.errors


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m minedraft.planner.browser", description=__doc__.split("\n\n")[0])
    ap.add_argument("--report", help="a plan.html to screenshot (as plan_report.png)")
    ap.add_argument("--dash", action="store_true", help="start minedraft-dash and screenshot it (as dash.png)")
    ap.add_argument("--out", default="docs/figures", help="folder for the PNGs")
    a = ap.parse_args(argv)
    missing = available()
    if missing:
        print(f"error: {missing}", file=sys.stderr)
        return 2
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    errors = []
    with browser() as b:
        if a.report:
            errors += screenshot_report(b, Path(a.report), out / "plan_report.png")
            print(out / "plan_report.png")
        if a.dash:
            with dash_server() as url:
                errors += screenshot_dash(b, url, out / "dash.png")
            print(out / "dash.png")
    for e in errors:
        print(e, file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
