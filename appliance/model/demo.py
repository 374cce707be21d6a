"""The embedded demo model: a small trained V4-architecture code model shipped in the package, and
the random-weight generator tests use for models of any shape.

``enclave model demo OUT_DIR`` writes ``OUT_DIR/checkpoint`` (config.json, model.safetensors,
tokenizer.json, generation_config.json, training.json: what ``save_pretrained`` writes, which
transformers loads as it is) and ``OUT_DIR/bundle`` built from it. ``enclave demo`` serves that
bundle, so a newcomer needs no download.

The checkpoint is data in the package (``demo_model/``, bf16, about 13 MB), trained by
``scripts/train_demo_model.py`` on the standard library's source: docs/demo-model.md is its model
card. Building the bundle needs no torch. Its architecture covers every V4 part: sliding, CSA and HCA
layers, hash-routed and top-k MoE, hyper-connections.

:func:`write_random_checkpoint` generates a checkpoint for any config with numpy from fixed seeds
(deterministic) and a small byte-level BPE with V4's specials; it is for tests and benches that need
a model of a given shape, not for users: its text is noise.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shared.errors import ModelError

from .bundle import SPECIAL_TOKENS, build_bundle, staged_directory
from .checkpoint import expected_tensors
from .config import V4Config
from .progress import Progress
from .safetensors_io import TensorSpec, write_file

__all__ = [
    "DEMO_NAME",
    "DEMO_VERSION",
    "RANDOM_CONFIG",
    "SHIPPED_CHECKPOINT",
    "SPECIALS_IN_ID_ORDER",
    "DemoPaths",
    "build_demo",
    "write_demo_checkpoint",
    "write_random_checkpoint",
]

DEMO_NAME = "deepseek-v4-demo"
DEMO_VERSION = 3  # 1 was the random-weight model; 2 the trained one before its experts were trained for int4
SHIPPED_CHECKPOINT = Path(__file__).with_name("demo_model")
_SHIPPED_FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "generation_config.json",
    "training.json",
)
VOCAB_SIZE = 512  # the random checkpoints' tokenizer
SEED = 20260424

# The shape of the random checkpoints (every V4 part, tiny); tests and benches override fields.
RANDOM_CONFIG: dict[str, Any] = {
    "architectures": ["DeepseekV4ForCausalLM"],
    "model_type": "deepseek_v4",
    "vocab_size": VOCAB_SIZE,
    "hidden_size": 64,
    "moe_intermediate_size": 32,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 1,
    "head_dim": 32,
    "q_lora_rank": 32,
    "o_groups": 2,
    "o_lora_rank": 32,
    "n_routed_experts": 8,
    "n_shared_experts": 1,
    "num_experts_per_tok": 2,
    "scoring_func": "sqrtsoftplus",
    "norm_topk_prob": True,
    "routed_scaling_factor": 1.5,
    "index_n_heads": 2,
    "index_head_dim": 16,
    "index_topk": 4,
    "sliding_window": 32,
    "compress_rates": {"compressed_sparse_attention": 4, "heavily_compressed_attention": 16},
    "layer_types": [
        "sliding_attention",
        "compressed_sparse_attention",
        "heavily_compressed_attention",
        "compressed_sparse_attention",
    ],
    "mlp_layer_types": ["hash_moe", "moe", "moe", "moe"],
    "hc_mult": 2,
    "hc_sinkhorn_iters": 20,
    "hc_eps": 1e-6,
    "partial_rotary_factor": 0.5,
    "rope_theta": 10000.0,
    "compress_rope_theta": 160000.0,
    "rope_parameters": {
        "rope_type": "yarn",
        "factor": 16.0,
        "original_max_position_embeddings": 512,
        "beta_fast": 32,
        "beta_slow": 1,
    },
    "max_position_embeddings": 8192,
    "swiglu_limit": 10.0,
    "rms_norm_eps": 1e-6,
    "hidden_act": "silu",
    "bos_token_id": 0,
    "eos_token_id": 1,
    "pad_token_id": 9,
    "tie_word_embeddings": False,
    "num_nextn_predict_layers": 0,
    "dtype": "float32",
}

# The BOS/EOS ids V4 uses come first; the trainer assigns special tokens ids in this order.
SPECIALS_IN_ID_ORDER = [
    SPECIAL_TOKENS[k]
    for k in (
        "bos",
        "eos",
        "user",
        "assistant",
        "think_begin",
        "think_end",
        "fim_begin",
        "fim_hole",
        "fim_end",
        "pad",
    )
]


@dataclass(frozen=True)
class DemoPaths:
    checkpoint: Path
    bundle: Path


_CORPUS_WORDS = (
    "def class return import from self if else elif for while in not and or None True False "
    "yield async await with as try except finally raise lambda print len range list dict str "
    "int float value name path file data model token user assistant request response error "
    "enclave appliance audit generate prompt context project index the a of to is that this "
    "function variable result test assert"
)


def _corpus() -> list[str]:
    """A fixed, generated corpus of code and prose: the tokenizer's merges come from it alone."""
    words = _CORPUS_WORDS.split()
    lines: list[str] = []
    rng = np.random.default_rng(SEED)
    for _ in range(400):
        picked = [words[i] for i in rng.integers(0, len(words), size=int(rng.integers(3, 9)))]
        indent = "    " * int(rng.integers(0, 3))
        lines.append(indent + " ".join(picked))
        lines.append(
            f"{indent}{picked[0]}_{picked[-1]} = {picked[1]}({picked[2]}, {int(rng.integers(0, 100))})"
        )
    lines += ["你好，世界", "¿Qué tal? Ça va très bien — ünïcödé", "λx. x + 1  # ≠ ≤ ≥ → ∀", "🙂 🚀 ✓"]
    return lines


def write_tokenizer(path: Path) -> None:
    """Train the demo's byte-level BPE (deterministic: same corpus, same merges) and save it."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=1,
        special_tokens=[AddedToken(t, special=True, normalized=False) for t in SPECIALS_IN_ID_ORDER],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    tok.save(str(path))


def _demo_tensor(name: str, shape: tuple[int, ...], rng: np.random.Generator, config: V4Config) -> np.ndarray:
    """Initialise one tensor; values chosen so every path (sinks, biases, hyper-connections) matters."""
    if name.endswith("tid2eid"):
        # Distinct experts per token, as the released hash table has.
        order = np.argsort(rng.random((shape[0], config.n_routed_experts)), axis=1)
        return order[:, : shape[1]].astype(np.int64)
    if name.endswith(("norm.weight", "layernorm.weight")):
        return (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
    if name.endswith(("sinks", "position_bias", ".base", "hc_base", "e_score_correction_bias")):
        return (0.5 * rng.standard_normal(shape)).astype(np.float32)
    if name.endswith(("scale", "hc_scale")):
        return (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
    if name.endswith(("embed_tokens.weight",)):
        return rng.standard_normal(shape).astype(np.float32)
    # Projections: unit-variance outputs for unit-variance inputs.
    fan_in = shape[-1]
    return (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)


def write_random_checkpoint(out: Path, raw_config: dict[str, Any], *, seed: int = SEED) -> Path:
    """A random-weight checkpoint for ``raw_config`` at ``out`` (which must not exist), with the demo
    tokenizer. Tensors are generated and written one at a time, so any size fits in memory."""
    config = V4Config.from_dict(raw_config)
    if config.vocab_size < VOCAB_SIZE:
        raise ModelError(f"vocab_size {config.vocab_size} is below the demo tokenizer's {VOCAB_SIZE}")
    shapes = expected_tensors(config)
    with staged_directory(out) as root:
        specs = [TensorSpec(n, "I64" if n.endswith("tid2eid") else "F32", s) for n, s in shapes.items()]
        # One generator per tensor, seeded by position: any tensor can be regenerated alone.
        seeds = {spec.name: i for i, spec in enumerate(specs)}
        write_file(
            root / "model.safetensors",
            specs,
            lambda spec: _demo_tensor(
                spec.name, spec.shape, np.random.default_rng([seed, seeds[spec.name]]), config
            ),
            metadata={"format": "pt"},
        )
        (root / "config.json").write_text(json.dumps(raw_config, indent=2) + "\n", encoding="utf-8")
        generation = {"bos_token_id": 0, "eos_token_id": 1, "do_sample": True, "temperature": 0.7}
        (root / "generation_config.json").write_text(
            json.dumps(generation, indent=2) + "\n", encoding="utf-8"
        )
        write_tokenizer(root / "tokenizer.json")
    return out


def write_demo_checkpoint(out: Path) -> Path:
    """Copy the shipped demo checkpoint to ``out`` (which must not exist). Returns ``out``."""
    missing = [name for name in _SHIPPED_FILES if not (SHIPPED_CHECKPOINT / name).is_file()]
    if missing:
        raise ModelError(
            f"the demo model is missing from this install: {SHIPPED_CHECKPOINT / missing[0]} not found"
        )
    with staged_directory(out) as root:
        for name in _SHIPPED_FILES:
            shutil.copyfile(SHIPPED_CHECKPOINT / name, root / name)
    return out


def build_demo(
    out_dir: Path | str,
    *,
    signing_key: Ed25519PrivateKey | None = None,
    progress: Progress | None = None,
) -> DemoPaths:
    """``out_dir/checkpoint`` and ``out_dir/bundle`` (signed with ``signing_key`` or the per-user key)."""
    out = Path(out_dir)
    with staged_directory(out) as root:
        write_demo_checkpoint(root / "checkpoint")
        build_bundle(
            root / "checkpoint",
            root / "bundle",
            signing_key=signing_key,
            name=DEMO_NAME,
            version=DEMO_VERSION,
            progress=progress,
        )
    return DemoPaths(out / "checkpoint", out / "bundle")
