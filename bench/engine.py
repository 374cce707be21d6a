"""Decode throughput of the engine against transformers' own generate(), same checkpoint, same run.

    .venv/bin/python bench/engine.py [--checkpoint DIR --bundle DIR] [--prompt-len 32] [--new-tokens 48]
                                     [--batches 1,8] [--threads N]

Without --checkpoint/--bundle it builds the demo model (``enclave model demo``) in a temporary
directory. Both sides decode greedily, never stopping at EOS, from prompts of equal length (no
padding on the transformers side). Decode tokens/s excludes the prefill: the engine's is timed over
its decode steps only; transformers' is (t(N new tokens) - t(1 new token)) for (N - 1) tokens a row.

Prints per batch size: engine tokens/s, transformers tokens/s, their ratio; and engine batch-B
throughput over engine batch-1 throughput.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from transformers import DeepseekV4ForCausalLM

from appliance.engine import LLMEngine, SamplingParams
from appliance.model.bundle import load_bundle
from appliance.model.demo import build_demo
from appliance.model.signing import load_public_key


def engine_decode_rate(engine: LLMEngine, prompts: list[list[int]], new_tokens: int) -> float:
    params = SamplingParams(temperature=0.0, max_tokens=new_tokens, ignore_eos=True)
    for i, prompt in enumerate(prompts):
        engine.add_request(f"bench-{time.monotonic_ns()}-{i}", prompt, params)
    engine.step()  # the prefill of every prompt (they fit in one prefill batch)
    assert not engine.scheduler.waiting, "prompts must all be admitted before decode is timed"
    tokens = 0
    start = time.perf_counter()
    while engine.has_work:
        tokens += len(engine.step())
    return tokens / (time.perf_counter() - start)


def reference_decode_rate(model: DeepseekV4ForCausalLM, prompts: list[list[int]], new_tokens: int) -> float:
    ids = torch.tensor(prompts)

    def timed(n: int) -> float:
        start = time.perf_counter()
        with torch.no_grad():
            model.generate(  # type: ignore[misc]  # transformers' self-type for generate() is too narrow
                ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=0
            )
        return time.perf_counter() - start

    timed(2)  # warm-up
    t1 = timed(1)
    tn = timed(new_tokens)
    return len(prompts) * (new_tokens - 1) / (tn - t1)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--bundle", type=Path)
    parser.add_argument("--key", type=Path, help="public key the bundle is signed with")
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads for both (0 = default)")
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]

    with tempfile.TemporaryDirectory(prefix="enclave-bench-") as tmp:
        if args.checkpoint is None or args.bundle is None:
            key = Ed25519PrivateKey.generate()
            paths = build_demo(Path(tmp) / "demo", signing_key=key)
            checkpoint, bundle = (
                Path(paths.checkpoint),
                load_bundle(paths.bundle, trusted_keys=[key.public_key()]),
            )
        else:
            if args.key is None:
                parser.error("--bundle needs --key (the bundle is verified before use)")
            checkpoint = args.checkpoint
            bundle = load_bundle(args.bundle, trusted_keys=[load_public_key(args.key)])
        if args.threads:
            torch.set_num_threads(args.threads)
        model = DeepseekV4ForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
        vocab = model.config.vocab_size
        rng = np.random.default_rng(0)
        prompts = [[int(t) for t in rng.integers(10, vocab, args.prompt_len)] for _ in range(max(batches))]

        print(f"model: {bundle.name} ({checkpoint}), prompt {args.prompt_len} tokens, {args.new_tokens} new")
        print(f"torch threads: {torch.get_num_threads()}")
        print(f"{'batch':>5}  {'engine tok/s':>12}  {'transformers tok/s':>18}  {'engine/transformers':>19}")
        engine_rates: dict[int, float] = {}
        for batch in batches:
            engine = LLMEngine.from_bundle(
                bundle, num_slots=batch, max_context=args.prompt_len + args.new_tokens + 1,
                intra_op_threads=args.threads,
            )  # fmt: skip
            engine_decode_rate(engine, prompts[:batch], 4)  # warm-up: sessions, bindings, allocator
            rate = engine_decode_rate(engine, prompts[:batch], args.new_tokens)
            ref = reference_decode_rate(model, prompts[:batch], args.new_tokens)
            engine_rates[batch] = rate
            print(f"{batch:>5}  {rate:>12.1f}  {ref:>18.1f}  {rate / ref:>18.2f}x")
        if 1 in engine_rates:
            for batch in batches:
                if batch != 1:
                    scale = engine_rates[batch] / engine_rates[1]
                    print(f"engine batch {batch} / batch 1 throughput: {scale:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
