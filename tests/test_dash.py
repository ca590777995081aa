"""minedraft-dash without a browser: the update function, its command line, bad input, the timeline, the map."""

import json

import numpy as np
import pytest

from minedraft.cli.common import run_cli
from minedraft.cli.sim import main as sim_main
from minedraft.planner import dash_app as d
from minedraft.planner.sweep import sim_inputs
from minedraft.theory.reduction import published_reduction
from minedraft.theory.serving import Setup
from minedraft.theory.summary import claim_37


def state(**changes):
    return {**d.DEFAULTS, **changes}


@pytest.fixture(scope="module")
def view():
    return d.compute(state())


def test_copy_as_command_reproduces_the_page(view, capsys):
    assert view.command.startswith("minedraft-sim --policy ar,sd,psd,pearl ")
    try:
        code = run_cli(sim_main, view.command.split()[1:] + ["--json", "-"])
    except SystemExit as e:
        code = e.code
    assert code == 0
    results = json.loads(capsys.readouterr().out)["results"]
    assert [r["policy"] for r in results] == [r["policy"] for r in view.rows]
    for r, row in zip(results, view.rows):
        assert r["output_throughput"] == row["out tok/s"]
        assert r["p99_tpot_ms"] == row["p99 TPOT ms"]
    # and the figure shows those numbers
    bars = view.figures["throughput"].data[0]
    assert list(bars.y) == [row["out tok/s"] for row in view.rows]


def test_a_control_changes_the_run():
    a = d.compute(state(max_num_seqs="32"))
    b = d.compute(state(max_num_seqs="8"))
    assert "--max-num-seqs 32" in a.command and "--max-num-seqs 8" in b.command
    ta = {r["policy"]: r["out tok/s"] for r in a.rows}
    tb = {r["policy"]: r["out tok/s"] for r in b.rows}
    assert all(ta[p] > tb[p] for p in ta)  # a larger batch serves more tokens/s offline


def test_constant_mode_and_policy_subset():
    v = d.compute(state(timing="constant", draft_ms="2", verify_ms="10", policies=["sd", "psd"], input_len="32",
                        output_len="64", num_prompts="64"))
    assert "--draft-ms 2 --verify-ms 10" in v.command and "--target" not in v.command
    assert [r["policy"] for r in v.rows] == ["sd", "psd"]
    assert v.header.startswith("constant step times")


BAD = [
    ({"accept": "0.9,0.95"}, "error: --accept-curve:"),
    ({"accept": "abc"}, "error: --accept-curve:"),
    ({"accept": "0.9,0.8", "k": 5}, "error: --accept-curve:"),
    ({"rate": "-3"}, "error: --request-rate:"),
    ({"rate": "fast"}, "error: --request-rate:"),
    ({"max_num_seqs": "0"}, "error: --max-num-seqs:"),
    ({"max_num_seqs": "--x"}, "error: --max-num-seqs:"),
    ({"max_num_seqs": "100000"}, "error: --max-num-seqs:"),
    ({"num_prompts": "1e9"}, "error: --num-prompts:"),
    ({"tp": "3"}, "error: --tensor-parallel-size:"),
    ({"gpu": None}, "error: --gpu:"),
    ({"policies": []}, "error: --policy:"),
    ({"timing": "constant", "verify_ms": "-1"}, "error: --verify-ms:"),
    ({"output_len": "uniform:9:1"}, "error: --output-len:"),
    ({"input_len": "lots"}, "error: --input-len:"),
]


@pytest.mark.parametrize("change,message", BAD, ids=[str(c) for c, _ in BAD])
def test_nonsense_gives_a_message_never_a_crash(change, message):
    out = d.update(*[state(**change)[k] for k in d.STATE_KEYS])
    assert out[-1].startswith(message), out[-1]
    assert len(out) == len(d.GRAPHS) + 5


def test_update_returns_figures_and_clears_the_error():
    out = d.update(*[state()[k] for k in d.STATE_KEYS])
    assert out[-1] == ""
    assert out[-2].startswith("minedraft-sim ")
    assert all(len(fig.data) > 0 for fig in out[: len(d.GRAPHS)])


def test_timeline_shows_psd_overlapping_what_sd_serialises(view):
    fig = view.figures["gantt"]

    def spans(row, kind):
        out = []
        for t in fig.data:
            if t.name != kind:
                continue
            for y, b, x in zip(t.y, t.base, t.x):
                if y == row:
                    out.append((b, b + x))
        return out

    def overlap(a, b):
        return sum(max(0.0, min(a1, b1) - max(a0, b0)) for a0, a1 in a for b0, b1 in b)

    sd_draft, sd_verify = spans("SD · target GPU", "draft"), spans("SD · target GPU", "verify")
    psd_draft, psd_verify = spans("PSD · drafter GPU", "draft"), spans("PSD · target GPU", "verify")
    assert sd_draft and sd_verify and psd_draft and psd_verify
    assert overlap(sd_draft, sd_verify) == pytest.approx(0.0, abs=1e-9)  # one GPU: one op at a time
    assert overlap(psd_draft, psd_verify) > 0.5 * sum(b - a for a, b in psd_draft)  # drafting hides under verify


def test_regime_map_point_is_the_theory_reading(view):
    fig = view.figures["regime"]
    heat = fig.data[0]
    point = [t for t in fig.data if t.name == "this setup"][0]
    a, cfg, curve, wl, costs, tp, _ = sim_inputs(d.sim_args(state(), ["sd", "psd"]))
    req = wl.generate()
    setup = Setup(curve, costs, cfg.max_num_seqs, cfg.psd_capacity, cfg.sd_drafter, tp,
                  context_len=float(np.mean(req.prompt_len) + np.mean(req.output_len) / 2))
    rho = claim_37(setup, 5, 10)["reading_a"]["rho"]
    assert point.x[0] == pytest.approx(rho) and point.y[0] == pytest.approx(0.7)
    # reading A depends on rho only: every row of the heat map is min(rho, 1) / (1 + rho)
    z = np.asarray(heat.z) / 100
    assert np.allclose(z[0], published_reduction(np.asarray(heat.x)))
    assert np.allclose(z, z[0][None, :])


def test_other_readings_draw_other_maps():
    a = d.compute(state(reading="same_k")).figures["regime"].data[0].z
    b = d.compute(state(reading="both_tuned")).figures["regime"].data[0].z
    assert not np.allclose(np.asarray(a), np.asarray(b))


def test_app_layout_has_every_control_and_graph():
    pytest.importorskip("dash")
    app = d.make_app()
    ids = set()

    def walk(node):
        if hasattr(node, "id") and node.id:
            ids.add(node.id)
        children = getattr(node, "children", None)
        for c in children if isinstance(children, (list, tuple)) else [children]:
            if c is not None and not isinstance(c, (str, int, float)):
                walk(c)

    walk(app.layout)
    assert set(d.INPUT_IDS) <= ids
    assert {f"{g}-graph" for g in d.GRAPHS} | {"error", "command", "copy", "results-table"} <= ids


def test_dash_cli_bad_port(capsys):
    from minedraft.cli.dash import main

    try:
        code = run_cli(main, ["--port", "99999"])
    except SystemExit as e:
        code = e.code
    assert code == 2 and capsys.readouterr().err.startswith("error: --port:")


def test_psd_as_the_plugin_runs_it_and_on_a_shared_gpu():
    """'PSD as': the design, or charged the plugin's measured costs (--plugin-costs h200); 'PSD drafter': own GPU
    or sharing the target's (one GPU fewer, ops stretched). Both reach the command line and move PSD's numbers."""
    base_view = d.compute(state(policies=["sd", "psd"]))
    base = {r["policy"]: r for r in base_view.rows}
    plug = d.compute(state(policies=["sd", "psd"], plugin_costs="h200"))
    shared = d.compute(state(policies=["sd", "psd"], psd_drafter="shared"))
    assert "--plugin-costs h200" in plug.command and "--psd-drafter" not in plug.command
    assert "--psd-drafter shared" in shared.command
    p = {r["policy"]: r for r in plug.rows}
    s = {r["policy"]: r for r in shared.rows}
    assert p["sd"]["out tok/s"] == base["sd"]["out tok/s"]  # SD is vLLM's own: no plugin costs
    assert p["psd"]["out tok/s"] < base["psd"]["out tok/s"]
    assert (s["psd"]["GPUs"], base["psd"]["GPUs"]) == (base["sd"]["GPUs"], base["sd"]["GPUs"] + 1)
    assert s["psd"]["out tok/s"] < base["psd"]["out tok/s"]
    # the sharing terms the simulator charged are named, with where they were measured
    assert "sharing the target's GPU" in shared.header and "measured on H200" in shared.header
    assert "sharing the target's GPU" not in base_view.header


def _sim(command, capsys):
    capsys.readouterr()
    try:
        code = run_cli(sim_main, command.split()[1:] + ["--json", "-", "--quiet"])
    except SystemExit as e:
        code = e.code
    assert code == 0
    return json.loads(capsys.readouterr().out)


def test_psd_schedule_control_auto_vs_always(capsys):
    """'PSD schedule': auto (the default) or always reach the command line and PSD's run; the page shows minedraft-sim's
    line on when and why PSD splits and the share of decode steps it ran as two halves. With capacity split one batch
    holds every request, so auto never splits here, while always splits nearly every step."""
    small = dict(policies=["sd", "psd"], psd_capacity="split", num_prompts="64", output_len="64")
    views = {m: d.compute(state(psd_split=m, **small)) for m in ("auto", "always")}
    assert d.DEFAULTS["psd_split"] == "auto" and "--psd-split auto" in d.default_view().command
    frac = {}
    for mode, v in views.items():
        assert f"--psd-split {mode}" in v.command
        sim = _sim(v.command, capsys)
        r = {x["policy"]: x for x in sim["results"]}
        row = {x["policy"]: x for x in v.rows}
        frac[mode] = r["psd"]["split_fraction"]
        assert row["psd"]["two halves"] == f"{frac[mode]:.0%}" and row["sd"]["two halves"] is None
        assert row["psd"]["out tok/s"] == r["psd"]["output_throughput"]
        want = sim["config"]["psd_split"] or \
            "PSD always: two halves whenever two can be formed (the published schedule)"
        assert v.psd_split == f"{want}; this run split {frac[mode]:.0%} of its decode steps"
        out = d.update(*[state(psd_split=mode, **small)[k] for k in d.STATE_KEYS])
        assert out[-1] == "" and out[len(d.GRAPHS) + 1] == v.psd_split
    assert views["auto"].psd_split.startswith("PSD auto: ") and frac["auto"] == 0.0
    assert views["always"].psd_split.startswith("PSD always: ") and frac["always"] > 0.9
    assert "(auto)" in views["auto"].figures["gantt"].layout.title.text
    # the threshold is minedraft-sim's (the step model's, common.with_split_rows), not the policy's fallback of one
    # full batch: at max_num_seqs 64 under load they run PSD differently
    busy = d.compute(state(policies=["psd"], max_num_seqs="64", rate="30", num_prompts="120", output_len="128"))
    sim = _sim(busy.command, capsys)
    rows = sim["config"]["policy_config"]["psd_split_rows"]
    assert rows < 64 and busy.psd_split.startswith(f"PSD auto: two halves from {rows} requests in flight")
    assert busy.rows[0]["two halves"] == f"{sim['results'][0]['split_fraction']:.0%}"
    fallback = _sim(busy.command + " --psd-split-rows 65", capsys)["results"][0]["split_fraction"]
    assert sim["results"][0]["split_fraction"] > fallback + 0.2
    # without PSD there is nothing to say
    assert d.compute(state(policies=["sd"], num_prompts="32", output_len="32")).psd_split == ""
