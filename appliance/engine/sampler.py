"""Next-token choice from logits: greedy, or temperature with top-k and top-p, per sequence.

Every sampled token consumes exactly one uniform draw from the sequence's own generator, so a seeded
request produces the same tokens whether it runs alone or in a batch, and after a preemption.
"""

from __future__ import annotations

from collections.abc import Sequence as Seq

import numpy as np
import numpy.typing as npt

from appliance.engine.sequence import Sequence
from appliance.engine.types import SamplingParams

__all__ = ["sample", "sample_row"]

# top-p without top-k: most nucleus masses sit in the few highest logits; try this many before a
# full sort of the vocabulary (exact either way).
_NUCLEUS_PROBE = 1024


def sample(logits: npt.NDArray[np.float32], seqs: Seq[Sequence]) -> list[int]:
    """One token per row of ``logits`` ([len(seqs), vocab]) for the matching sequence."""
    chosen = np.argmax(logits, axis=-1)
    out = [int(t) for t in chosen]
    for row, seq in enumerate(seqs):
        if not seq.params.greedy:
            out[row] = sample_row(logits[row], seq.params, seq.rng)
    return out


def sample_row(row: npt.NDArray[np.float32], params: SamplingParams, rng: np.random.Generator) -> int:
    scaled = row.astype(np.float64) / params.temperature
    vocab = scaled.shape[0]
    top_k = params.top_k if 0 < params.top_k < vocab else 0
    if top_k:
        ids = np.argpartition(-scaled, top_k - 1)[:top_k]
    elif params.top_p < 1.0:
        ids = _nucleus_candidates(scaled, params.top_p)
    else:
        ids = np.arange(vocab)
    values = scaled[ids]
    if params.top_p < 1.0 or top_k:
        # Highest first, ties broken by id, so the kept set is a deterministic function of the logits.
        order = np.lexsort((ids, -values))
        ids, values = ids[order], values[order]
    probs = np.exp(values - values.max())
    probs /= probs.sum()
    if params.top_p < 1.0:
        cum = np.cumsum(probs)
        keep = int(np.searchsorted(cum, params.top_p, side="left")) + 1
        ids, probs = ids[:keep], probs[:keep]
    cum = np.cumsum(probs)
    pick = int(np.searchsorted(cum, rng.random() * cum[-1], side="right"))
    return int(ids[min(pick, len(ids) - 1)])


def _nucleus_candidates(scaled: npt.NDArray[np.float64], top_p: float) -> npt.NDArray[np.intp]:
    vocab = scaled.shape[0]
    if vocab <= _NUCLEUS_PROBE:
        return np.arange(vocab)
    probe = np.argpartition(-scaled, _NUCLEUS_PROBE - 1)[:_NUCLEUS_PROBE]
    top = scaled.max()
    total = np.exp(scaled - top).sum()
    # The probe holds the highest logits, so if its mass reaches top_p the nucleus lies inside it.
    if np.exp(scaled[probe] - top).sum() / total >= top_p:
        return probe
    return np.arange(vocab)
