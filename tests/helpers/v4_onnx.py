"""Run built V4 stage graphs with ONNX Runtime (CPU) the way docs/bundle.md says a runner must.

StageRunner(graphs, io, max_context=..., batch=...)
    .reset(rows=None)                         zero the state of some rows (all by default)
    .step(ids [B,T], positions [B]) -> logits  one call through every stage, state chained
    .prefill_and_decode(ids, prefill) -> np.ndarray [len - prefill + 1, vocab] (row 0 = prefill)
    .greedy(prompt, n) -> list[int]
logit_agreement(ours [T, V], base [T, V]) -> Agreement
    top-1 agreement, mean/min cosine, and how close to a tie ``base`` was where top-1 differs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from appliance.engine.runner import exact_qmoe_activations
from appliance.model.graph import state_shape

_NP = {"float32": np.float32, "float16": np.float16}


class StageRunner:
    def __init__(
        self, graphs: list[onnx.ModelProto], io: dict[str, Any], *, max_context: int, batch: int = 1
    ) -> None:
        exact_qmoe_activations()  # as the engine's runner does
        options = ort.SessionOptions()
        options.intra_op_num_threads = 2
        self.sessions = [
            ort.InferenceSession(g.SerializeToString(), options, providers=["CPUExecutionProvider"])
            for g in graphs
        ]
        self.io = io
        self.batch = batch
        self.max_context = max_context
        self.state: dict[str, np.ndarray] = {}
        self.reset()

    def reset(self, rows: list[int] | None = None) -> None:
        for entry in self.io["state"]:
            shape = state_shape(entry, batch=self.batch, max_context=self.max_context)
            if rows is None or entry["input"] not in self.state:
                self.state[entry["input"]] = np.zeros(shape, _NP[entry["dtype"]])
            else:
                self.state[entry["input"]][rows] = 0

    def step(self, ids: np.ndarray, positions: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, np.int64)
        feeds_common = {"input_ids": ids, "positions": np.asarray(positions, np.int64)}
        carry: np.ndarray | None = None
        for session, stage in zip(self.sessions, self.io["stages"], strict=True):
            feeds = dict(feeds_common)
            for spec in stage["inputs"]:
                if spec["name"].startswith("past."):
                    feeds[spec["name"]] = self.state[spec["name"]]
            if carry is not None:
                feeds["hidden_streams_in"] = carry
            names = [o["name"] for o in stage["outputs"]]
            values = dict(zip(names, session.run(names, feeds), strict=True))
            for name, value in values.items():
                if name.startswith("present."):
                    self.state["past." + name[len("present.") :]] = value
            carry = values.get("hidden_streams")
            result = values.get("logits")
        assert result is not None
        return result

    def prefill_and_decode(self, ids: np.ndarray, prefill: int) -> np.ndarray:
        self.reset()
        rows = [self.step(ids[None, :prefill], np.array([0]))[0]]
        for t in range(prefill, len(ids)):
            rows.append(self.step(ids[None, t : t + 1], np.array([t]))[0])
        return np.stack([r if r.ndim == 1 else r[-1] for r in rows])

    def greedy(self, prompt: list[int], n: int) -> list[int]:
        self.reset()
        logits = self.step(np.array([prompt]), np.array([0]))[0]
        out: list[int] = []
        pos = len(prompt)
        for _ in range(n):
            token = int(np.argmax(logits if logits.ndim == 1 else logits[-1]))
            out.append(token)
            logits = self.step(np.array([[token]]), np.array([pos]))[0]
            pos += 1
        return out


@dataclass(frozen=True)
class Agreement:
    top1: float  # fraction of positions whose argmax agrees
    cosine_mean: float
    cosine_min: float
    tie_gap_max: float  # largest gap between base's two best logits at a position where top-1 differs
    gap_median: float  # median of that gap over all positions

    def __str__(self) -> str:
        return (
            f"top-1 {self.top1:7.2%}  cosine mean {self.cosine_mean:.6f} min {self.cosine_min:.6f}"
            f"  largest gap at a disagreement {self.tie_gap_max:.3f} (median gap {self.gap_median:.2f})"
        )


def logit_agreement(ours: np.ndarray, base: np.ndarray) -> Agreement:
    cosine = (ours * base).sum(-1) / np.linalg.norm(ours, axis=-1) / np.linalg.norm(base, axis=-1)
    differs = ours.argmax(-1) != base.argmax(-1)
    top2 = np.sort(base, axis=-1)[:, -2:]
    gap = top2[:, 1] - top2[:, 0]
    return Agreement(
        top1=float(1 - differs.mean()),
        cosine_mean=float(cosine.mean()),
        cosine_min=float(cosine.min()),
        tie_gap_max=float(gap[differs].max(initial=0)),
        gap_median=float(np.median(gap)),
    )
