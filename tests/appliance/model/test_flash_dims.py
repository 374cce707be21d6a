"""V4-Flash's real per-tensor dimensions on CPU: a 3-layer slice (sliding window + hash MoE, CSA,
HCA) built into a bundle by the product's builder, loaded by the engine and run past the window,
against transformers on the same checkpoint — so a dimension-dependent bug (offsets, external data,
a reshape that only holds at small sizes) shows without a GPU.

Real: hidden 4096, 64 heads x 512 (RoPE on 64), q/o low ranks 1024, 8 output groups, the indexer's
64 heads x 128 and top-512, expert width 2048, 4 hyper-connection streams, window 128, compression 4
and 128 (transformers' DeepseekV4Config defaults, which are V4-Flash's config.json). Shrunk to fit a
CI box: 3 of 43 layers, 4 of 256 routed experts (top-2 of 6), and the vocabulary — 129,280 rows of
embedding and LM head would be 4.2 GB of float32 alone; the demo tokenizer's 512 keep it at ~3 GB.
"""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appliance.engine import LLMEngine, SamplingParams
from appliance.model.bundle import build_bundle, load_bundle
from appliance.model.demo import RANDOM_CONFIG, write_random_checkpoint
from tests.helpers.v4_reference import lowest_index_ties

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
FLASH: dict[str, object] = {
    **RANDOM_CONFIG,
    "hidden_size": 4096,
    "num_attention_heads": 64,
    "head_dim": 512,
    "partial_rotary_factor": 0.125,
    "q_lora_rank": 1024,
    "o_groups": 8,
    "o_lora_rank": 1024,
    "moe_intermediate_size": 2048,
    "n_routed_experts": 4,
    "num_experts_per_tok": 2,
    "index_n_heads": 64,
    "index_head_dim": 128,
    "index_topk": 512,
    "sliding_window": 128,
    "compress_rates": {"compressed_sparse_attention": 4, "heavily_compressed_attention": 128},
    "hc_mult": 4,
    "num_hidden_layers": 3,
    "layer_types": ["sliding_attention", "compressed_sparse_attention", "heavily_compressed_attention"],
    "mlp_layer_types": ["hash_moe", "moe", "moe"],
}
PROMPT = 300  # > the window (128) and > HCA's 128: both compressed caches hold entries
NEW = 3


@pytest.mark.slow
def test_flash_dims_build_load_and_decode_match_transformers(tmp_path: Path) -> None:
    import torch
    from transformers import DeepseekV4ForCausalLM

    ckpt = write_random_checkpoint(tmp_path / "ckpt", FLASH)
    # moe="ort": the portable path gathers each token's k expert matrices, T x k x 100 MB at these sizes.
    bundle_dir = build_bundle(ckpt, tmp_path / "bundle", moe="ort", signing_key=KEY, version=1)
    prompt = [0, *np.random.default_rng(3).integers(10, 500, PROMPT - 1).tolist()]

    engine = LLMEngine.from_bundle(
        load_bundle(bundle_dir, trusted_keys=[KEY.public_key()]), num_slots=1, max_context=512
    )
    engine.add_request(
        "flash", prompt, SamplingParams(temperature=0.0, max_tokens=NEW, ignore_eos=True, logprobs=1)
    )
    got: list[int] = []
    logprobs: list[float] = []
    while engine.has_work:
        for out in engine.step():
            assert out.delta.finish_reason != "error", out.error
            got.extend(out.delta.token_ids)
            logprobs.extend(lp.logprob for lp in out.delta.logprobs)
    del engine
    gc.collect()
    assert len(got) == NEW and np.isfinite(logprobs).all()

    model = DeepseekV4ForCausalLM.from_pretrained(ckpt, dtype=torch.float32).eval()
    ids = torch.tensor([prompt + got[:-1]])
    with lowest_index_ties(), torch.no_grad():
        ref = model(ids).logits[0, -NEW:].numpy()
    assert np.isfinite(ref).all()
    # The prefill's token, then each decode step's: the same top-1 as the reference at every step.
    assert got == ref.argmax(-1).tolist()
