from __future__ import annotations

import numpy as np

from appliance.engine.sampler import sample, sample_row
from appliance.engine.sequence import Sequence
from appliance.engine.types import SamplingParams


def logits_row(vocab: int = 2000, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(vocab).astype(np.float32) * 2


def draws(params: SamplingParams, row: np.ndarray, n: int = 400, seed: int = 1) -> list[int]:
    rng = np.random.default_rng(seed)
    return [sample_row(row, params, rng) for _ in range(n)]


def test_greedy_rows_take_the_argmax_and_sampled_rows_use_their_own_generator() -> None:
    logits = np.stack([logits_row(seed=s) for s in range(3)])
    greedy = Sequence("g", [1], SamplingParams(temperature=0.0))
    hot = Sequence("h", [1], SamplingParams(temperature=5.0, seed=7))
    out = sample(logits, [greedy, hot, greedy])
    assert out[0] == int(np.argmax(logits[0])) and out[2] == int(np.argmax(logits[2]))
    assert out[1] == sample_row(logits[1], hot.params, np.random.default_rng(7))


def test_same_seed_same_tokens_different_seed_different_tokens() -> None:
    row = logits_row()
    params = SamplingParams(temperature=1.0, top_p=0.9, seed=3)
    assert draws(params, row, seed=3) == draws(params, row, seed=3)
    assert draws(params, row, seed=3) != draws(params, row, seed=4)


def test_top_k_keeps_only_the_k_highest() -> None:
    row = logits_row()
    allowed = set(np.argsort(-row)[:5].tolist())
    got = set(draws(SamplingParams(temperature=2.0, top_k=5), row))
    assert got <= allowed and len(got) > 1
    assert set(draws(SamplingParams(temperature=1.0, top_k=1), row, n=20)) == {int(np.argmax(row))}


def test_top_p_keeps_the_smallest_nucleus() -> None:
    row = logits_row(vocab=3000)
    probs = np.exp(row - row.max())
    probs /= probs.sum()
    order = np.argsort(-probs)
    nucleus_size = int(np.searchsorted(np.cumsum(probs[order]), 0.5)) + 1
    allowed = set(order[:nucleus_size].tolist())
    got = set(draws(SamplingParams(temperature=1.0, top_p=0.5), row, n=2000))
    assert got <= allowed
    assert len(got) > nucleus_size // 2  # most of the nucleus shows up in 2000 draws


def test_top_p_past_the_probe_size_takes_the_full_sort_path() -> None:
    row = np.zeros(5000, dtype=np.float32)  # flat: the nucleus of 0.9005 holds ids 0..4502 (ties by id)
    got = draws(SamplingParams(temperature=1.0, top_p=0.9005), row, n=3000)
    assert max(got) >= 1024 and max(got) <= 4502


def test_temperature_sampling_follows_the_softmax() -> None:
    row = np.array([0.0, np.log(3.0), -50.0], dtype=np.float32)  # probabilities ~ 0.25, 0.75, 0
    got = np.bincount(draws(SamplingParams(temperature=1.0), row, n=4000), minlength=3)
    assert got[2] == 0
    assert 0.70 < got[1] / 4000 < 0.80
