"""The transformers DeepSeek-V4 reference on small random configs, for model, bundle and engine tests.

Test-only (imports torch and transformers). Functions:

    tiny_config(**overrides) -> DeepseekV4Config
        A small random-model config (initializer_range 0.1 so logits are O(1); hidden 64, 4 layers: sliding, CSA, HCA, CSA; hash + top-k MoE;
        hc_mult 2; vocab 256; window 8; CSA rate 4; HCA rate 8). Overrides replace any field.
    reference_model(config, seed=0) -> DeepseekV4ForCausalLM
        float32, eval mode, weights drawn with torch.manual_seed(seed); also randomises the parameters
        transformers initialises to constants (sinks, position biases, HC bases/scales, router bias,
        hash table) so that every code path matters.
    save_checkpoint(model, directory) -> Path
        save_pretrained (safetensors) into ``directory``; returns it.
    StateDictCheckpoint(model)
        The `.config` / `.tensor(name)` view the graph builder reads, over the model's state_dict
        (transformers names; float32, int64 for the hash table). save_pretrained writes DeepSeek's
        release names, so reading a saved directory is appliance.model.checkpoint's job.
    reference_logits(model, ids) -> np.ndarray [T, vocab]
        One full forward over ``ids`` (no cache carried out).
    reference_stepwise_logits(model, ids, prefill) -> np.ndarray [T - prefill + 1, vocab]
        Prefill ``ids[:prefill]`` with a cache, then one token at a time (teacher forced); row 0 is
        the prefill's last-position logits.
    reference_greedy(model, prompt, n) -> list[int]
        ``n`` greedy tokens with the reference's cached decode.
    lowest_index_ties()
        Context manager: while active, the reference's Lightning Indexer breaks ties between equal
        scores by the lower entry index (ONNX TopK's rule, which the graphs follow). Without it,
        torch.topk resolves ties differently for a full row and a one-token row, which is the whole
        of the reference's "cached decode != full forward on CSA layers" inconsistency: the Lightning
        Indexer's scores are sums of ReLUs, so entries whose every head scores <= 0 tie at exactly 0.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import DeepseekV4Config, DeepseekV4ForCausalLM
from transformers.models.deepseek_v4 import modeling_deepseek_v4 as _v4

from appliance.model.config import V4Config

__all__ = [
    "StateDictCheckpoint",
    "lowest_index_ties",
    "reference_greedy",
    "reference_logits",
    "reference_model",
    "reference_stepwise_logits",
    "save_checkpoint",
    "tiny_config",
]


def tiny_config(**overrides: Any) -> DeepseekV4Config:
    fields: dict[str, Any] = {
        "vocab_size": 256,
        "hidden_size": 64,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "head_dim": 32,
        "q_lora_rank": 32,
        "o_groups": 2,
        "o_lora_rank": 16,
        "moe_intermediate_size": 32,
        "n_routed_experts": 8,
        "num_experts_per_tok": 2,
        "index_n_heads": 2,
        "index_head_dim": 16,
        "index_topk": 3,
        "sliding_window": 8,
        "compress_rates": {"compressed_sparse_attention": 4, "heavily_compressed_attention": 8},
        "layer_types": [
            "sliding_attention",
            "compressed_sparse_attention",
            "heavily_compressed_attention",
            "compressed_sparse_attention",
        ],
        "mlp_layer_types": ["hash_moe", "moe", "moe", "moe"],
        "partial_rotary_factor": 0.25,
        "hc_mult": 2,
        "max_position_embeddings": 4096,
        "initializer_range": 0.1,
        "rope_parameters": {
            "rope_type": "yarn",
            "factor": 16.0,
            "original_max_position_embeddings": 256,
            "beta_fast": 32,
            "beta_slow": 1,
        },
    }
    fields.update(overrides)
    n = fields["num_hidden_layers"]
    fields["layer_types"] = list(fields["layer_types"])[:n]
    fields["mlp_layer_types"] = list(fields["mlp_layer_types"])[:n]
    return DeepseekV4Config(**fields)


def reference_model(config: DeepseekV4Config, seed: int = 0) -> DeepseekV4ForCausalLM:
    torch.manual_seed(seed)
    model = DeepseekV4ForCausalLM(config).float().eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            # transformers zero/one-initialises these; random values exercise their code paths.
            if name.endswith(("sinks", "position_bias", ".base", "hc_base")):
                param.copy_(torch.randn(param.shape, generator=gen) * 0.5)
            elif name.endswith(("scale", "norm.weight")):
                param.copy_(1.0 + torch.randn(param.shape, generator=gen) * 0.1)
        for name, buf in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                buf.copy_(torch.randn(buf.shape, generator=gen) * 0.1)
            elif name.endswith("tid2eid"):
                n_experts = config.n_routed_experts
                rows = [torch.randperm(n_experts, generator=gen)[: buf.shape[1]] for _ in range(buf.shape[0])]
                buf.copy_(torch.stack(rows))
    return model


def save_checkpoint(model: DeepseekV4ForCausalLM, directory: Path) -> Path:
    directory = Path(directory)
    model.save_pretrained(directory, safe_serialization=True)
    return directory


class StateDictCheckpoint:
    """``.config`` + ``.tensor(name)`` over a reference model's state_dict (numpy)."""

    def __init__(self, model: DeepseekV4ForCausalLM) -> None:
        self.config = V4Config.from_dict(model.config.to_dict())
        self._tensors = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}

    def tensor(self, name: str) -> np.ndarray:
        value = self._tensors[name]
        return value if value.dtype == np.int64 else value.astype(np.float32)

    def names(self) -> list[str]:
        return list(self._tensors)


def reference_logits(model: DeepseekV4ForCausalLM, ids: list[int] | np.ndarray) -> np.ndarray:
    with torch.no_grad():
        out = model(torch.tensor(np.asarray(ids), dtype=torch.long)[None], use_cache=False)
    return out.logits[0].float().numpy()


def reference_stepwise_logits(
    model: DeepseekV4ForCausalLM, ids: list[int] | np.ndarray, prefill: int
) -> np.ndarray:
    ids_t = torch.tensor(np.asarray(ids), dtype=torch.long)[None]
    rows = []
    with torch.no_grad():
        out = model(ids_t[:, :prefill], use_cache=True)
        cache = out.past_key_values
        rows.append(out.logits[0, -1])
        for t in range(prefill, ids_t.shape[1]):
            out = model(ids_t[:, t : t + 1], past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            rows.append(out.logits[0, -1])
    return torch.stack(rows).float().numpy()


def reference_greedy(model: DeepseekV4ForCausalLM, prompt: list[int], n: int) -> list[int]:
    ids = torch.tensor([prompt], dtype=torch.long)
    out_tokens: list[int] = []
    with torch.no_grad():
        out = model(ids, use_cache=True)
        cache = out.past_key_values
        for _ in range(n):
            token = int(out.logits[0, -1].argmax())
            out_tokens.append(token)
            out = model(torch.tensor([[token]]), past_key_values=cache, use_cache=True)
            cache = out.past_key_values
    return out_tokens


class _TopK:
    def __init__(self, values: torch.Tensor, indices: torch.Tensor) -> None:
        self.values = values
        self.indices = indices


def _stable_topk(
    self: torch.Tensor, k: int, dim: int = -1, largest: bool = True, sorted: bool = True
) -> _TopK:
    values, indices = torch.sort(self, dim=dim, descending=largest, stable=True)
    return _TopK(values.narrow(dim, 0, k), indices.narrow(dim, 0, k))


@contextmanager
def lowest_index_ties() -> Iterator[None]:
    original = _v4.DeepseekV4Indexer.forward

    def forward(self: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        saved = torch.Tensor.topk
        torch.Tensor.topk = _stable_topk  # type: ignore[method-assign,assignment]
        try:
            return original(self, *args, **kwargs)
        finally:
            torch.Tensor.topk = saved  # type: ignore[method-assign]

    _v4.DeepseekV4Indexer.forward = forward  # type: ignore[method-assign]
    try:
        yield
    finally:
        _v4.DeepseekV4Indexer.forward = original  # type: ignore[method-assign]
