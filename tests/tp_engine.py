"""One engine of ``tests/test_psd_tp_vllm.py``, in a fresh Python: the target at tensor parallelism TP on
vLLM's CPU build (TP > 1: worker processes over gloo), greedy; PSD's drafter in its own process. Prints one
JSON line: tokens, counters, accepted drafts per verified row, facts.

    python tests/tp_engine.py TARGET_DIR DRAFT_DIR POLICY TP [SYNTHETIC_ALPHA]
"""

import json
import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")  # 2 workers on one NUMA node: no auto-binding

import numpy as np  # noqa: E402

K = 3


def main(target: str, draft: str, policy: str, tp: str, alpha: str | None = None) -> None:
    from minedraft.acceptance import AcceptanceCurve
    from minedraft.executor.engine import Engine, EngineSpec
    from minedraft.executor.models import resolve_model
    from minedraft.executor.run import run_policy
    from minedraft.workload import Requests

    t, d = resolve_model(target, "--target"), resolve_model(draft, "--draft")
    plugin = None
    if policy in ("psd", "pearl"):
        plugin = {"mode": policy, "record": True}
        if alpha is not None:
            plugin |= {"accept_curve": AcceptanceCurve.geometric(float(alpha), K).to_json(), "synthetic_seed": 5}
    spec = EngineSpec(t, d if policy != "ar" else None, K if policy != "ar" else 0, max_num_seqs=4, max_model_len=512,
                      kv_cache_memory_bytes=32 << 20, dtype="float32", tensor_parallel_size=int(tp), plugin=plugin)
    rng = np.random.default_rng(7)
    n = 12 if alpha is not None else 8
    req = Requests(arrival=np.zeros(n), prompt_len=rng.integers(16, 40, n).astype(np.int64),
                   output_len=rng.integers(24, 48, n).astype(np.int64))
    records: list[dict] = []
    with Engine(spec) as e:
        res = run_policy(e, policy, req, records.append, online=False, seed=3, keep_tokens=True,
                         header_config={"test": True}, num_gpus=int(tp))
        facts = e.facts
    accepted = [a for r in records if r.get("type") == "op" and r.get("op") == "verify" for a in r["accepted"]]
    print("RESULT " + json.dumps({"tokens": {str(k): v for k, v in (res.tokens or {}).items()},
                                  "spec_decode": res.spec_decode, "finished": res.finished,
                                  "mismatched_steps": res.mismatched_steps, "accepted": accepted,
                                  "tensor_parallel_size": facts.get("tensor_parallel_size"),
                                  "executor_backend": facts.get("executor_backend")}), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
