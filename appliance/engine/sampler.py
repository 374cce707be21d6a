"""Next-token choice from logits: greedy, or temperature with top-k and top-p, per sequence.

Before the choice, :func:`process_logits` applies each sequence's logit bias and presence/frequency
penalties (OpenAI's rule: counts over generated tokens), vectorised over the rows that ask for them;
logprobs (:func:`token_logprobs`) come from that processed distribution, before temperature and
truncation — what OpenAI and vLLM report.

Every sampled token consumes exactly one uniform draw from the sequence's own generator, so a seeded
request produces the same tokens whether it runs alone or in a batch, and after a preemption.
"""

from __future__ import annotations

from collections.abc import Sequence as Seq

import numpy as np
import numpy.typing as npt

from appliance.engine.sequence import Sequence
from appliance.engine.types import SamplingParams, TokenLogprob

__all__ = ["process_logits", "sample", "sample_row", "token_logprobs"]

# top-p without top-k: most nucleus masses sit in the few highest logits; try this many before a
# full sort of the vocabulary (exact either way).
_NUCLEUS_PROBE = 1024


def process_logits(logits: npt.NDArray[np.float32], seqs: Seq[Sequence]) -> npt.NDArray[np.float32]:
    """``logits`` with each row's bias and penalties applied (a new array only if any row has some)."""
    rows = [i for i, seq in enumerate(seqs) if _adjusts(seq.params)]
    if not rows:
        return logits
    out = np.array(logits, dtype=np.float32, copy=True)
    vocab = out.shape[-1]
    for i in rows:
        params = seqs[i].params
        if params.logit_bias:
            ids = np.fromiter((t for t, _ in params.logit_bias), dtype=np.intp)
            bias = np.fromiter((b for _, b in params.logit_bias), dtype=np.float32)
            np.add.at(out[i], ids, bias)
        if params.presence_penalty or params.frequency_penalty:
            generated = seqs[i].completion_ids
            if generated:
                counts = np.bincount(np.asarray(generated, dtype=np.intp), minlength=vocab)[:vocab]
                out[i] -= params.frequency_penalty * counts + params.presence_penalty * (counts > 0)
    return out


def _adjusts(params: SamplingParams) -> bool:
    return bool(params.logit_bias or params.presence_penalty or params.frequency_penalty)


def token_logprobs(row: npt.NDArray[np.float32], token: int, k: int) -> TokenLogprob:
    """``token``'s log-probability under softmax(``row``) and the ``k`` most likely ids."""
    values = row.astype(np.float64)
    top = values.max()
    logz = top + np.log(np.exp(values - top).sum())
    alternatives: tuple[tuple[int, float], ...] = ()
    if k:
        k = min(k, values.shape[0])
        ids = np.argpartition(-values, k - 1)[:k]
        ids = ids[np.lexsort((ids, -values[ids]))]
        alternatives = tuple((int(t), float(values[t] - logz)) for t in ids)
    return TokenLogprob(token, float(values[token] - logz), alternatives)


def sample(logits: npt.NDArray[np.float32], seqs: Seq[Sequence]) -> list[int]:
    """One token per row of ``logits`` ([len(seqs), vocab], already processed) for the matching sequence."""
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
