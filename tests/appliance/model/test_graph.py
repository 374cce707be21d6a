"""Graph contract (docs/bundle.md): batched decode at mixed positions, chunked prefill, stages, I/O, errors."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import onnx
import pytest

from appliance.model.graph import build_graphs, graph_io, stage_layers, state_shape
from shared.errors import ModelError
from tests.helpers.v4_onnx import StageRunner
from tests.helpers.v4_reference import (
    StateDictCheckpoint,
    lowest_index_ties,
    reference_logits,
    reference_model,
    tiny_config,
)

MAX_CONTEXT = 96


@pytest.fixture(scope="module")
def model() -> Any:
    return reference_model(tiny_config(), seed=5)


@pytest.fixture(scope="module")
def ckpt(model: Any) -> StateDictCheckpoint:
    return StateDictCheckpoint(model)


@pytest.fixture(scope="module")
def sequences(model: Any) -> list[tuple[np.ndarray, np.ndarray]]:
    """Three sequences of different lengths with their reference logits (teacher forced)."""
    rng = np.random.default_rng(11)
    out = []
    for n in (50, 37, 61):
        ids = rng.integers(0, 256, n)
        with lowest_index_ties():
            out.append((ids, reference_logits(model, ids)))
    return out


def test_batched_decode_with_rows_at_different_positions(
    ckpt: StateDictCheckpoint, sequences: list[tuple[np.ndarray, np.ndarray]]
) -> None:
    """Prefill each sequence alone, move its state into a batch slot, then decode all rows together."""
    graphs, io = build_graphs(ckpt), graph_io(ckpt.config)
    batch = StageRunner(graphs, io, max_context=MAX_CONTEXT, batch=len(sequences))
    single = StageRunner(graphs, io, max_context=MAX_CONTEXT)
    prompts = [9, 15, 30]  # rows end prefill mid-window at different phases
    for row, ((ids, _), n) in enumerate(zip(sequences, prompts, strict=True)):
        single.reset()
        single.step(ids[None, :n], np.array([0]))
        for name, value in single.state.items():
            batch.state[name][row] = value[0]
    positions = np.array(prompts)
    for _ in range(20):
        step_ids = np.array([[ids[p]] for (ids, _), p in zip(sequences, positions, strict=True)])
        logits = batch.step(step_ids, positions)
        for row, (_, ref) in enumerate(sequences):
            assert np.abs(logits[row] - ref[positions[row]]).max() <= 1e-4
        positions = positions + 1


def test_chunked_prefill_continues_from_state(
    ckpt: StateDictCheckpoint, sequences: list[tuple[np.ndarray, np.ndarray]]
) -> None:
    ids, ref = sequences[2]
    r = StageRunner(
        build_graphs(ckpt, logits="all"), graph_io(ckpt.config, logits="all"), max_context=MAX_CONTEXT
    )
    cuts = [0, 13, 30, 31, 61]  # chunks of 13, 17, 1 and 30 tokens
    got = [r.step(ids[None, a:b], np.array([a]))[0] for a, b in itertools.pairwise(cuts)]
    assert np.abs(np.concatenate(got) - ref).max() <= 1e-4


@pytest.mark.parametrize("stages", [2, 4])
def test_stages_compute_what_one_stage_computes(
    ckpt: StateDictCheckpoint, sequences: list[tuple[np.ndarray, np.ndarray]], stages: int
) -> None:
    ids, _ = sequences[0]
    one = StageRunner(build_graphs(ckpt), graph_io(ckpt.config), max_context=MAX_CONTEXT)
    many_graphs = build_graphs(ckpt, stages=stages)
    assert len(many_graphs) == stages
    many = StageRunner(many_graphs, graph_io(ckpt.config, stages=stages), max_context=MAX_CONTEXT)
    assert np.abs(one.prefill_and_decode(ids[:40], 25) - many.prefill_and_decode(ids[:40], 25)).max() <= 1e-5


def test_graph_io_describes_the_graphs(ckpt: StateDictCheckpoint) -> None:
    io = graph_io(ckpt.config, stages=2)
    graphs = build_graphs(ckpt, stages=2)
    elem = {"float32": onnx.TensorProto.FLOAT, "int64": onnx.TensorProto.INT64}
    for graph, stage in zip(graphs, io["stages"], strict=True):
        for declared, actual in (
            (stage["inputs"], graph.graph.input),
            (stage["outputs"], graph.graph.output),
        ):
            assert [d["name"] for d in declared] == [a.name for a in actual]
            for d, a in zip(declared, actual, strict=True):
                assert elem[d["dtype"]] == a.type.tensor_type.elem_type
                dims = [
                    x.dim_value if x.HasField("dim_value") else None for x in a.type.tensor_type.shape.dim
                ]
                assert [x if isinstance(x, int) else None for x in d["shape"]] == dims
    assert "hidden_streams" in [o["name"] for o in io["stages"][0]["outputs"]]
    assert "hidden_streams_in" in [i["name"] for i in io["stages"][1]["inputs"]]
    cmp = next(e for e in io["state"] if e["name"] == "cmp_kv" and e["layer"] == 2)
    assert state_shape(cmp, batch=3, max_context=100) == (3, 100 // 8 + 1, ckpt.config.head_dim)


def test_graphs_are_valid_onnx_with_path_names(ckpt: StateDictCheckpoint) -> None:
    for graph in build_graphs(ckpt, stages=2, moe="ort"):
        onnx.checker.check_model(graph)
        names = [n.name for n in graph.graph.node]
        assert len(names) == len(set(names))
        assert all(n.startswith(("/model/", "/lm_head", "/output/")) for n in names)
    sample = {n.name for n in build_graphs(ckpt)[0].graph.node}
    assert "/model/layers.1/attn/q_a_proj/MatMul" in sample


def test_stage_split_is_contiguous_and_balanced() -> None:
    assert stage_layers(43, 4) == [(0, 11), (11, 22), (22, 33), (33, 43)]
    with pytest.raises(ModelError, match="stages"):
        stage_layers(4, 5)


class _Broken:
    def __init__(self, ckpt: StateDictCheckpoint, *, drop: str = "", reshape: str = "") -> None:
        self.config = ckpt.config
        self._ckpt, self._drop, self._reshape = ckpt, drop, reshape

    def tensor(self, name: str) -> np.ndarray:
        if name == self._drop:
            raise KeyError(name)
        value = self._ckpt.tensor(name)
        return value[:-1] if name == self._reshape else value


def test_missing_or_misshapen_tensor_is_named(ckpt: StateDictCheckpoint) -> None:
    name = "model.layers.1.self_attn.compressor.indexer.q_b_proj.weight"
    with pytest.raises(ModelError, match=f"missing tensor '{name}'"):
        build_graphs(_Broken(ckpt, drop=name))
    with pytest.raises(ModelError, match=f"'{name}' has shape"):
        build_graphs(_Broken(ckpt, reshape=name))


@pytest.mark.parametrize(
    ("key", "value"), [("dtype", "fp8"), ("moe", "dense"), ("quant", "int3"), ("stages", 0)]
)
def test_bad_build_options_are_refused(ckpt: StateDictCheckpoint, key: str, value: Any) -> None:
    with pytest.raises(ModelError, match=key):
        build_graphs(ckpt, **{key: value})


def test_decode_may_update_state_in_place(
    ckpt: StateDictCheckpoint, sequences: list[tuple[np.ndarray, np.ndarray]]
) -> None:
    """T = 1 steps with every present.* bound to its past.* buffer compute what separate buffers do."""
    import onnxruntime as ort

    ids, _ = sequences[0]
    graphs, io = build_graphs(ckpt), graph_io(ckpt.config)
    expected = StageRunner(graphs, io, max_context=MAX_CONTEXT).prefill_and_decode(ids, 20)
    prefill = StageRunner(graphs, io, max_context=MAX_CONTEXT)
    got = [prefill.step(ids[None, :20], np.array([0]))[0]]
    buffers = {name: ort.OrtValue.ortvalue_from_numpy(value) for name, value in prefill.state.items()}
    session = prefill.sessions[0]
    for t in range(20, len(ids)):
        binding = session.io_binding()
        binding.bind_cpu_input("input_ids", ids[None, t : t + 1].astype(np.int64))
        binding.bind_cpu_input("positions", np.array([t], np.int64))
        for entry in io["state"]:
            binding.bind_ortvalue_input(entry["input"], buffers[entry["input"]])
            binding.bind_ortvalue_output(entry["output"], buffers[entry["input"]])
        binding.bind_output("logits")
        session.run_with_iobinding(binding)
        got.append(binding.get_outputs()[-1].numpy()[0])  # logits was bound last
    assert np.abs(np.stack(got) - expected).max() <= 1e-6
