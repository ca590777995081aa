"""``minedraft-dash``: the interactive what-if dashboard (Plotly Dash), bound to 127.0.0.1 by default.

Knobs: policies, acceptance curve, k, model and GPU presets or constant draft/verify times, batch, rate.
Figures: simulated throughput and latency, the theory's throughput-latency curve, an SD vs PSD timeline,
the >= 37% regime map with this setup on it; "copy as command" gives the matching ``minedraft-sim`` line.
Needs the ``dash`` extra: ``pip install 'minedraft[dash]'``.
"""

from __future__ import annotations

import argparse
import sys

from minedraft.cli import common
from minedraft.errors import InputError, require


def build_parser() -> argparse.ArgumentParser:
    p = common.Parser(prog="minedraft-dash", description=__doc__.split("\n\n")[0],
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (127.0.0.1: this machine only; 0.0.0.0 exposes it to the network)")
    p.add_argument("--port", default="8050", help="TCP port")
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    port = common.as_int(a.port, "--port", 1, 65535)
    host = a.host.strip()
    require(host != "", "--host", "must be an address such as 127.0.0.1", a.host)
    try:
        import dash  # noqa: F401 - the extra must be there before the app is built

        from minedraft.planner.dash_app import make_app
    except ImportError as exc:
        raise InputError("minedraft-dash", "needs Dash installed: pip install 'minedraft[dash]'",
                         getattr(exc, "name", str(exc))) from None
    app = make_app()
    print(f"minedraft-dash: serving on http://{host}:{port}/ (Ctrl+C stops it)", file=sys.stderr, flush=True)
    app.run(host=host, port=port, debug=False)
    return 0


def cli() -> None:
    raise SystemExit(common.run_cli(main))


if __name__ == "__main__":
    cli()
