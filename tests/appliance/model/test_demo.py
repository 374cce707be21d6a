"""The demo model: the shipped trained checkpoint, covers every V4 part, loads in transformers, tokenizer
has V4's specials; and the random-checkpoint generator tests use is deterministic."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from tokenizers import Tokenizer

from appliance.model import demo as demo_module
from appliance.model import demo_data
from appliance.model.bundle import SPECIAL_TOKENS, load_bundle
from appliance.model.checkpoint import open_checkpoint
from appliance.model.demo import (
    DEMO_NAME,
    DEMO_VERSION,
    RANDOM_CONFIG,
    SHIPPED_CHECKPOINT,
    build_demo,
    write_demo_checkpoint,
    write_random_checkpoint,
)
from shared.errors import ModelError
from tests.helpers.v4_onnx import StageRunner

KEY = Ed25519PrivateKey.from_private_bytes(bytes(32))


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "demo"
    build_demo(out, signing_key=KEY)
    return out


def test_demo_checkpoint_is_the_shipped_one(demo: Path) -> None:
    for name in ("model.safetensors", "tokenizer.json", "config.json", "training.json"):
        assert (demo / "checkpoint" / name).read_bytes() == (SHIPPED_CHECKPOINT / name).read_bytes(), name


def test_shipped_checkpoint_is_small_and_records_its_data() -> None:
    assert (SHIPPED_CHECKPOINT / "model.safetensors").stat().st_size <= 16 * 2**20
    record = json.loads((SHIPPED_CHECKPOINT / "training.json").read_text())
    assert record["held_out_files"] == list(demo_data.HELD_OUT_FILES)
    assert record["finished"] is True
    assert not set(demo_data.HELD_OUT_FILES) & set(demo_data.training_files())
    if record["python"] == demo_data.python_version():
        # Same Python, same corpus: what a retrain here would read is what the model was trained on.
        assert demo_data.corpus_digest(demo_data.training_files()) == record["corpus_digest"]


def test_missing_shipped_model_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo_module, "SHIPPED_CHECKPOINT", tmp_path / "nowhere")
    with pytest.raises(ModelError, match="demo model is missing from this install"):
        write_demo_checkpoint(tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_random_checkpoint_is_deterministic(tmp_path: Path) -> None:
    first = write_random_checkpoint(tmp_path / "a", RANDOM_CONFIG)
    again = write_random_checkpoint(tmp_path / "b", RANDOM_CONFIG)
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (first / name).read_bytes() == (again / name).read_bytes(), name


def test_demo_covers_every_v4_part(demo: Path) -> None:
    config = open_checkpoint(demo / "checkpoint").config
    assert set(config.layer_types) == {
        "sliding_attention", "compressed_sparse_attention", "heavily_compressed_attention"}
    assert set(config.mlp_layer_types) == {"hash_moe", "moe"}
    assert config.hc_mult > 1
    assert config.rope_compress.rope_type == "yarn"


def test_demo_tokenizer_has_v4_specials_and_round_trips_utf8(demo: Path) -> None:
    tok = Tokenizer.from_file(str(demo / "checkpoint" / "tokenizer.json"))
    config = open_checkpoint(demo / "checkpoint").config
    assert tok.get_vocab_size() == config.vocab_size
    assert tok.token_to_id(SPECIAL_TOKENS["bos"]) == config.bos_token_id == 0
    assert tok.token_to_id(SPECIAL_TOKENS["eos"]) == 1 and config.eos_token_id == (1,)
    for text in SPECIAL_TOKENS.values():
        ids = tok.encode(f"x{text}y").ids
        assert tok.token_to_id(text) in ids and len(ids) == 3, text  # never split
    for text in ["def f(x):\n\treturn x  # ok", "你好，世界 🚀 ünïcödé ∀x", "\x00\x7f odd bytes \u2028", ""]:
        assert tok.decode(tok.encode(text).ids) == text


def test_transformers_loads_the_demo_checkpoint(demo: Path) -> None:
    import torch
    from transformers import DeepseekV4ForCausalLM

    model = DeepseekV4ForCausalLM.from_pretrained(demo / "checkpoint", dtype=torch.float32)
    ckpt = open_checkpoint(demo / "checkpoint")
    state = model.state_dict()
    assert set(state) == set(ckpt.names())
    for name in ckpt.names():
        np.testing.assert_array_equal(state[name].numpy(), ckpt.tensor(name), err_msg=name)


def test_demo_bundle_is_signed_and_matches_the_reference(demo: Path) -> None:
    import torch
    from transformers import DeepseekV4ForCausalLM

    bundle = load_bundle(demo / "bundle", trusted_keys=[KEY.public_key()])
    assert (bundle.name, bundle.version) == (DEMO_NAME, DEMO_VERSION)
    assert bundle.info["special_tokens"]["eos"] == 1
    import onnx

    graphs = [onnx.load(str(p)) for p in bundle.graph_paths]
    runner = StageRunner(graphs, bundle.io, max_context=256)
    model = DeepseekV4ForCausalLM.from_pretrained(demo / "checkpoint", dtype=torch.float32).eval()
    # 19 tokens cross CSA (4) and HCA (16) boundaries while every compressed entry is within the
    # indexer's top-k, where transformers' full forward is the causal definition (docs/bundle.md).
    ids = np.array([0, 2, *range(20, 36), 3], dtype=np.int64)
    logits = runner.step(ids[None], np.array([0]))[0]
    with torch.no_grad():
        ref = model(torch.from_numpy(ids)[None]).logits[0, -1].numpy()
    np.testing.assert_allclose(logits, ref, atol=1e-4, rtol=0)


def test_demo_bundle_runs_what_the_graph_builder_builds(demo: Path) -> None:
    """Past the window and the indexer's top-k: the bundle on disk computes what build_graphs makes in memory."""
    import onnx

    from appliance.model.graph import build_graphs

    bundle = load_bundle(demo / "bundle", trusted_keys=[KEY.public_key()])
    on_disk = StageRunner([onnx.load(str(p)) for p in bundle.graph_paths], bundle.io, max_context=256)
    in_memory = StageRunner(build_graphs(open_checkpoint(demo / "checkpoint")), bundle.io, max_context=256)
    ids = np.array([0, 2, *range(20, 100), 3, 5], dtype=np.int64)
    np.testing.assert_array_equal(on_disk.prefill_and_decode(ids, 60), in_memory.prefill_and_decode(ids, 60))
