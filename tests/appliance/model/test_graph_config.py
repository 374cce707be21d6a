"""V4Config: parsing transformers' and DeepSeek's config.json, and naming the key that is wrong."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from transformers.models.deepseek_v4.modeling_deepseek_v4 import DeepseekV4RotaryEmbedding

from appliance.model.config import CSA, HCA, SLIDING, V4Config
from shared.errors import ModelError
from tests.helpers.v4_reference import tiny_config


def test_reads_what_transformers_writes_and_round_trips() -> None:
    hf = tiny_config()
    config = V4Config.from_dict(hf.to_dict())
    assert config.layer_types == (SLIDING, CSA, HCA, CSA)
    assert config.compress_rate(1) == 4 and config.compress_rate(2) == 8 and config.compress_rate(0) == 0
    assert config.qk_rope_head_dim == hf.qk_rope_head_dim
    assert V4Config.from_dict(config.to_dict()) == config


def test_rope_frequencies_match_transformers() -> None:
    hf = tiny_config()
    rotary = DeepseekV4RotaryEmbedding(hf)
    config = V4Config.from_dict(hf.to_dict())
    rd = config.qk_rope_head_dim
    assert config.rope_compress.rope_type == "yarn"
    np.testing.assert_array_equal(config.rope_compress.inv_freq(rd), rotary.compress_inv_freq.numpy())
    np.testing.assert_array_equal(config.rope_main.inv_freq(rd), rotary.main_inv_freq.numpy())


def test_legacy_release_keys_fold_like_transformers() -> None:
    raw: dict[str, Any] = {
        "model_type": "deepseek_v4",
        "vocab_size": 256,
        "hidden_size": 64,
        "moe_intermediate_size": 32,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "head_dim": 32,
        "o_groups": 2,
        "compress_ratios": [0, 4, 128, 4],
        "num_hash_layers": 1,
        "qk_rope_head_dim": 8,
        "rope_scaling": {"type": "yarn", "factor": 16, "original_max_position_embeddings": 65536},
    }
    config = V4Config.from_dict(raw)
    assert config.layer_types == (SLIDING, CSA, HCA, CSA)
    assert config.mlp_layer_types == ("hash_moe", "moe", "moe", "moe")
    assert config.qk_rope_head_dim == 8
    assert config.rope_compress.factor == 16 and config.rope_main.rope_type == "default"


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"model_type": "deepseek_v3"}, "model_type"),
        ({"num_hidden_layers": "four"}, "num_hidden_layers"),
        (
            {
                "layer_types": [
                    "sliding_attention",
                    "full_attention",
                    "sliding_attention",
                    "sliding_attention",
                ]
            },
            "layer_types",
        ),
        ({"mlp_layer_types": ["moe"]}, "mlp_layer_types"),
        ({"num_key_value_heads": 2}, "num_key_value_heads"),
        ({"scoring_func": "softmax"}, "scoring_func"),
        ({"o_groups": 3}, "o_groups"),
        ({"compress_rates": {"compressed_sparse_attention": 0}}, "compress_rates"),
        (
            {"rope_parameters": {"main": {"rope_type": "default"}, "compress": {"rope_type": "longrope"}}},
            "rope_type",
        ),
        (
            {"rope_parameters": {"main": {"rope_type": "default"}, "compress": {"rope_type": "yarn"}}},
            "factor",
        ),
        ({"hc_eps": float("nan")}, "hc_eps"),
    ],
)
def test_unsupported_values_name_the_key(change: dict[str, Any], named: str) -> None:
    raw = tiny_config().to_dict()
    raw.update(change)
    with pytest.raises(ModelError, match=named):
        V4Config.from_dict(raw)


def test_missing_required_key_is_named() -> None:
    raw = tiny_config().to_dict()
    del raw["hidden_size"]
    with pytest.raises(ModelError, match="'hidden_size'"):
        V4Config.from_dict(raw)
