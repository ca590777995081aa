"""What the CLIs share: one-line errors, the flags with vLLM's spellings, and turning flags into configs.

Every flag is parsed as text by argparse and validated here, at the edge: a bad value raises
:class:`~minedraft.errors.InputError` naming the flag, what is allowed and the value; :func:`run_cli`
prints it as ``error: --flag: allowed; got value`` and exits with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

from minedraft.acceptance import AcceptanceCurve
from minedraft.costs import StepCosts
from minedraft.errors import InputError, RunFailed, require
from minedraft.latency import Constant, LatencyModel, LatencyProfile, Roofline, Table
from minedraft.policies import POLICIES, PolicyConfig
from minedraft.presets import gpu_spec, model_shape
from minedraft.workload import LengthDist, Workload, default_dataset, load_arrival_times, load_sharegpt

DEFAULT_ALPHA = "0.7"


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's defaults formatter, showing each default once: not when the help text already names it, nor when
    there is none (None, a switch's False)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        return text + " (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors, exit status 2, no prefix abbreviations (``--h`` is an error) and ``--version``."""

    def __init__(self, *args, **kwargs) -> None:
        from minedraft import __version__

        kwargs.setdefault("allow_abbrev", False)
        kwargs["formatter_class"] = HelpFormatter  # every CLI: each default shown once
        super().__init__(*args, **kwargs)
        self.add_argument("--version", action="version", version=f"%(prog)s {__version__}",
                          help="print the program's name and minedraft's version, then exit")

    def error(self, message: str) -> None:  # type: ignore[override]
        m = re.match(r"argument ([^:]+): (.*)", message)
        if m:
            flag = m.group(1).split("/")[-1]
            message = f"{flag}: {m.group(2)}"
        fail(" ".join(message.split()))


def fail(line: str, status: int = 2) -> None:
    print(f"error: {line}", file=sys.stderr)
    raise SystemExit(status)


def run_cli(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Run a CLI body; bad input -> one line and status 2; other failures -> one line and status 1."""
    try:
        return main(argv)
    except InputError as exc:
        fail(exc.line())
    except RunFailed as exc:
        fail(" ".join(str(exc).split()), status=1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except SystemExit:
        raise
    except Exception as exc:  # noqa: BLE001 - the CLI never shows a traceback unless asked
        if os.environ.get("MINEDRAFT_DEBUG"):
            raise
        fail(f"internal error: {exc.__class__.__name__}: {' '.join(str(exc).split())[:300]} "
             "(set MINEDRAFT_DEBUG=1 for the traceback)", status=1)
    return 1


# ------------------------------------------------------------------------------- flag groups
def add_model_flags(p: argparse.ArgumentParser, target: str = "qwen3-32b", draft: str = "qwen3-0.6b") -> None:
    g = p.add_argument_group("models and hardware")
    g.add_argument("--target", default=target, help=f"target model preset or local model dir (default {target})")
    g.add_argument("--draft", default=draft, help=f"draft model preset or local model dir (default {draft})")
    g.add_argument("--gpu", default="h100", help="GPU preset: h100, h200, a100-80gb, l40s (default h100)")
    g.add_argument("--tensor-parallel-size", "-tp", default="4", help="target's GPUs (TP); the drafter uses 1")


def add_spec_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("speculation")
    g.add_argument("--accept-curve", default=DEFAULT_ALPHA,
                   help="0.8 (geometric alpha) | 0.9,0.76,0.62 (vLLM synthetic_acceptance_rates) | curve.json "
                        f"(default {DEFAULT_ALPHA}, an assumption)")
    g.add_argument("--accept-concentration", default=None,
                   help="per-request alpha ~ Beta(mean=alpha, concentration=C); needs a geometric --accept-curve")
    g.add_argument("--num-speculative-tokens", "-k", default="5", help="draft tokens per step (default 5)")
    g.add_argument("--num-speculative-tokens-per-batch-size", default=None,
                   help="k by batch size, vLLM's form: '[[1,16,5],[17,64,3]]' or '1-16:5,17-64:3'")
    g.add_argument("--psd-capacity", default="double", help="double (published: 2x max_num_seqs) | split")
    g.add_argument("--psd-split", default="auto",
                   help="PSD's schedule: auto (two halves only while the step model says they pay, else one batch "
                        "drafted then verified like SD; hysteretic) | always (two halves: the published schedule)")
    g.add_argument("--psd-split-rows", default=None,
                   help="with --psd-split auto: requests in flight from which PSD splits (default: the step model's "
                        "threshold, minedraft.theory.split_threshold)")
    g.add_argument("--sd-drafter", default="shared", help="SD drafter placement: shared (target GPU) | own")
    g.add_argument("--psd-drafter", default="own", help="PSD/PEARL drafter placement: own (published) | shared "
                   "(time-shares the target's GPU)")
    g.add_argument("--plugin-costs", default=None,
                   help="add minedraft's vLLM plugin's measured costs to PSD/PEARL (drafter op, half swap; with "
                        "--psd-drafter shared also its sharing terms): a GPU with a shipped fit (h200) or a folder with "
                        "plugin.json (default: none, the design as published)")
    g.add_argument("--shared-gpu-slowdown", default=None,
                   help="with --psd-drafter shared: a drafter op beside a target op takes (1 + S) x as long; "
                        "overrides this term only (default: the --plugin-costs fit, else measured on H200)")
    g.add_argument("--shared-verify-stretch", default=None,
                   help="with --psd-drafter shared: a verify beside a draft op gains C x the drafter's passes after "
                        "its first as modelled, (k - 1) x T_d(b, 1); overrides this term only (default: the "
                        "--plugin-costs fit, else measured on H200)")
    g.add_argument("--tetris-extra-proposals", default="0", help="TETRIS e on sd/psd (0 = off)")
    g.add_argument("--tetris-capacity", default="0", help="TETRIS verify budget per full batch (0 = k x batch)")


def add_engine_flags(p: argparse.ArgumentParser, max_num_seqs: str = "16") -> None:
    g = p.add_argument_group("engine")
    g.add_argument("--max-num-seqs", default=max_num_seqs, help=f"requests in flight (default {max_num_seqs})")
    g.add_argument("--max-num-batched-tokens", default="2048",
                   help="prompt tokens per prefill step (default 2048, as the published setup; 'none' = no limit)")
    g.add_argument("--kv-cache-tokens", default=None, help="target KV-cache capacity in tokens (default: unlimited)")
    g.add_argument("--prefill-mode", default="separate",
                   help="separate: prefill-only steps (published, vLLM V0) | chunked: vLLM V1 (ar, sd)")


def add_workload_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("workload")
    g.add_argument("--num-prompts", default="1000", help="requests (default 1000)")
    g.add_argument("--request-rate", default="inf", help="requests/s, Poisson; inf = offline (default)")
    g.add_argument("--burstiness", default="1.0", help="gamma shape of arrival gaps (1 = Poisson)")
    g.add_argument("--arrival-times", default=None, help="replay arrivals: JSON list of seconds or a trace")
    g.add_argument("--input-len", default=None, help="N | uniform:MIN:MAX | lognormal:MEDIAN:SIGMA")
    g.add_argument("--output-len", default="256", help="N | uniform:MIN:MAX | lognormal:MEDIAN:SIGMA | dataset")
    g.add_argument("--dataset", default=None, help="ShareGPT-format JSON (default: the shipped sample)")
    g.add_argument("--seed", default="0", help="random seed (default 0)")


def add_timing_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("step times (default: roofline model of --target/--draft on --gpu)")
    g.add_argument("--draft-ms", default=None, help="constant mode: each drafter forward takes this")
    g.add_argument("--verify-ms", default=None, help="constant mode: each target forward takes this")
    g.add_argument("--prefill-ms", default=None, help="constant mode: each prefill takes this (default 0)")
    g.add_argument("--step-overhead-ms", default="0", help="per engine step: scheduling, sampling (default 0)")
    g.add_argument("--transfer-ms", default="0", help="each draft<->target hand-off across GPUs (default 0)")
    g.add_argument("--latency-profile", default=None, help="measured profile JSON for the target")
    g.add_argument("--draft-latency-profile", default=None, help="measured profile JSON for the drafter")


# ------------------------------------------------------------------------------- value parsers
def as_int(text: str, flag: str, lo: int, hi: int) -> int:
    try:
        v = float(text)
        ok = math.isfinite(v) and v == int(v)
    except (TypeError, ValueError):
        ok = False
    require(ok and lo <= int(v) <= hi, flag, f"must be an integer in [{lo}, {hi}]", text)
    return int(v)


def as_float(text: str, flag: str, lo: float = 0.0, hi: float = math.inf, allow_inf: bool = False,
             lo_open: bool = False) -> float:
    try:
        v = float(text)
    except (TypeError, ValueError):
        v = math.nan
    ok = not math.isnan(v) and (allow_inf or math.isfinite(v)) and (v > lo if lo_open else v >= lo) and v <= hi
    rng = f"{'(' if lo_open else '['}{lo:g}, {'inf' if math.isinf(hi) else f'{hi:g}'}]"
    require(ok, flag, f"must be a number in {rng}{' or inf' if allow_inf else ''}", text)
    return v


def as_choice(text: str, flag: str, choices: tuple[str, ...]) -> str:
    require(text in choices, flag, f"must be one of {', '.join(choices)}", text)
    return text


def parse_policies(text: str) -> list[str]:
    names = [s.strip().lower() for s in text.split(",") if s.strip()]
    require(len(names) > 0, "--policy", f"must list policies from {','.join(POLICIES)}", text)
    for n in names:
        require(n in POLICIES, "--policy", f"each policy must be one of {', '.join(POLICIES)}", text)
    require(len(set(names)) == len(names), "--policy", "must not repeat a policy", text)
    return names


def parse_k_schedule(text: str) -> tuple[tuple[int, int, int], ...]:
    flag = "--num-speculative-tokens-per-batch-size"
    t = text.strip()
    entries: object
    if t.startswith("["):
        try:
            entries = json.loads(t)
        except (json.JSONDecodeError, RecursionError):
            raise InputError(flag, "must be JSON like [[1,16,5],[17,64,3]] or 1-16:5,17-64:3", text) from None
    else:
        entries = []
        for part in t.split(","):
            m = re.fullmatch(r"\s*(\d{1,9})\s*-\s*(\d{1,9})\s*:\s*(\d{1,9})\s*", part)
            require(m is not None, flag, "must be JSON like [[1,16,5],[17,64,3]] or 1-16:5,17-64:3", text)
            entries.append(tuple(int(x) for x in m.groups()))  # type: ignore[union-attr]
    from minedraft.policies.base import normalize_k_schedule

    try:
        return normalize_k_schedule(entries)
    except InputError as exc:
        raise exc.relabel(flag, text) from None


def _opt(text: str | None) -> str | None:
    return None if text is None or text.strip().lower() in ("", "none") else text


# ------------------------------------------------------------------------------- building configs
def policy_config(a: argparse.Namespace) -> PolicyConfig:
    k = as_int(a.num_speculative_tokens, "--num-speculative-tokens", 1, 64)
    sched = parse_k_schedule(a.num_speculative_tokens_per_batch_size) if a.num_speculative_tokens_per_batch_size \
        else None
    mbt = _opt(a.max_num_batched_tokens)
    kv = _opt(getattr(a, "kv_cache_tokens", None))
    rows = _opt(getattr(a, "psd_split_rows", None))
    return PolicyConfig(
        max_num_seqs=as_int(a.max_num_seqs, "--max-num-seqs", 1, 1 << 16),
        num_speculative_tokens=k,
        k_schedule=sched,
        psd_capacity=as_choice(a.psd_capacity, "--psd-capacity", ("double", "split")),
        sd_drafter=as_choice(a.sd_drafter, "--sd-drafter", ("shared", "own")),
        psd_drafter=as_choice(a.psd_drafter, "--psd-drafter", ("own", "shared")),
        psd_split=as_choice(getattr(a, "psd_split", "always"), "--psd-split", ("auto", "always")),
        psd_split_rows=as_int(rows, "--psd-split-rows", 2, 1 << 20) if rows else None,
        tetris_extra=as_int(a.tetris_extra_proposals, "--tetris-extra-proposals", 0, 16),
        tetris_capacity=as_int(a.tetris_capacity, "--tetris-capacity", 0, 1 << 30),
        max_num_batched_tokens=as_int(mbt, "--max-num-batched-tokens", 1, 1 << 30) if mbt else None,
        kv_capacity_tokens=as_int(kv, "--kv-cache-tokens", 1, 1 << 40) if kv else None,
        prefill_mode=as_choice(getattr(a, "prefill_mode", "separate"), "--prefill-mode", ("separate", "chunked")),
    )


def acceptance_curve(a: argparse.Namespace, cfg: PolicyConfig, extra: int = 0) -> AcceptanceCurve:
    """The curve of ``--accept-curve`` (and ``--accept-concentration``), with at least the positions the
    drafts need plus ``extra`` (PEARL's guess of the target's next token is one more position)."""
    need = cfg.max_draft_len + extra
    try:
        curve = AcceptanceCurve.parse(a.accept_curve, positions=max(10, need))
    except InputError as exc:
        raise exc.relabel("--accept-curve") from None
    if a.accept_concentration is not None:
        c = as_float(a.accept_concentration, "--accept-concentration", 0.0, 1e9, lo_open=True)
        alpha = curve.rates[0]
        geometric = all(abs(r - alpha ** (i + 1)) < 1e-9 for i, r in enumerate(curve.rates))
        require(geometric and 0 < alpha < 1, "--accept-concentration",
                "needs a geometric --accept-curve (one alpha strictly between 0 and 1)", a.accept_curve)
        curve = AcceptanceCurve.beta_mixture(alpha, c, curve.positions)
    require(curve.positions >= need, "--accept-curve",
            f"has {curve.positions} positions but k (+ TETRIS extras, + 1 for PEARL's guess) needs {need}",
            a.accept_curve)
    return curve


def workload(a: argparse.Namespace) -> Workload:
    seed = as_int(a.seed, "--seed", 0, 2**63 - 1)
    n = as_int(a.num_prompts, "--num-prompts", 1, 10_000_000)
    rate = as_float(a.request_rate, "--request-rate", 0.0, math.inf, allow_inf=True, lo_open=True)
    burst = as_float(a.burstiness, "--burstiness", 0.0, 1e6, lo_open=True)
    input_len = LengthDist.parse(a.input_len, "--input-len") if a.input_len else None
    out_text = a.output_len.strip().lower() if a.output_len else "dataset"
    output_len = None if out_text == "dataset" else LengthDist.parse(a.output_len, "--output-len")
    dataset = a.dataset
    if dataset is not None:
        try:
            fixed = int(output_len.a) if output_len is not None and output_len.kind == "fixed" else None
            load_sharegpt(dataset, fixed_output=fixed)
        except InputError as exc:
            raise exc.relabel("--dataset") from None
    elif input_len is None:
        dataset = str(default_dataset())
    require(output_len is not None or dataset is not None, "--output-len",
            "'dataset' needs a --dataset (or no --input-len)", a.output_len)
    times = None
    if a.arrival_times:
        try:
            times = load_arrival_times(a.arrival_times)
        except InputError as exc:
            raise exc.relabel("--arrival-times") from None
        require(len(times) >= n, "--arrival-times", f"holds {len(times)} times, fewer than --num-prompts {n}",
                a.arrival_times)
    try:
        return Workload(num_prompts=n, request_rate=rate, burstiness=burst, input_len=input_len,
                        output_len=output_len, dataset=dataset, arrival_times=times, seed=seed)
    except InputError as exc:
        raise exc.relabel(f"--{exc.field.replace('_', '-')}") from None


def step_costs(a: argparse.Namespace, needs_drafter: bool) -> tuple[StepCosts, int, dict]:
    """Latency models from the flags: constant mode, measured profiles, or the roofline presets."""
    tp = as_int(a.tensor_parallel_size, "--tensor-parallel-size", 1, 1024)
    overhead = as_float(a.step_overhead_ms, "--step-overhead-ms", 0.0, 1e6) / 1e3
    transfer = as_float(a.transfer_ms, "--transfer-ms", 0.0, 1e6) / 1e3
    constant = a.draft_ms is not None or a.verify_ms is not None or a.prefill_ms is not None
    info: dict = {"tensor_parallel_size": tp, "step_overhead_ms": overhead * 1e3, "transfer_ms": transfer * 1e3}
    if constant:
        require(a.verify_ms is not None, "--verify-ms", "constant mode needs --verify-ms (and --draft-ms)")
        require(a.draft_ms is not None or not needs_drafter, "--draft-ms",
                "constant mode needs --draft-ms for speculative policies")
        require(a.latency_profile is None, "--latency-profile", "cannot be combined with constant mode")
        v = as_float(a.verify_ms, "--verify-ms", 0.0, 1e7, lo_open=True) / 1e3
        pf = as_float(a.prefill_ms, "--prefill-ms", 0.0, 1e7) / 1e3 if a.prefill_ms is not None else 0.0
        d = as_float(a.draft_ms, "--draft-ms", 0.0, 1e7) / 1e3 if a.draft_ms is not None else 0.0
        target, draft = Constant(v, pf), Constant(d, pf)
        info["latency_model"] = "constant"
    else:
        gpu = gpu_spec(a.gpu, "--gpu")
        sources = []
        if a.latency_profile:
            target = load_latency(a.latency_profile, "--latency-profile")
            sources.append("target: measured (given profile)")
        else:
            target, src = _shipped_or_roofline(a.target, None, "--target", gpu, tp)
            sources.append(f"target: {src}")
        draft = None
        if needs_drafter:
            if a.draft_latency_profile:
                draft = load_latency(a.draft_latency_profile, "--draft-latency-profile")
                sources.append("drafter: measured (given profile)")
            else:
                draft, src = _shipped_or_roofline(a.draft, a.target, "--draft", gpu, tp)
                sources.append(f"drafter: {src}")
        kinds = {"roofline" if "roofline" in src else "measured" for src in sources}
        info |= {"latency_model": kinds.pop() if len(kinds) == 1 else "mixed", "latency_sources": "; ".join(sources),
                 "gpu": gpu.key, "target": a.target, "draft": a.draft}
    info["target_latency"] = target.label
    info["draft_latency"] = draft.label if draft is not None else None
    from minedraft.calibration.plugin import load_plugin_costs
    from minedraft.calibration.steps import PROFILES

    plugin = dict.fromkeys(("drafter_op_s", "verify_swap_s", "verify_swap_row_s"), 0.0)
    sharing_from, sharing_label = PROFILES / "h200", "measured on H200, minedraft's plugin"
    pc = getattr(a, "plugin_costs", None)
    if pc is not None and str(pc).lower() != "none":
        folder = Path(pc) if Path(pc).is_dir() else PROFILES / str(pc).lower()
        shipped = sorted(p.name for p in PROFILES.iterdir() if (p / "plugin.json").is_file()) if PROFILES.is_dir() else []
        require((folder / "plugin.json").is_file(), "--plugin-costs",
                f"must be a folder with plugin.json or a GPU with a shipped fit ({', '.join(shipped) or 'none'})", pc)
        fit = load_plugin_costs(folder, "--plugin-costs")
        plugin = {k: fit[k] for k in plugin}
        info["plugin_costs"] = f"{folder.name}/plugin.json (minedraft's vLLM plugin, measured)"
        sharing_from, sharing_label = folder, f"{folder.name}/plugin.json"
    sharing = dict.fromkeys(("shared_gpu_slowdown", "shared_verify_stretch"), 0.0)
    if getattr(a, "psd_drafter", "own") == "shared":
        measured = load_plugin_costs(sharing_from, "--plugin-costs")
        for key in sharing:
            flag = "--" + key.replace("_", "-")
            if getattr(a, key, None) is None:
                sharing[key] = measured[key]
                info[key] = f"{sharing[key]:.3f} ({sharing_label})"
            else:
                sharing[key] = as_float(getattr(a, key), flag, 0.0, 10.0)
                info[key] = f"{sharing[key]:.3f} (given)"
    return StepCosts(target, draft, step_overhead_s=overhead, transfer_s=transfer, **sharing, **plugin), tp, info


def load_latency(path: str, flag: str) -> LatencyModel:
    """A latency file: a measured grid (LatencyProfile) or a fitted step model (Affine)."""
    from minedraft.calibration.steps import STEP_MODEL_KIND, load_step_model
    from minedraft.errors import read_json

    data = read_json(path, flag)
    if isinstance(data, dict) and data.get("kind") == STEP_MODEL_KIND:
        return load_step_model(path, flag)[0]
    return Table(LatencyProfile.load(path, flag))


def _shipped_or_roofline(name: str, target: str | None, flag: str, gpu, tp: int) -> tuple[LatencyModel, str]:
    """The step model measured on this GPU for this model (and pair), shipped with the package; else the
    uncalibrated roofline (the drafter's at TP 1). Fits are per target TP (``qwen3-32b@tp4.json``)."""
    from minedraft.calibration.steps import load_step_model, shipped

    key = name.strip().lower()
    # fits are per TP: the target's, and vLLM's drafter inside SD runs at the target's TP too
    path = shipped(gpu.key, target.strip().lower(), key, tp) if target else shipped(gpu.key, key, tp=tp)
    if path is not None:
        return load_step_model(path, flag)[0], f"fitted to vLLM steps measured on {gpu.key}" + (
            f" at TP {tp}" if tp > 1 else "")
    return _roofline(name, flag, gpu, 1 if target else tp), "roofline (uncalibrated defaults)"


def _roofline(name: str, flag: str, gpu, tp: int) -> LatencyModel:
    shape = model_shape(name, flag)
    try:
        return Roofline(shape, gpu, tp)
    except InputError as exc:
        raise exc.relabel("--tensor-parallel-size" if exc.field == "tensor_parallel_size" else flag, tp) from None


def config_dict(cfg: PolicyConfig) -> dict:
    d = asdict(cfg)
    if d["k_schedule"] is not None:
        d["k_schedule"] = [list(x) for x in d["k_schedule"]]
    return d


def output_path(text: str | None, flag: str) -> str | None:
    """A writable output path (or '-' for stdout), checked before any work starts."""
    if text is None or text == "-":
        return text
    p = Path(text)
    require(not p.is_dir(), flag, "must be a file path, not a directory", text)
    require(p.parent == Path("") or p.parent.is_dir(), flag, "its folder must exist", text)
    existed = p.exists()
    try:
        with open(p, "a"):
            pass
    except OSError as exc:
        raise InputError(flag, f"must be writable ({exc.strerror})", text) from None
    if not existed:
        p.unlink()
    return text


def with_split_rows(cfg: PolicyConfig, costs: StepCosts, curve: AcceptanceCurve | None, tp: int,
                    context_len: float) -> tuple[PolicyConfig, str | None]:
    """PSD ``auto`` without ``--psd-split-rows``: the step model's choice (``minedraft.theory.auto_split_rows``) in
    the config, and a line saying when PSD splits and why. Other configs come back unchanged (and None)."""
    if cfg.psd_split != "auto" or curve is None:
        return cfg, None
    from minedraft.policies.psd import MERGE_SHARE
    from minedraft.theory import Setup, auto_split_rows

    given = cfg.psd_split_rows is not None
    if not given:
        setup = Setup(curve, costs, cfg.max_num_seqs, cfg.psd_capacity, cfg.sd_drafter, tp, context_len=context_len,
                      psd_drafter=cfg.psd_drafter)
        cfg = replace(cfg, psd_split_rows=auto_split_rows(setup, cfg.num_speculative_tokens))
    m, rows = cfg.max_num_seqs, cfg.psd_split_rows
    cap = 2 * m if cfg.psd_capacity == "double" else m
    where = "the drafter on the target's GPU" if cfg.psd_drafter == "shared" else "the drafter on a GPU of its own"
    src = "--psd-split-rows" if given else f"the step model, {where}"
    if rows > cap:  # (with psd_capacity split, cap = max_num_seqs: one batch holds every request PSD runs)
        return cfg, (f"PSD auto: one batch (drafted, then verified) of at most max_num_seqs={m} requests, never two "
                     f"halves ({src}: two halves never cycle faster, even with {cap} in flight)")
    if rows > m:
        return cfg, (f"PSD auto: one batch up to max_num_seqs={m} requests in flight, two halves beyond ({src}: two "
                     f"halves of up to {cap} outrun one full batch, but not one batch of the same requests)")
    return cfg, (f"PSD auto: two halves from {rows} requests in flight, one batch at or below {int(MERGE_SHARE * rows)} "
                 f"({src})")
