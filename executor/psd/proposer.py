"""The target's ``custom_class`` proposer: it proposes nothing.

``speculative_config={"method": "custom_class", "model": "minedraft.executor.psd.proposer.NullProposer",
"num_speculative_tokens": k}`` gives the target what PSD needs and nothing else: vLLM's V1 runner with
sync scheduling (on both 0.26 and 0.32), its rejection sampler verifying the drafts the scheduler puts in
``request.spec_token_ids``, ``num_speculative_tokens`` buffers, and no draft model inside the target's
process or KV pool. The drafts come from the drafter process, through the scheduler.
"""

from __future__ import annotations


class NullProposer:
    """vLLM calls ``propose`` after each verification; PSD's drafts are made elsewhere."""

    def __init__(self, vllm_config) -> None:
        self.vllm_config = vllm_config

    def load_model(self, *args, **kwargs) -> None:
        pass

    def propose(self, sampled_token_ids, *args, **kwargs) -> list[list[int]]:
        return [[] for _ in sampled_token_ids]
