"""Quantized graphs keep a trained model's predictions (issue 5; issue 14's targets: int8 >= 99% top-1, int4 >= 97%).

A random model cannot show this: its top-1 flips under any perturbation (see test_quant_bundle.py).
The shipped demo model is a trained one (appliance/model/demo_model, docs/demo-model.md), so it is
measured as it ships: its fp32, int8 and int4 graphs run on 2,048 tokens of its held-out files (BOS +
255 tokens a row, the length it was trained on), and top-1 agreement with fp32 is counted at every
position. No model is trained here. bench/demo_model.py measures the same model on its task figures.
"""

from __future__ import annotations

import numpy as np
import pytest
from tokenizers import Tokenizer

from appliance.model import demo_data
from appliance.model.checkpoint import open_checkpoint
from appliance.model.demo import SHIPPED_CHECKPOINT
from appliance.model.graph import build_graphs, graph_io
from tests.helpers.v4_onnx import StageRunner, logit_agreement

ROWS, LENGTH = 8, 256


def held_out_rows() -> np.ndarray:
    tok = Tokenizer.from_file(str(SHIPPED_CHECKPOINT / "tokenizer.json"))
    text = "".join(demo_data.read_file(rel) for rel in demo_data.HELD_OUT_FILES)
    ids = tok.encode(text, add_special_tokens=False).ids
    stride = len(ids) // ROWS
    bos = tok.token_to_id(demo_data.BOS_TOKEN)
    return np.array([[bos, *ids[r * stride : r * stride + LENGTH - 1]] for r in range(ROWS)], np.int64)


@pytest.fixture(scope="module")
def logits() -> dict[str, np.ndarray]:
    ckpt = open_checkpoint(SHIPPED_CHECKPOINT)
    ids = held_out_rows()
    out = {}
    for quant in ("none", "int8", "int4"):
        graphs = build_graphs(ckpt, quant=quant, logits="all")
        runner = StageRunner(graphs, graph_io(ckpt.config, logits="all"), max_context=LENGTH, batch=ROWS)
        out[quant] = runner.step(ids, np.zeros(ROWS, np.int64)).reshape(ROWS * LENGTH, -1)
    # It is the trained model: it predicts most next tokens of text it never saw (a random one: ~0).
    hits = out["none"].reshape(ROWS, LENGTH, -1)[:, :-1].argmax(-1) == ids[:, 1:]
    assert hits.mean() > 0.2
    return out


# Measured on the shipped model here: int8 99.07%, int4 99.12% (mean cosine 0.999900 both; version 2
# had 0.99993 at int8). Its routed experts were trained for int4 and are stored on the int4 grid (train_demo_model.py --qat-int4,
# docs/demo-model.md), which the quantizer keeps exactly: what int8 and int4 lose is the 8-bit
# projections' rounding. int8 meets issue 14's 99% once the runner keeps 8-bit QMoE on fp32
# activations (exact_qmoe_activations; ONNX Runtime's int8-activation default gave 98.2%). Both are
# held to the targets (before the experts were trained for it, int4 was 94.0%).
@pytest.mark.parametrize(
    ("quant", "min_top1", "min_cosine"), [("int8", 0.99, 0.9998), ("int4", 0.97, 0.9998)]
)
def test_quantized_graph_keeps_trained_predictions(
    logits: dict[str, np.ndarray], quant: str, min_top1: float, min_cosine: float
) -> None:
    result = logit_agreement(logits[quant], logits["none"])
    print(f"{quant}: {result}")
    assert result.top1 >= min_top1
    assert result.cosine_mean >= min_cosine
