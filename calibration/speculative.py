"""Speculative decoding in plain torch (gpt-fast style), to measure a draft/target pair's real acceptance.

One request at a time: the drafter proposes ``k`` tokens autoregressively, the target scores all ``k + 1``
positions in one forward pass, and the draft is accepted left to right. The rule (Leviathan et al.;
gpt-fast ``speculative_decode``; vLLM's rejection sampler):

    accept draft token x_i with probability min(1, p_i(x_i) / q_i(x_i)); at the first rejection sample
    from the residual norm(max(p_i - q_i, 0)) and stop; if all k are accepted take a bonus token from
    p_{k+1}.  Greedy (temperature 0): accept iff x_i == argmax p_i; the correction is argmax p_i.

``p`` and ``q`` are the target's and drafter's next-token distributions at the same temperature. The
output therefore follows the target's distribution exactly; what we record is how many draft tokens
each step accepted (``0..k``). As in vLLM, the first output token comes from the target's prefill pass
and speculation starts after it. End-of-text is ignored (as in the published benchmarks).

Models are Hugging Face checkpoint folders loaded with ``transformers`` in float32 on the CPU; the KV
caches are ``DynamicCache`` objects cropped after each step. Imports torch: load this module only
when a pair is measured.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from minedraft.errors import InputError, require

#: How the drafter picks its tokens when sampling: from q (the standard rule) or its argmax (vLLM's default).
DRAFT_SAMPLING = ("probabilistic", "greedy")


@dataclass
class PairRun:
    """Accepted draft tokens per verification step, one array per prompt (each step drafted ``k``)."""

    k: int
    temperature: float
    accepted: list[np.ndarray]
    #: per prompt and step: probability that the first draft is accepted given the context
    first_accept_prob: list[np.ndarray]
    prompt_tokens: list[int]
    generated: list[int]
    seconds: float
    seed: int
    info: dict = field(default_factory=dict)

    @property
    def steps(self) -> int:
        return int(sum(len(a) for a in self.accepted))

    def all_accepted(self) -> np.ndarray:
        return np.concatenate(self.accepted) if self.accepted else np.zeros(0, dtype=np.int64)

    def expected_first_rate(self) -> float:
        """Mean over steps of P(first draft accepted | context): a lower-variance estimate of rates[0]."""
        return float(np.concatenate(self.first_accept_prob).mean())

    def per_prompt(self) -> list[dict]:
        """Per prompt: steps and the histogram of accepted counts (``hist[a]`` steps accepted ``a``)."""
        return [{"steps": len(a), "hist": np.bincount(a, minlength=self.k + 1).tolist()} for a in self.accepted]


def load_model(path: str | Path, flag: str):
    """A causal LM from a local Hugging Face folder, float32, eval mode."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    p = Path(path)
    require(p.is_dir() and (p / "config.json").is_file(), flag,
            "must be a local model folder with config.json (a Hugging Face checkpoint)", str(path))
    hf_logging.disable_progress_bar()
    try:
        model = AutoModelForCausalLM.from_pretrained(p, dtype=torch.float32)
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(flag, "could not be loaded as a causal LM", f"{path} ({exc.__class__.__name__})") from None
    return model.eval()


def load_tokenizer(path: str | Path, flag: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(Path(path))
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(flag, "holds no loadable tokenizer", f"{path} ({exc.__class__.__name__})") from None


def _forward(model, ids: list[int], cache) -> torch.Tensor:
    # ids: [S] new tokens after the cached prefix -> logits [S, V] (float32)
    out = model(input_ids=torch.tensor([ids]), past_key_values=cache, use_cache=True)
    return out.logits[0].float()


def _probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return torch.softmax(logits / temperature, dim=-1)


def _sample(p: torch.Tensor, gen: torch.Generator) -> int:
    return int(torch.multinomial(p, 1, generator=gen))


@torch.no_grad()
def speculative_generate(target, draft, prompt: list[int], k: int, max_new: int, temperature: float,
                         gen: torch.Generator | None, draft_sampling: str = "probabilistic",
                         ) -> tuple[list[int], list[int], list[float]]:
    """Generate at least ``max_new`` tokens after ``prompt``.

    The first token comes from the target's prefill; every later step drafts ``k`` tokens and verifies them.
    Returns the tokens, the accepted drafts per step and, per step, the probability that the first draft
    is accepted given the context (``sum_x min(p(x), q(x))``; greedy: 1 if the argmaxes agree, else 0).

    ``draft_sampling="greedy"`` (vLLM's default ``draft_sample_method``) drafts the drafter's argmax even
    when sampling, i.e. ``q`` is one-hot: a draft is accepted with probability ``p(x)``.
    """
    from transformers import DynamicCache

    greedy = temperature == 0
    seq = list(prompt)
    t_cache, d_cache = DynamicCache(), DynamicCache()
    # prefill: the target's pass over the prompt gives the first token (no speculation, as in vLLM);
    # from here on both caches hold every token of seq but the last
    logits = _forward(target, seq, t_cache)[-1]
    seq.append(int(torch.argmax(logits)) if greedy else _sample(_probs(logits, temperature), gen))
    _forward(draft, seq[:-1], d_cache)
    accepted: list[int] = []
    first_prob: list[float] = []
    while len(seq) - len(prompt) < max_new:
        # draft k tokens: feed what the draft cache lacks (1 token, or 2 after a full acceptance)
        feed = seq[d_cache.get_seq_length():]
        drafts: list[int] = []
        qs: list[torch.Tensor] = []
        for _ in range(k):
            logits = _forward(draft, feed, d_cache)[-1]
            if greedy:
                tok = int(torch.argmax(logits))
            elif draft_sampling == "greedy":
                tok = int(torch.argmax(logits))
                qs.append(torch.nn.functional.one_hot(torch.tensor(tok), logits.shape[-1]).float())
            else:
                q = _probs(logits, temperature)
                tok = _sample(q, gen)
                qs.append(q)
            drafts.append(tok)
            feed = [tok]
        # verify: one target pass over the last token and the k drafts -> k + 1 distributions
        logits = _forward(target, [seq[-1], *drafts], t_cache)  # [k+1, V]
        a = 0
        if greedy:
            best = torch.argmax(logits, dim=-1).tolist()
            first_prob.append(float(drafts[0] == best[0]))
            while a < k and drafts[a] == best[a]:
                a += 1
            new = best[a]
        else:
            ps = _probs(logits, temperature)
            first_prob.append(float(torch.minimum(ps[0], qs[0]).sum()))
            while a < k:
                p_x, q_x = float(ps[a, drafts[a]]), float(qs[a][drafts[a]])
                if float(torch.rand((), generator=gen)) * q_x >= p_x:  # reject with prob 1 - min(1, p/q)
                    break
                a += 1
            if a == k:
                new = _sample(ps[k], gen)
            else:
                residual = torch.clamp(ps[a] - qs[a], min=0)
                total = float(residual.sum())
                new = _sample(residual / total if total > 0 else ps[a], gen)
        seq.extend(drafts[:a])
        seq.append(new)
        accepted.append(a)
        _crop(t_cache, len(seq) - 1)
        _crop(d_cache, len(seq) - 1)
    return seq[len(prompt):], accepted, first_prob


def _crop(cache, length: int) -> None:
    """Keep the first ``length`` cached positions (a negative ``crop`` removes from the end)."""
    extra = cache.get_seq_length() - length
    if extra > 0:
        cache.crop(-extra)


def prompt_seed(seed: int, prompt_index: int) -> int:
    """Each prompt has its own generator, so a subset of prompts reproduces the full run's draws."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{prompt_index}".encode()).digest()[:8], "little") >> 1


def measure_pair(target_dir: str | Path, draft_dir: str | Path, prompts: list[str], k: int, temperature: float,
                 max_new: int, seed: int = 0, prompt_tokens: int | None = None,
                 progress: Callable[[int], None] | None = None, threads: int | None = 1,
                 draft_sampling: str = "probabilistic") -> PairRun:
    """Run speculative decoding of ``draft`` against ``target`` on each prompt; record acceptance."""
    require(1 <= k <= 64, "k", "must be in [1, 64]", k)
    require(temperature >= 0 and np.isfinite(temperature), "temperature", "must be a finite number >= 0", temperature)
    require(max_new >= 1, "max-tokens", "must be >= 1", max_new)
    require(len(prompts) > 0, "prompts", "need at least one prompt")
    require(draft_sampling in DRAFT_SAMPLING, "draft-sampling", f"must be one of {', '.join(DRAFT_SAMPLING)}",
            draft_sampling)
    if threads:
        torch.set_num_threads(threads)
    target, draft = load_model(target_dir, "--target"), load_model(draft_dir, "--draft")
    vt, vd = target.config.vocab_size, draft.config.vocab_size
    require(vt == vd, "--draft", f"must share the target's vocabulary (target has {vt} entries)", vd)
    tok = load_tokenizer(target_dir, "--target")
    limit = min(target.config.max_position_embeddings, draft.config.max_position_embeddings)
    encoded = []
    for i, text in enumerate(prompts):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        if prompt_tokens is not None:
            ids = ids[:prompt_tokens]
        require(len(ids) >= 1, "prompts", f"prompt {i} encodes to no tokens", text)
        require(len(ids) + max_new + k + 1 <= limit, "max-tokens",
                f"prompt {i} ({len(ids)} tokens) + max tokens + k + 1 must fit the models' {limit} positions",
                max_new)
        encoded.append(ids)
    t0 = time.monotonic()
    accepted, first, generated = [], [], []
    for i, ids in enumerate(encoded):
        gen = None
        if temperature > 0:
            gen = torch.Generator().manual_seed(prompt_seed(seed, i))
        out, acc, prob = speculative_generate(target, draft, ids, k, max_new, temperature, gen, draft_sampling)
        accepted.append(np.asarray(acc, dtype=np.int64))
        first.append(np.asarray(prob))
        generated.append(len(out))
        if progress is not None:
            progress(1)
    info = {"target_parameters": sum(p.numel() for p in target.parameters()),
            "draft_parameters": sum(p.numel() for p in draft.parameters()),
            "torch": torch.__version__, "threads": torch.get_num_threads(), "dtype": "float32", "device": "cpu",
            "draft_sampling": draft_sampling if temperature > 0 else "greedy"}
    return PairRun(k, float(temperature), accepted, first, [len(e) for e in encoded], generated, time.monotonic() - t0,
                   seed, info)


__all__ = ["DRAFT_SAMPLING", "PairRun", "load_model", "load_tokenizer", "measure_pair", "prompt_seed", "speculative_generate"]
