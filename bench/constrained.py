"""Cost and effect of grammar-constrained decoding, against unconstrained decoding in the same run.

    .venv/bin/python bench/constrained.py [--batch 8] [--steps 48] [--requests 40] [--rounds 5] [--tight 24]

Builds the demo model (``enclave model demo``) in a temporary directory. Both sides sample at
temperature 1 on the demo model; the unconstrained side never stops (``ignore_eos``), the constrained
side is held to a JSON schema. Per-token cost is the median decode-step time while all ``--batch`` rows
are running, divided by the batch, over the same step numbers on both sides of each round: the
constrained figure includes computing every row's mask and advancing its grammar (the masks are filled on llguidance's threads while ONNX Runtime runs).
Validity: ``--requests`` constrained generations (JSON schema, strict, and json_object) with room to
spare, and ``--tight`` more whose ``max_tokens`` is a few tokens over the shortest complete output
(the engine must close the JSON in time); each must finish with EOS and text that parses and
validates.

Prints: unconstrained and constrained ms/token at the batch size, the overhead ratio, the mask's
own fill time per token (now off the critical path) and the applying of it (on it), and the
validity rates.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jsonschema
import llguidance.numpy
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appliance.engine import LLMEngine, SamplingParams
from appliance.engine import engine as engine_module
from appliance.engine.constrain import Constraint
from appliance.model.bundle import load_bundle
from appliance.model.demo import build_demo

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 400},
        "count": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["name", "count", "tags"],
}


def full_batch_step_times(
    engine: LLMEngine, params: list[SamplingParams], prompt: list[int], steps: int
) -> list[float]:
    for i, p in enumerate(params):
        engine.add_request(f"b{time.monotonic_ns()}-{i}", prompt, p)
    engine.step()  # prefill
    times: list[float] = []
    while engine.has_work and len(times) < steps:
        start = time.perf_counter()
        outputs = engine.step()
        elapsed = time.perf_counter() - start
        if len(outputs) == len(params) and all(o.delta.finish_reason is None for o in outputs):
            times.append(elapsed)
    for rid in list(engine._groups):  # the bench drains what is left
        engine.abort(rid)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=48)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tight", type=int, default=24)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        key = Ed25519PrivateKey.generate()
        paths = build_demo(Path(tmp) / "demo", signing_key=key)
        bundle = load_bundle(paths.bundle, trusted_keys=[key.public_key()])
        engine = LLMEngine.from_bundle(bundle, num_slots=args.batch, max_context=1024)
        prompt = engine.tokenizer.encode(
            "<｜begin▁of▁sentence｜><｜User｜>a JSON record<｜Assistant｜></think>"
        )
        schema = Constraint.json_schema(SCHEMA)
        free = [
            SamplingParams(temperature=1.0, seed=i, max_tokens=600, ignore_eos=True)
            for i in range(args.batch)
        ]
        held = [
            SamplingParams(temperature=1.0, seed=i, max_tokens=600, constraint=schema)
            for i in range(args.batch)
        ]

        mask_time = [0.0]
        mask_calls = [0]
        fill_time = [0.0]
        real_apply = engine_module.apply_masks
        real_fill = llguidance.numpy.fill_next_token_bitmask_par

        def timed_fill(*a, **k):  # type: ignore[no-untyped-def]
            start = time.perf_counter()
            try:
                return real_fill(*a, **k)
            finally:
                fill_time[0] += time.perf_counter() - start

        def timed_apply(*a, **k):  # type: ignore[no-untyped-def]
            start = time.perf_counter()
            mask_calls[0] += 1
            try:
                return real_apply(*a, **k)
            finally:
                mask_time[0] += time.perf_counter() - start

        full_batch_step_times(engine, free, prompt, 4)  # warm-up
        full_batch_step_times(engine, held, prompt, 4)
        # Alternating rounds, the median step of each side: a shared machine's noise hits both alike.
        # Steps are paired by position: a constrained batch stops being full when its first JSON
        # closes, and later decode steps (longer contexts) cost more, so each round compares the
        # same step numbers on both sides.
        t_free: list[float] = []
        t_held: list[float] = []
        engine_module.apply_masks = timed_apply  # type: ignore[assignment]
        llguidance.numpy.fill_next_token_bitmask_par = timed_fill
        for r in range(args.rounds):
            free_r = full_batch_step_times(engine, free, prompt, args.steps)
            seeded = [dataclasses.replace(p, seed=r * 100 + i) for i, p in enumerate(held)]
            held_r = full_batch_step_times(engine, seeded, prompt, args.steps)
            k = min(len(free_r), len(held_r))
            t_free += free_r[:k]
            t_held += held_r[:k]
        engine_module.apply_masks = real_apply
        llguidance.numpy.fill_next_token_bitmask_par = real_fill
        per_free = statistics.median(t_free) / args.batch
        per_held = statistics.median(t_held) / args.batch
        ratio = per_held / per_free
        print(
            f"batch {args.batch}: unconstrained {per_free * 1e3:.3f} ms/token (median of {len(t_free)} full steps)"
        )
        print(
            f"batch {args.batch}: constrained   {per_held * 1e3:.3f} ms/token (median of {len(t_held)} full steps)"
        )
        print(f"constrained / unconstrained: {ratio:.3f} (overhead {100 * (ratio - 1):+.1f}%)")
        per_mask = mask_time[0] / max(mask_calls[0] * args.batch, 1)
        per_fill = fill_time[0] / max(mask_calls[0] * args.batch, 1)
        print(f"mask fill (llguidance threads, during the model run): {per_fill * 1e3:.4f} ms/token")
        print(f"mask apply (on the critical path): {per_mask * 1e3:.4f} ms/token")

        shortest = engine.shortest_output(schema)
        assert shortest is not None
        print(f"shortest complete output under the schema: {shortest} tokens")
        rates = []
        for label, count, budget in (
            ("room to spare", args.requests, lambda i: 900),
            ("tight max_tokens", args.tight, lambda i: shortest + i % 12),
        ):
            valid = 0
            for i in range(count):
                as_object = i % 4 == 3 and label == "room to spare"
                constraint = Constraint.json_object() if as_object else schema
                rid = f"v{label}{i}"
                engine.add_request(
                    rid,
                    prompt,
                    SamplingParams(
                        temperature=1.0, seed=100 + i, max_tokens=budget(i), constraint=constraint
                    ),
                )
                text, reason = "", None
                while engine.has_work:
                    for out in engine.step():
                        text += out.delta.text
                        reason = out.delta.finish_reason
                try:
                    value = json.loads(text)
                    if as_object:
                        assert isinstance(value, dict)
                    else:
                        jsonschema.validate(value, SCHEMA)
                    valid += reason == "stop"
                except (ValueError, AssertionError, jsonschema.ValidationError):
                    print(f"  invalid ({reason}): {text[:120]!r}")
            rates.append(valid / max(count, 1))
            print(
                f"structured-output validity, {label}: {valid}/{count} = {100 * valid / max(count, 1):.1f}%"
            )
        print(f"structured-output validity overall: {100 * min(rates):.1f}% (the lower of the two)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
