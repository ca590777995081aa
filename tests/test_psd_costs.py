"""benchmarks/psd_costs.py without vLLM: its --report over the committed measurements, and its pure helpers."""

import importlib.util
import json
import statistics
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COSTS = ROOT / "docs/measurements/2026-12-04-h200-psd-costs"
OVERLAP = ROOT / "docs/measurements/2026-12-04-h200-psd-overlap"  # the same grid's other cells, drafter ops sent at launch
KEYS = {"swap_ms_16", "swap_ms_64", "drafter_op_over_forwards", "serial_ms_64", "psd_over_sd_shared_min",
        "psd_over_sd_shared_median"}


@pytest.fixture(scope="module")
def mod():
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))  # the script imports its sibling _gpu_common
    try:
        spec = importlib.util.spec_from_file_location("psd_costs", ROOT / "benchmarks/psd_costs.py")
        m = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(m)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return m


def _lines(folder: Path) -> list[dict]:
    """The JSON lines of a folder's psd_costs*.jsonl, read here without the script (vLLM's log lines skipped)."""
    out = []
    for f in sorted(folder.glob("psd_costs*.jsonl")):
        for line in f.read_text().splitlines():
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict):
                out.append(obj)
    return out


def _committed() -> list[Path]:
    return sorted({p.parent for p in (ROOT / "docs/measurements").glob("*/psd_costs*.jsonl")})


def _report(mod, capsys, *args) -> dict:
    assert mod.main(["--report", *args]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert len(lines) == 1, out
    return json.loads(lines[0])


# ------------------------------------------------------------------------------------------ --report
@pytest.mark.parametrize("folder", [COSTS, OVERLAP], ids=["costs", "overlap"])
def test_report_of_a_committed_folder_recomputes_from_its_lines(mod, capsys, folder):
    if not folder.is_dir():
        pytest.skip("committed measurements absent")
    rep = _report(mod, capsys, str(folder))
    assert KEYS <= set(rep) and rep["folder"] == str(folder.relative_to(ROOT))
    lines = _lines(folder)
    swaps = {rows: [r["swap_ms"] for r in lines if r.get("kind") == "swap" and r.get("rows") == rows]
             for rows in (16, 64)}
    assert len(swaps[64]) >= 3
    assert rep["swap_ms_64"] == pytest.approx(max(swaps[64]), abs=5e-5)
    assert rep["swap_ms_16"] == pytest.approx(max(swaps[16]), abs=5e-5)
    # PSD over SD of the same session: same target, draft, k and rows, both runs steady (p90/p10 <= 1.25), over
    # every committed folder of this script (the report pools them)
    ratios, unfiltered = [], []
    for folder in _committed():
        res = {}
        for r in _lines(folder):
            if r.get("kind") == "result":
                res.setdefault((r["target"], r["draft"], r["k"], r["max_num_seqs"]), {})[r["policy"]] = r
        for by in res.values():
            if "psd" in by and "sd" in by:
                ratio = by["psd"]["output_throughput"] / by["sd"]["output_throughput"]
                unfiltered.append(ratio)
                if all(by[p]["step_spread"] is not None and by[p]["step_spread"] <= 1.25 for p in ("psd", "sd")):
                    ratios.append(ratio)
    assert 0 < len(ratios) < len(unfiltered)  # some pair was disturbed and is left out
    assert rep["psd_over_sd_shared_min"] == pytest.approx(min(ratios), abs=5e-5)
    assert rep["psd_over_sd_shared_median"] == pytest.approx(statistics.median(ratios), abs=5e-5)
    assert min(unfiltered) != pytest.approx(min(ratios), abs=5e-5)  # the filter changes the answer on this data
    # serial_ms_64: PSD's serial time minus SD's at 64 rows, the largest over pairs and k whose runs are both steady
    # (serial_ms_64_all_pairs: over all pairs)
    at64 = {(r["policy"], r["target"], r["draft"], r["k"]): r for r in lines
            if r.get("kind") == "result" and r["max_num_seqs"] == 64}
    diff, diff_all = [], []
    for (pol, *key), r in at64.items():
        s = at64.get(("sd", *key))
        if pol == "psd" and s is not None:
            d = r["serial"]["serial_ms_median"] - s["serial"]["serial_ms_median"]
            diff_all.append(d)
            if max(r["step_spread"], s["step_spread"]) <= 1.25:
                diff.append(d)
    assert diff and rep["serial_ms_64"] == pytest.approx(max(diff), abs=5e-5)
    assert rep["serial_ms_64_all_pairs"] == pytest.approx(max(diff_all), abs=5e-5)
    ops = [r["drafter"]["op_over_forwards"] for r in lines
           if r.get("kind") == "result" and (r.get("drafter") or {}).get("op_over_forwards")]
    assert rep["drafter_op_over_forwards"] == pytest.approx(statistics.median(ops), abs=5e-5)


@pytest.mark.skipif(not _committed(), reason="committed measurements absent")
def test_report_without_a_folder_reads_the_newest_committed_one(mod, capsys):
    newest = _committed()[-1]
    rep = _report(mod, capsys)
    assert rep["folder"] == str(newest.relative_to(ROOT))
    assert rep == _report(mod, capsys, str(newest))
    if COSTS.is_dir():
        assert newest > COSTS  # today: 2026-12-04-h200-psd-overlap (a later session's folder sorts after it)


def test_newest_folder_skips_folders_without_psd_costs_lines(mod, tmp_path, monkeypatch):
    base = tmp_path / "docs/measurements"
    for name, f in (("2026-01-01-a", "psd_costs_x.jsonl"), ("2026-02-01-b", "psd_costs_y.jsonl"),
                    ("2026-03-01-c", "gpu_psd.jsonl")):
        (base / name).mkdir(parents=True)
        (base / name / f).write_text("{}\n")
    monkeypatch.setattr(mod, "ROOT", tmp_path)
    assert mod.newest_folder() == base / "2026-02-01-b"
    (base / "2026-02-01-b" / "psd_costs_y.jsonl").unlink()
    assert mod.newest_folder() == base / "2026-01-01-a"
    (base / "2026-01-01-a" / "psd_costs_x.jsonl").unlink()
    with pytest.raises(SystemExit) as e:
        mod.newest_folder()
    assert str(e.value.code).startswith("error: --report:")


@pytest.mark.parametrize("what", ["empty", "missing", "no json"])
def test_report_refuses_a_folder_without_lines_in_one_line(mod, tmp_path, capsys, what):
    folder = tmp_path / "m"
    if what != "missing":
        folder.mkdir()
    if what == "no json":  # a job whose engine never started: vLLM's log lines only
        (folder / "psd_costs_job.jsonl").write_text("INFO 12-04 engine starting\nTraceback (most recent call last):\n")
    with pytest.raises(SystemExit) as e:
        mod.main(["--report", str(folder)])
    msg = str(e.value.code)
    assert msg.startswith("error: --report:") and len(msg.splitlines()) == 1 and str(folder) in msg
    assert capsys.readouterr().out == ""


# ---------------------------------------------------------------------------------------- helpers
def test_serial_gaps_takes_the_drafter_waits_out_of_each_gap(mod):
    steps = [(0.000, 0.010), (0.012, 0.020), (0.025, 0.030), (0.031, 0.040)]  # gaps 2, 5, 1 ms
    plain = mod.serial_gaps(steps, None)
    assert plain["steps"] == 4
    assert plain["gap_ms_median"] == pytest.approx(2.0) and plain["serial_ms_median"] == pytest.approx(2.0)
    assert plain["drafter_wait_ms_median"] == 0.0
    assert plain["target_ms_median"] == pytest.approx(8.5)  # busy 10, 8, 5, 9 ms
    # one wait per step, counted in the gap after it; older waits (before the run's steps) are not used
    waits = [0.5, 0.5, 0.001, 0.003, 0.0005, 0.2]
    got = mod.serial_gaps(steps, waits)
    assert got["serial_ms_median"] == pytest.approx(1.0)  # 2 - 1, 5 - 3, 1 - 0.5
    assert got["serial_ms_p90"] == pytest.approx(1.8)
    assert got["drafter_wait_ms_median"] == pytest.approx(1.0) and got["gap_ms_median"] == pytest.approx(2.0)
    short = mod.serial_gaps(steps, [0.001, 0.002, 0.003])
    assert short["steps"] == 4 and "3 drafter waits for 4 steps" in short["error"]
    assert "serial_ms_median" not in short


def _draft(t0, ms, forward_ms, size, **kw):
    return {"type": "op", "op": "draft", "resource": "draft", "size": size, "t_start": t0, "t_end": t0 + ms / 1e3,
            "forward_ms": forward_ms, "t_sent": t0 - 0.0002, "t_received": t0 + ms / 1e3 + 0.0001,
            "bytes_sent": 40 * size, "bytes_received": 30 * size, "entries": kw.pop("entries", 0), **kw}


def test_drafter_costs_divides_the_op_by_k_later_passes(mod):
    recs = [
        {"type": "op", "op": "verify", "resource": "target", "size": 4, "t_start": 0.0, "t_end": 0.02},
        _draft(0.0, 12.0, [5.0, 3.0, 3.0], 4),
        _draft(0.1, 15.0, [6.0, 3.0, 5.0], 4, entries=2),
        _draft(0.2, 13.0, [5.5, 3.0, 3.0], 4),
        _draft(0.3, 5.0, [1.0, 1.0, 1.0], 2),  # a partial half: not a full op
        _draft(0.4, 30.0, [2.0, 9.0, 9.0, 9.0], 4),  # a catch-up pass (k + 1 passes): not a full op
        {"type": "op", "op": "draft", "resource": "draft", "size": 4, "t_start": 0.5, "t_end": 0.51, "forward_ms": []},
    ]
    recs[-1].update(t_sent=0.5, t_received=0.51, bytes_sent=1, bytes_received=1)
    d = mod.drafter_costs(recs, rows=4, k=3)
    assert d["ops"] == 3
    assert d["later_pass_ms"] == pytest.approx(3.0)  # median of 3, 3, 3, 5, 3, 3
    assert d["op_ms"] == pytest.approx(13.0) and d["first_pass_ms"] == pytest.approx(5.5)
    assert d["op_over_forwards"] == pytest.approx(13.0 / 9.0, abs=1e-4)  # median of 12/9, 15/9, 13/9
    assert d["entries_per_op"] == 0
    assert d["passes_ms"] == pytest.approx(11.5)  # 11, 14, 11.5
    assert d["send_ms"] == pytest.approx(0.2, abs=1e-4) and d["receive_ms"] == pytest.approx(0.1, abs=1e-4)
    assert mod.drafter_costs(recs, rows=8, k=3) is None  # no op of a whole half
    one = mod.drafter_costs([_draft(0.0, 4.0, [3.0], 4)], rows=4, k=1)
    assert one["ops"] == 1 and one["later_pass_ms"] is None and one["op_over_forwards"] is None


def _result(policy, tput, spread, k=3, rows=16, target="t", draft="d"):
    return {"kind": "result", "policy": policy, "target": target, "draft": draft, "k": k, "max_num_seqs": rows,
            "output_throughput": tput, "step_spread": spread}


def test_pair_ratios_keeps_only_pairs_of_steady_runs(mod):
    lines = [
        _result("sd", 1000.0, 1.05), _result("psd", 1100.0, 1.10),  # kept: 1.1
        _result("sd", 2000.0, 1.02, rows=64), _result("psd", 1900.0, 1.4, rows=64),  # PSD disturbed: left out
        _result("sd", 500.0, None, k=1), _result("psd", 600.0, 1.0, k=1),  # SD's spread unknown: left out
        _result("psd", 700.0, 1.0, k=5),  # no SD run to pair with
        _result("sd", 800.0, 1.1, target="t2"), _result("psd", 720.0, 1.25, target="t2"),  # 1.25 is steady: 0.9
        {"kind": "swap", "rows": 16, "swap_ms": 0.1}, {"kind": "done", "elapsed_s": 1.0},
    ]
    assert sorted(mod.pair_ratios(lines)) == pytest.approx([0.9, 1.1])
    assert mod.pair_ratios([x for x in lines if x.get("policy") != "sd"]) == []
