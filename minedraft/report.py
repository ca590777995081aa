"""Tables and comparison lines shared by the CLIs (Rich)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from rich.console import Console
from rich.table import Table

from minedraft.policies import PolicyConfig


def in_flight(policy: str, cfg: PolicyConfig) -> int:
    """Requests a policy keeps in flight at most."""
    return 2 * cfg.max_num_seqs if policy == "psd" and cfg.psd_capacity == "double" else cfg.max_num_seqs


def basis_line(results: list[dict], cfg: PolicyConfig) -> str:
    """Name the comparison basis: same max_num_seqs always; say whether concurrency and GPUs match."""
    names = [r["policy"] for r in results]
    flight = {n: in_flight(n, cfg) for n in names}
    gpus = {r["policy"]: r["num_gpus"] for r in results}
    parts = [f"same max_num_seqs={cfg.max_num_seqs}"]
    if len(set(flight.values())) == 1:
        parts.append(f"same concurrency ({next(iter(flight.values()))} in flight)")
    else:
        parts.append("concurrency differs (" + ", ".join(f"{n} {v}" for n, v in flight.items())
                     + f" in flight; psd_capacity={cfg.psd_capacity})")
    if len(set(gpus.values())) == 1:
        parts.append(f"same GPUs ({next(iter(gpus.values()))})")
    else:
        parts.append("GPUs differ (" + ", ".join(f"{n} {v}" for n, v in gpus.items()) + "; tok/s/GPU normalises)")
    return "Basis: " + "; ".join(parts)


def _f(v: object, fmt: str) -> str:
    return "–" if v is None else format(v, fmt)


def results_table(results: list[dict], title: str | None = None) -> Table:
    """One row per policy; speedup is output throughput over the first row's."""
    t = Table(title=title, title_justify="left")
    cols = ["policy", "out tok/s", "tok/s/GPU", "req/s", "E2E s", "E2E p99 s", "TTFT ms", "TPOT ms",
            "acc len", "tgt busy", "speedup"]
    for c in cols:
        t.add_column(c, justify="left" if c == "policy" else "right")
    base = results[0]["output_throughput"] if results else 0
    for r in results:
        e2e, e2e99 = r["mean_e2el_ms"], r["p99_e2el_ms"]
        t.add_row(
            r["policy"], _f(r["output_throughput"], ",.0f"), _f(r["output_throughput_per_gpu"], ",.0f"),
            _f(r["request_throughput"], ".2f"), _f(e2e / 1e3 if e2e is not None else None, ".2f"),
            _f(e2e99 / 1e3 if e2e99 is not None else None, ".2f"), _f(r["mean_ttft_ms"], ",.0f"),
            _f(r["mean_tpot_ms"], ".2f"), _f(r["mean_acceptance_length"], ".2f"),
            _f(100 * r["target_busy_fraction"], ".0f") + "%",
            _f(r["output_throughput"] / base if base else None, ".2f") + "x",
        )
    return t


def console() -> Console:
    """A console that neither squeezes tables nor breaks lines when output goes to a file or pipe (people grep it)."""
    c = Console()
    return c if c.is_terminal else Console(width=max(c.width, 130), soft_wrap=True)


def save_figure(fig, stem, width: int, height: int, scale: float = 1.25) -> str:
    """Write ``stem``.html (always) and ``stem``.png when a static exporter exists; returns what was written.

    The HTML works offline: it loads ``plotly.min.js`` written once beside it (plotly's ``directory`` mode), not
    a CDN.

    PNG export: plotly's own (kaleido >= 1, which needs a Chrome), else kaleido 0.2.1's bundled Chromium
    (``pip install kaleido==0.2.1``, the ``figures`` extra).
    """
    import json
    import os
    from pathlib import Path

    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    fig.write_html(stem.with_suffix(".html"), include_plotlyjs="directory")
    png = stem.with_suffix(".png")
    try:
        fig.write_image(png, width=width, height=height, scale=scale)
        return "png"
    except Exception:  # noqa: BLE001 - plotly >= 6 wants kaleido >= 1; fall back to kaleido 0.2.1
        pass
    try:
        import plotly
        from kaleido.scopes.plotly import PlotlyScope

        js = os.path.join(os.path.dirname(plotly.__file__), "package_data", "plotly.min.js")
        scope = PlotlyScope(plotlyjs=js)
        png.write_bytes(scope.transform(json.loads(fig.to_json()), format="png", width=width, height=height,
                                        scale=scale))
        return "png"
    except Exception:  # noqa: BLE001 - no exporter: HTML only
        return "html"


class ProgressBars:
    """Rich progress bars on stderr, for terminals only, each shown once its task has run ``delay`` seconds.

    ``task(description, total)`` returns ``advance(n)``; the bar of a task disappears when it completes.
    """

    def __init__(self, enabled: bool = True, delay: float = 2.0) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self.delay = delay
        self.bar = None

    def task(self, description: str, total: int) -> Callable[[int], None]:
        t0, state = time.monotonic(), {"done": 0, "id": None}

        def advance(n: int) -> None:
            state["done"] += n
            if not self.enabled:
                return
            if self.bar is None and time.monotonic() - t0 >= self.delay:
                from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

                self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                    TimeRemainingColumn(), console=Console(stderr=True), transient=True)
                self.bar.start()
            if self.bar is not None:
                if state["id"] is None:
                    state["id"] = self.bar.add_task(description, total=total)
                self.bar.update(state["id"], completed=state["done"])
                if state["done"] >= total:
                    self.bar.remove_task(state["id"])

        return advance

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
