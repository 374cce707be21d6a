"""Required tool calls on the demo model: validity rate, and the per-token cost of the call grammar
against unconstrained decoding in the same run.

    .venv/bin/python bench/tool_calls.py [--batch 8] [--steps 32] [--requests 24]

Builds the demo model in a temporary directory and a chat prompt with two tools (DeepSeek V4's DSML
tools section). Validity: ``--requests`` generations under ``Constraint.tool_call`` (tool_choice
required, parallel calls allowed) at temperature 1, each must stop (not run out of tokens) and parse
into calls of offered tools whose arguments validate against the tool's schema. Cost: the median
decode step while all ``--batch`` rows run, divided by the batch, constrained vs unconstrained
(``ignore_eos``), in alternating rounds.
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
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appliance.engine import LLMEngine, SamplingParams
from appliance.engine.constrain import Constraint
from appliance.engine.dsml import parse_completion
from appliance.engine.prompt import PromptEncoder
from appliance.engine.types import ChatMessage
from appliance.model.bundle import load_bundle
from appliance.model.demo import build_demo

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 24},
        "unit": {"enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 14},
    },
    "required": ["city", "unit"],
}
SEARCH = {
    "type": "object",
    "properties": {"query": {"type": "string", "maxLength": 80}, "limit": {"type": "integer", "maximum": 50}},
    "required": ["query"],
}
TOOLS = [
    {
        "type": "function",
        "function": {"name": "get_weather", "description": "Forecast", "parameters": WEATHER},
    },
    {"type": "function", "function": {"name": "search_code", "description": "Search", "parameters": SEARCH}},
]
SCHEMAS = {"get_weather": WEATHER, "search_code": SEARCH}


def step_times(engine: LLMEngine, params: list[SamplingParams], prompt: list[int], steps: int) -> list[float]:
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
    for rid in list(engine._seqs):  # the bench drains what is left
        engine.abort(rid)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--requests", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        key = Ed25519PrivateKey.generate()
        paths = build_demo(Path(tmp) / "demo", signing_key=key)
        engine = LLMEngine.from_bundle(
            load_bundle(paths.bundle, trusted_keys=[key.public_key()]), num_slots=args.batch, max_context=2048
        )
        prompt = PromptEncoder(engine.tokenizer).chat(
            [ChatMessage("user", "Weather in Paris, then find the parser code.")], tools=TOOLS
        )
        grammar = Constraint.tool_call(TOOLS)

        # Validity first: whole generations, batched.
        pending = {
            f"v{i}": engine.add_request(
                f"v{i}", prompt, SamplingParams(temperature=1.0, seed=i, max_tokens=600, constraint=grammar)
            )
            for i in range(args.requests)
        }
        texts = {rid: "" for rid in pending}
        reasons: dict[str, str | None] = {}
        while engine.has_work:
            for out in engine.step():
                texts[out.request_id] += out.delta.text
                if out.delta.finish_reason is not None:
                    reasons[out.request_id] = out.delta.finish_reason
        valid = 0
        calls_made = 0
        for rid, text in texts.items():
            content, calls = parse_completion(text, SCHEMAS)
            try:
                assert reasons[rid] == "stop" and content == "" and calls
                for call in calls:
                    jsonschema.validate(json.loads(call.arguments), SCHEMAS[call.name])
                valid += 1
                calls_made += len(calls)
            except (AssertionError, jsonschema.ValidationError):
                print(f"  invalid ({reasons.get(rid)}): {text[:160]!r}")
        print(f"prompt with the tools section: {len(prompt)} tokens")
        print(
            f"required tool calls valid: {valid}/{args.requests} = {100 * valid / args.requests:.1f}% "
            f"({calls_made} calls)"
        )

        free = [
            SamplingParams(temperature=1.0, seed=i, max_tokens=600, ignore_eos=True)
            for i in range(args.batch)
        ]
        held = [
            SamplingParams(temperature=1.0, seed=i, max_tokens=600, constraint=grammar)
            for i in range(args.batch)
        ]
        step_times(engine, free, prompt, 4)  # warm-up
        step_times(engine, held, prompt, 4)
        t_free: list[float] = []
        t_held: list[float] = []
        for r in range(args.rounds):
            t_free += step_times(engine, free, prompt, args.steps)
            t_held += step_times(
                engine,
                [dataclasses.replace(p, seed=r * 100 + i) for i, p in enumerate(held)],
                prompt,
                args.steps,
            )
        per_free = statistics.median(t_free) / args.batch
        per_held = statistics.median(t_held) / args.batch
        print(f"batch {args.batch}: unconstrained {per_free * 1e3:.3f} ms/token ({len(t_free)} full steps)")
        print(
            f"batch {args.batch}: tool-call grammar {per_held * 1e3:.3f} ms/token ({len(t_held)} full steps)"
        )
        print(f"constrained / unconstrained: {per_held / per_free:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
