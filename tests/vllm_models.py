"""Tiny HF checkpoints for the vLLM tests (real weights on disk, so engines at any TP load the same ones)."""


def save_pair(root, cfg, noise, init=0.2, seed=0, independent=False):
    """A random HF Qwen3 target and a drafter: the target plus noise, or (independent) other weights."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    hf = Qwen3Config(**{k: v for k, v in cfg.items() if k not in ("architectures", "model_type", "torch_dtype")},
                     initializer_range=init)
    torch.manual_seed(seed)
    target = Qwen3ForCausalLM(hf)
    draft = Qwen3ForCausalLM(hf)
    if not independent:
        draft.load_state_dict(target.state_dict())
        with torch.no_grad():
            for p in draft.parameters():
                p.add_(noise * p.std() * torch.randn_like(p))
    paths = {}
    for name, model in (("target", target), ("draft", draft)):
        model.to(torch.float32).save_pretrained(root / name)
        paths[name] = str(root / name)
    return paths
