"""The demo model: deterministic, covers every V4 part, loads in transformers, tokenizer has V4's specials."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from tokenizers import Tokenizer

from appliance.model.bundle import SPECIAL_TOKENS, load_bundle
from appliance.model.checkpoint import open_checkpoint
from appliance.model.demo import DEMO_NAME, DEMO_VERSION, build_demo, write_demo_checkpoint
from tests.helpers.v4_onnx import StageRunner

KEY = Ed25519PrivateKey.from_private_bytes(bytes(32))


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "demo"
    build_demo(out, signing_key=KEY)
    return out


def test_demo_is_deterministic(demo: Path, tmp_path: Path) -> None:
    again = write_demo_checkpoint(tmp_path / "again")
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (again / name).read_bytes() == (demo / "checkpoint" / name).read_bytes(), name


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
    from transformers import DeepseekV4ForCausalLM

    model = DeepseekV4ForCausalLM.from_pretrained(demo / "checkpoint")
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
    model = DeepseekV4ForCausalLM.from_pretrained(demo / "checkpoint").eval()
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
