"""Workloads: when requests arrive and how long their prompts and outputs are.

Arrivals: offline (all at t = 0, as the published benchmark), Poisson at a rate (gamma-distributed gaps
with vLLM's ``--burstiness``), or replayed timestamps. Lengths: fixed, uniform, lognormal, or taken from
a ShareGPT-format JSON (the first human turn is the prompt, the next assistant turn the output, as in
``vllm bench``). Token counts of dataset text are *estimated* at 4 characters per token (no tokenizer can
be downloaded); ``--output-len`` overrides the dataset's output lengths, as vLLM's
``--sharegpt-output-len`` does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

from minedraft.errors import InputError, read_json, read_text, require

CHARS_PER_TOKEN = 4.0
#: ShareGPT filters: drop pairs shorter than MIN_LEN tokens, and those whose prompt + output exceeds the
#: context (the published setup: max_model_len 2048, with the fixed output length when one is given).
MIN_LEN, MAX_TOTAL_LEN = 4, 2048
MAX_REQUESTS = 10_000_000
MAX_LEN = 1 << 20


def default_dataset() -> Path:
    """The ShareGPT-format sample shipped with the package (synthetic text; see scripts/)."""
    return Path(str(resources.files("minedraft.data"))) / "sharegpt_sample.json.gz"


def estimate_tokens(text: str) -> int:
    return max(1, round(len(text) / CHARS_PER_TOKEN))


@dataclass(frozen=True, slots=True)
class LengthDist:
    """A token-length distribution: ``fixed`` N, ``uniform`` [a, b], or ``lognormal`` (median, sigma)."""

    kind: str
    a: float
    b: float = 0.0

    def __post_init__(self) -> None:
        require(self.kind in ("fixed", "uniform", "lognormal"), "kind", "must be fixed, uniform or lognormal", self.kind)
        if self.kind == "fixed":
            require(self.a == int(self.a) and 1 <= self.a <= MAX_LEN, "length", f"must be an integer in [1, {MAX_LEN}]", self.a)
        elif self.kind == "uniform":
            require(self.a == int(self.a) and self.b == int(self.b) and 1 <= self.a <= self.b <= MAX_LEN, "length",
                    f"uniform:A:B needs integers 1 <= A <= B <= {MAX_LEN}", f"uniform:{self.a:g}:{self.b:g}")
        else:
            require(math.isfinite(self.a) and 1 <= self.a <= MAX_LEN and math.isfinite(self.b) and 0 <= self.b <= 4,
                    "length", f"lognormal:MEDIAN:SIGMA needs 1 <= MEDIAN <= {MAX_LEN} and 0 <= SIGMA <= 4",
                    f"lognormal:{self.a:g}:{self.b:g}")

    @classmethod
    def parse(cls, text: str, field: str) -> LengthDist:
        """``256`` | ``uniform:128:512`` | ``lognormal:256:0.5``."""
        parts = text.strip().lower().split(":")
        try:
            if len(parts) == 1:
                return cls("fixed", _int(parts[0]))
            if len(parts) == 3 and parts[0] == "uniform":
                return cls("uniform", _int(parts[1]), _int(parts[2]))
            if len(parts) == 3 and parts[0] == "lognormal":
                return cls("lognormal", float(parts[1]), float(parts[2]))
        except ValueError:
            pass
        except InputError as exc:
            raise exc.relabel(field, text) from None
        raise InputError(field, "must be N, uniform:MIN:MAX or lognormal:MEDIAN:SIGMA (tokens)", text)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if self.kind == "fixed":
            return np.full(n, int(self.a), dtype=np.int64)
        if self.kind == "uniform":
            return rng.integers(int(self.a), int(self.b) + 1, size=n, dtype=np.int64)
        x = rng.lognormal(math.log(self.a), self.b, size=n)
        return np.clip(np.rint(x), 1, MAX_LEN).astype(np.int64)

    def describe(self) -> str:
        return {"fixed": f"{self.a:g}", "uniform": f"uniform:{self.a:g}:{self.b:g}",
                "lognormal": f"lognormal:{self.a:g}:{self.b:g}"}[self.kind]


def _int(s: str) -> int:
    v = float(s)
    if not math.isfinite(v) or v != int(v):
        raise ValueError(s)
    return int(v)


@dataclass(slots=True)
class Requests:
    """A generated workload: one entry per request, ids are positions."""

    arrival: np.ndarray
    prompt_len: np.ndarray
    output_len: np.ndarray

    def __len__(self) -> int:
        return len(self.arrival)


@dataclass(frozen=True, slots=True)
class Workload:
    """What requests come and when. ``request_rate = inf`` means offline (all at t = 0)."""

    num_prompts: int = 1000
    request_rate: float = math.inf
    burstiness: float = 1.0
    input_len: LengthDist | None = None
    output_len: LengthDist | None = None
    dataset: str | None = None
    arrival_times: tuple[float, ...] | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        require(isinstance(self.num_prompts, int) and 1 <= self.num_prompts <= MAX_REQUESTS, "num_prompts",
                f"must be an integer in [1, {MAX_REQUESTS}]", self.num_prompts)
        require(self.request_rate > 0 and not math.isnan(self.request_rate), "request_rate",
                "must be a rate > 0 (requests/s) or inf", self.request_rate)
        require(math.isfinite(self.burstiness) and self.burstiness > 0, "burstiness", "must be > 0", self.burstiness)
        require(self.dataset is not None or self.input_len is not None, "input_len",
                "is required without a dataset")
        require(self.dataset is not None or self.output_len is not None, "output_len",
                "is required without a dataset")
        if self.arrival_times is not None:
            t = self.arrival_times
            require(len(t) >= self.num_prompts, "arrival_times",
                    f"must hold at least num_prompts={self.num_prompts} times", len(t))
            require(all(math.isfinite(x) and x >= 0 for x in t) and all(t[i] <= t[i + 1] for i in range(len(t) - 1)),
                    "arrival_times", "must be finite, >= 0 and non-decreasing (seconds)")

    @property
    def offline(self) -> bool:
        return self.arrival_times is None and math.isinf(self.request_rate)

    def arrivals(self, rng: np.random.Generator) -> np.ndarray:
        n = self.num_prompts
        if self.arrival_times is not None:
            t = np.asarray(self.arrival_times[:n], dtype=float)
            return t - t[0]
        if self.offline:
            return np.zeros(n)
        gaps = rng.gamma(self.burstiness, 1.0 / (self.request_rate * self.burstiness), size=n)
        gaps[0] = 0.0
        return np.cumsum(gaps)

    def generate(self) -> Requests:
        """The requests, reproducibly from ``seed``."""
        rng = np.random.default_rng(self.seed)
        arrival = self.arrivals(rng)
        n = self.num_prompts
        if self.dataset is not None:
            fixed = int(self.output_len.a) if self.output_len is not None and self.output_len.kind == "fixed" else None
            pairs = load_sharegpt(self.dataset, fixed_output=fixed)
            idx = rng.permutation(len(pairs))
            if n > len(idx):  # oversample, as vLLM does when asked for more prompts than the file holds
                idx = np.concatenate([idx, rng.choice(len(pairs), n - len(idx), replace=True)])
            chosen = pairs[idx[:n]]
            prompt = chosen[:, 0].copy()
            output = self.output_len.sample(rng, n) if self.output_len is not None else chosen[:, 1].copy()
            if self.input_len is not None:
                prompt = self.input_len.sample(rng, n)
        else:
            assert self.input_len is not None and self.output_len is not None
            prompt = self.input_len.sample(rng, n)
            output = self.output_len.sample(rng, n)
        return Requests(arrival=arrival, prompt_len=prompt, output_len=output)

    def describe(self) -> dict:
        return {
            "num_prompts": self.num_prompts,
            "request_rate": "inf" if math.isinf(self.request_rate) else self.request_rate,
            "burstiness": self.burstiness,
            "input_len": self.input_len.describe() if self.input_len else "dataset",
            "output_len": self.output_len.describe() if self.output_len else "dataset",
            "dataset": self.dataset,
            "arrival_times": "replayed" if self.arrival_times is not None else None,
            "seed": self.seed,
        }


@lru_cache(maxsize=8)
def _load_sharegpt_cached(path: str, mtime: float, fixed_output: int | None) -> np.ndarray:
    data = read_json(path, "dataset")
    require(isinstance(data, list), "dataset", "must be a ShareGPT-format JSON list of conversations", path)
    pairs = []
    for i, item in enumerate(data):  # type: ignore[union-attr]
        conv = item.get("conversations") if isinstance(item, dict) else None
        if not isinstance(conv, list) or len(conv) < 2:
            continue
        first, second = conv[0], conv[1]
        if not (isinstance(first, dict) and isinstance(second, dict)):
            continue
        p, o = first.get("value"), second.get("value")
        if not (isinstance(p, str) and isinstance(o, str)):
            continue
        pl, ol = estimate_tokens(p), estimate_tokens(o)
        if pl < MIN_LEN or (fixed_output is None and ol < MIN_LEN):
            continue
        if pl + (ol if fixed_output is None else fixed_output) > MAX_TOTAL_LEN:
            continue
        pairs.append((pl, ol))
    require(len(pairs) > 0, "dataset", "holds no usable conversation (need a human turn then a reply, "
            f"prompt >= {MIN_LEN} tokens, prompt + output <= {MAX_TOTAL_LEN})", path)
    return np.asarray(pairs, dtype=np.int64)


def load_sharegpt(path: str, fixed_output: int | None = None) -> np.ndarray:
    """(prompt_len, output_len) token-count pairs from a ShareGPT-format file (JSON or gzip'd JSON).

    ``fixed_output``: the output length that will replace the dataset's (it then sets the context filter).
    """
    p = Path(path)
    require(p.is_file(), "dataset", "must name an existing ShareGPT-format JSON file", path)
    return _load_sharegpt_cached(str(p.resolve()), p.stat().st_mtime, fixed_output)


def load_arrival_times(path: str) -> tuple[float, ...]:
    """Replayed arrival times: a JSON list of seconds, or request records of a minedraft trace (JSONL)."""
    text = read_text(path, "arrival-times")
    stripped = text.lstrip()
    if stripped.startswith("["):
        data = read_json(path, "arrival-times")
        require(isinstance(data, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in data),
                "arrival-times", "must be a JSON list of numbers (seconds)", path)
        return tuple(float(x) for x in data)  # type: ignore[union-attr]
    from minedraft.trace import read_records

    times = [r["arrival"] for r in read_records(path, "arrival-times") if r.get("type") == "request"]
    require(len(times) > 0, "arrival-times", "holds no request records with 'arrival'", path)
    return tuple(sorted(float(t) for t in times))
