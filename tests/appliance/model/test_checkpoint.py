"""open_checkpoint refuses bad input with a one-line ModelError naming the tensor, key or file."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from appliance.model.checkpoint import expected_tensors, open_checkpoint
from appliance.model.config import V4Config
from appliance.model.safetensors_io import SafetensorsFile, save_file
from shared.errors import ModelError
from tests.helpers.v4_release import TINY_CONFIG, make_reference, write_release, write_stacked


@pytest.fixture(scope="module")
def release_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("release")
    write_release(make_reference(), out, quantize=True, block=(16, 16))
    return out


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def _rewrite_shard(ckpt: Path, edit) -> None:  # type: ignore[no-untyped-def]
    index = json.loads((ckpt / "model.safetensors.index.json").read_text())
    shard = ckpt / "model-00001-of-00002.safetensors"
    f = SafetensorsFile(shard)
    tensors = [(n, f.read(n), f.info(n).dtype) for n in f.names()]
    tensors = edit(tensors)
    save_file(shard, tensors)
    names = {t[0] for t in tensors}
    index["weight_map"] = {k: v for k, v in index["weight_map"].items() if k in names or v != shard.name}
    index["weight_map"].update({n: shard.name for n in names})
    (ckpt / "model.safetensors.index.json").write_text(json.dumps(index))


def test_expected_tensors_match_transformers_state_dict() -> None:
    model = make_reference()
    config = V4Config.from_dict(model.config.to_dict())
    expected = expected_tensors(config)
    actual = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert expected == actual
    assert list(expected) == list(actual)


def test_opens_release_checkpoint(release_dir: Path) -> None:
    ckpt = open_checkpoint(release_dir)
    assert ckpt.config.num_hidden_layers == TINY_CONFIG["num_hidden_layers"]
    assert ckpt.tokenizer_path == release_dir / "tokenizer.json"
    assert ckpt.tensor("model.layers.0.mlp.gate.tid2eid").dtype == np.int64
    assert ckpt.total_bytes > 0


def test_missing_tensor_is_named(release_dir: Path, tmp_path: Path) -> None:
    ckpt = _copy(release_dir, tmp_path / "c")
    _rewrite_shard(ckpt, lambda ts: [t for t in ts if t[0] != "embed.weight"])
    with pytest.raises(ModelError, match=r"missing tensor model\.embed_tokens\.weight"):
        open_checkpoint(ckpt)


def test_missing_expert_is_named(release_dir: Path, tmp_path: Path) -> None:
    ckpt = _copy(release_dir, tmp_path / "c")
    index = json.loads((ckpt / "model.safetensors.index.json").read_text())
    shard_of = index["weight_map"]["layers.0.ffn.experts.1.w3.weight"]
    index["weight_map"] = {k: v for k, v in index["weight_map"].items() if not k.startswith("layers.0.ffn.experts.1.w3")}
    (ckpt / "model.safetensors.index.json").write_text(json.dumps(index))
    assert shard_of
    with pytest.raises(ModelError, match=r"missing tensor model\.layers\.0\.mlp\.experts\.1\.w3\.weight"):
        open_checkpoint(ckpt)


def test_misshapen_tensor_is_named(release_dir: Path, tmp_path: Path) -> None:
    ckpt = _copy(release_dir, tmp_path / "c")
    _rewrite_shard(ckpt, lambda ts: [(n, a[:-1] if n == "embed.weight" else a, c) for n, a, c in ts])
    with pytest.raises(ModelError, match=r"tensor embed\.weight .* has shape \[95, 64\], expected \[96, 64\]"):
        open_checkpoint(ckpt)


def test_unexpected_tensor_is_named(release_dir: Path, tmp_path: Path) -> None:
    ckpt = _copy(release_dir, tmp_path / "c")
    _rewrite_shard(ckpt, lambda ts: [*ts, ("layers.7.attn_norm.weight", np.ones(64, np.float32), "F32")])
    with pytest.raises(ModelError, match=r"unexpected tensor layers\.7\.attn_norm\.weight"):
        open_checkpoint(ckpt)


def test_truncated_shard_is_named(release_dir: Path, tmp_path: Path) -> None:
    ckpt = _copy(release_dir, tmp_path / "c")
    shard = ckpt / "model-00002-of-00002.safetensors"
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(ModelError, match=r"model-00002-of-00002\.safetensors: truncated safetensors file: tensor "):
        open_checkpoint(ckpt)


def test_corrupt_header_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.safetensors"
    path.write_bytes(struct.pack("<Q", 10) + b"not json!!")
    with pytest.raises(ModelError, match="not JSON"):
        SafetensorsFile(path)
    path.write_bytes(struct.pack("<Q", 1 << 40))
    with pytest.raises(ModelError, match="truncated or corrupt safetensors header"):
        SafetensorsFile(path)
    header = json.dumps({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 12]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + bytes(12))
    with pytest.raises(ModelError, match=r"tensor w: shape \[2, 2\] F32 needs 16 bytes"):
        SafetensorsFile(path)


def test_unsupported_config_value_is_named(release_dir: Path, tmp_path: Path) -> None:
    ckpt = _copy(release_dir, tmp_path / "c")
    config = json.loads((ckpt / "config.json").read_text())
    config["num_key_value_heads"] = 2
    (ckpt / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="num_key_value_heads"):
        open_checkpoint(ckpt)
    config["num_key_value_heads"], config["model_type"] = 1, "llama"
    (ckpt / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="model_type 'llama' is not supported"):
        open_checkpoint(ckpt)


def test_unreadable_tokenizer_is_refused(release_dir: Path, tmp_path: Path) -> None:
    ckpt = _copy(release_dir, tmp_path / "c")
    (ckpt / "tokenizer.json").write_text('{"model": "nonsense"')
    with pytest.raises(ModelError, match=r"tokenizer\.json: unreadable tokenizer"):
        open_checkpoint(ckpt)
    (ckpt / "tokenizer.json").unlink()
    with pytest.raises(ModelError, match=r"no tokenizer\.json"):
        open_checkpoint(ckpt)


def test_index_naming_a_missing_shard_is_refused(release_dir: Path, tmp_path: Path) -> None:
    ckpt = _copy(release_dir, tmp_path / "c")
    (ckpt / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(ModelError, match=r"missing shard model-00002-of-00002\.safetensors"):
        open_checkpoint(ckpt)


def test_bad_scale_shape_is_named(release_dir: Path, tmp_path: Path) -> None:
    ckpt = _copy(release_dir, tmp_path / "c")
    config = json.loads((ckpt / "config.json").read_text())
    config["quantization_config"]["weight_block_size"] = [8, 8]
    (ckpt / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match=r"tensor layers\.0\.attn\.wq_a\.weight_scale_inv has shape \[2, 4\], expected \[4, 8\] \(8x8 blocks\)"):
        open_checkpoint(ckpt)


def test_experts_stored_twice_are_refused(tmp_path: Path) -> None:
    model = make_reference()
    write_stacked(model, tmp_path)
    save_file(tmp_path / "extra.safetensors", {"layers.0.ffn.experts.0.w2.weight": np.zeros((64, 32), np.float32)})
    with pytest.raises(ModelError, match=r"model\.layers\.0\.mlp\.experts\.down_proj is stored both stacked"):
        open_checkpoint(tmp_path)
