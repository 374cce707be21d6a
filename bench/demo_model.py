"""The demo model on its held-out files, each figure beside a peer measured in the same run.

    .venv/bin/python bench/demo_model.py [--checkpoint DIR] [--fim-lines 500] [--chats 120] [--threads 2]
                                         [--only bpb,fim,chat,speed | --skip ...]

Without --checkpoint it measures the shipped one (appliance/model/demo_model). The bundle is built
from the checkpoint as ``enclave model demo`` builds it, and generation goes through the product's
engine (LLMEngine, greedy) and prompt encoder; the held-out files are those in
appliance.model.demo_data.HELD_OUT_FILES, read from the running Python's standard library.

1. bits per byte of the model vs ``xz -9e`` and ``zstd -19`` on the same bytes (each file compressed
   on its own, as the model reads each on its own): the model scores every token of BOS + file in
   windows of --window tokens, each with up to a quarter of a window of the previous text as context.
   The graphs are the bundle's, built with logits at every position.
2. single-line infilling: one non-blank line inside a held-out function masked, the prefix/suffix
   the lines around it (up to --fim-prefix/--fim-suffix bytes, whole lines), greedy FIM until the
   newline; exact match after stripping whitespace, vs "repeat the previous line".
3. chat: held-out functions' signature + docstring as the user turn; the share of greedy answers
   whose code parses (``ast.parse(signature + docstring + answer)``), vs the share of the real
   bodies that do (the ceiling: 100%).
4. decode tokens/s of the bundle at batch 1 and 8 vs transformers on the same checkpoint
   (bench/engine.py's timing).
"""

from __future__ import annotations

import argparse
import ast
import difflib
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appliance.engine import LLMEngine, SamplingParams
from appliance.engine.prompt import PromptEncoder
from appliance.engine.types import ChatMessage
from appliance.model import demo_data as data
from appliance.model.bundle import build_bundle, load_bundle
from appliance.model.checkpoint import open_checkpoint
from appliance.model.demo import DEMO_NAME, SHIPPED_CHECKPOINT
from appliance.model.graph import build_graphs, graph_io
from tests.helpers.v4_onnx import StageRunner


def compressed_bits(command: list[str], payload: bytes) -> int:
    return 8 * len(subprocess.run(command, input=payload, capture_output=True, check=True).stdout)


def model_bits(checkpoint: Path, texts: list[str], window: int, batch: int) -> float:
    """Total -log2 p over every token after BOS of each text."""
    from tokenizers import Tokenizer

    ckpt = open_checkpoint(checkpoint)
    tok = Tokenizer.from_file(str(checkpoint / "tokenizer.json"))
    runner = StageRunner(build_graphs(ckpt, logits="all"), graph_io(ckpt.config, logits="all"),
                         max_context=window, batch=batch)  # fmt: skip
    # Every window starts with BOS, as every training row does, then up to ``context`` tokens of
    # the text before the ``scored`` tokens it is measured on.
    context = window // 4 - 1
    scored = window - context - 1
    jobs: list[tuple[list[int], int]] = []  # (window ids, index of the first scored target in it)
    for text in texts:
        bos, *body = tok.encode(data.lm_text(text), add_special_tokens=False).ids
        for a in range(0, len(body), scored):
            c = max(0, a - context)
            jobs.append(([bos, *body[c : a + scored]], 1 + a - c))
    pad = ckpt.config.pad_token_id or 0
    total = 0.0
    for k in range(0, len(jobs), batch):
        group = jobs[k : k + batch]
        x = np.full((batch, window), pad, np.int64)
        for r, (ids, _) in enumerate(group):
            x[r, : len(ids)] = ids
        runner.reset()
        logits = runner.step(x, np.zeros(batch, np.int64))
        for r, (ids, first) in enumerate(group):
            rows = logits[r, first - 1 : len(ids) - 1].astype(np.float64)
            rows -= rows.max(-1, keepdims=True)
            logp = rows - np.log(np.exp(rows).sum(-1, keepdims=True))
            total -= logp[np.arange(len(rows)), ids[first:]].sum() / math.log(2)
    return total


def trim_lines(text: str, limit: int, *, keep_end: bool) -> str:
    """Whole lines of ``text`` nearest its end (keep_end) or its start, at most ``limit`` bytes."""
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    size = 0
    for line in reversed(lines) if keep_end else lines:
        if size + len(line) > limit:
            break
        out.append(line)
        size += len(line)
    return "".join(reversed(out) if keep_end else out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=SHIPPED_CHECKPOINT)
    parser.add_argument("--fim-lines", type=int, default=500)
    parser.add_argument("--fim-prefix", type=int, default=600, help="bytes of whole lines before the hole")
    parser.add_argument("--fim-suffix", type=int, default=200, help="bytes of whole lines after the hole")
    parser.add_argument("--chats", type=int, default=120)
    parser.add_argument("--window", type=int, default=256, help="tokens a bits-per-byte window (training rows)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip", default="", help="comma list of sections to skip: bpb,fim,chat,speed")
    parser.add_argument("--only", default="", help="comma list of the only sections to run (e.g. --only fim)")
    args = parser.parse_args()
    sections = {"bpb", "fim", "chat", "speed"}
    skip = set(filter(None, args.skip.split(",")))
    only = set(filter(None, args.only.split(",")))
    if not (skip | only) <= sections:
        parser.error(f"unknown section {', '.join(sorted((skip | only) - sections))} (choose from bpb, fim, chat, speed)")
    if only:
        skip |= sections - only
    texts = {rel: data.read_file(rel) for rel in data.HELD_OUT_FILES}
    print(f"checkpoint: {args.checkpoint}")
    print(f"held-out: {len(texts)} files, {sum(len(t.encode()) for t in texts.values())} bytes "
          f"(Python {data.python_version()} standard library)")

    with tempfile.TemporaryDirectory(prefix="enclave-demo-bench-") as tmp:
        key = Ed25519PrivateKey.generate()
        start = time.perf_counter()
        bundle_dir = build_bundle(args.checkpoint, Path(tmp) / "bundle", signing_key=key, name=DEMO_NAME, version=1)
        bundle = load_bundle(bundle_dir, trusted_keys=[key.public_key()])
        print(f"bundle built in {time.perf_counter() - start:.1f} s")

        if "bpb" not in skip:
            payloads = [t.encode() for t in texts.values()]
            nbytes = sum(map(len, payloads))
            start = time.perf_counter()
            ours = model_bits(args.checkpoint, list(texts.values()), args.window, batch=8) / nbytes
            seconds = time.perf_counter() - start
            xz = sum(compressed_bits(["xz", "-9e", "-c"], p) for p in payloads) / nbytes
            zstd = sum(compressed_bits(["zstd", "-19", "-c", "-q"], p) for p in payloads) / nbytes
            print("\n== bits per byte (lower is better)")
            print(f"model  {ours:.3f}   ({seconds:.0f} s)")
            print(f"xz -9e {xz:.3f}   model/xz   {ours / xz:.2f}  (goal <= 0.67)")
            print(f"zstd -19 {zstd:.3f} model/zstd {ours / zstd:.2f}")

        engine = LLMEngine.from_bundle(bundle, num_slots=8, max_context=1024, intra_op_threads=args.threads,
                                       max_waiting=4096)  # fmt: skip
        encoder = PromptEncoder(engine.tokenizer)

        if "fim" not in skip:
            candidates = [line for rel, text in texts.items() for line in data.fim_lines(rel, text)]
            stride = max(1, len(candidates) // args.fim_lines)
            picked = candidates[::stride][: args.fim_lines]
            prompts = [
                encoder.completion(trim_lines(c.prefix, args.fim_prefix, keep_end=True),
                                   trim_lines(c.suffix, args.fim_suffix, keep_end=False))
                for c in picked
            ]  # fmt: skip
            params = SamplingParams(temperature=0.0, max_tokens=48, stop=("\n",))
            start = time.perf_counter()
            outputs = engine.generate(prompts, params)
            seconds = time.perf_counter() - start
            exact = baseline = 0
            similar = similar_base = 0.0
            for c, ids in zip(picked, outputs, strict=True):
                guess = engine.tokenizer.decode([i for i in ids if i != engine.tokenizer.eos_id]).split("\n")[0]
                previous = c.prefix.splitlines()[-1] if c.prefix else ""
                want = c.middle.strip()
                exact += guess.strip() == want
                baseline += previous.strip() == want
                # A graded figure beside the all-or-nothing one: how much of the line is right.
                similar += difflib.SequenceMatcher(None, guess.strip(), want).ratio()
                similar_base += difflib.SequenceMatcher(None, previous.strip(), want).ratio()
            n = len(picked)
            print(f"\n== single-line infilling, {n} lines of {len(candidates)} ({seconds:.0f} s)")
            print(f"model exact match          {exact / n:6.1%}  (goal >= 25%)")
            # A baseline of 0 hits makes the ratio unbounded: say so rather than print a made-up one.
            times = f"{exact / baseline:.1f}x" if baseline else f"unbounded ({exact} vs 0 lines)"
            print(f"repeat the previous line   {baseline / n:6.1%}  model/baseline {times} (goal >= 3x)")
            print(f"character similarity       model {similar / n:.3f}  previous line {similar_base / n:.3f}"
                  "  (difflib ratio, mean)")

        if "chat" not in skip:
            samples = [s for text in texts.values() for s in data.chat_samples(text)]
            samples = [s for s in samples if len(encoder.chat([ChatMessage("user", s.prompt)])) <= 384]
            samples = samples[:: max(1, len(samples) // args.chats)][: args.chats]
            prompts = [encoder.chat([ChatMessage("user", s.prompt)]) for s in samples]
            start = time.perf_counter()
            outputs = engine.generate(prompts, SamplingParams(temperature=0.0, max_tokens=320))
            seconds = time.perf_counter() - start

            def parses(sample: data.ChatSample, answer: str) -> bool:
                try:
                    ast.parse(sample.prompt + "\n" + answer)
                except SyntaxError:
                    return False
                return True

            eos = engine.tokenizer.eos_id
            answers = [engine.tokenizer.decode([i for i in ids if i != eos]) for ids in outputs]
            ok = sum(parses(s, a) for s, a in zip(samples, answers, strict=True))
            real = sum(parses(s, s.answer) for s in samples)
            ended = sum(1 for ids in outputs if ids and ids[-1] == eos)
            n = len(samples)
            print(f"\n== chat: signature + docstring -> body, {n} held-out functions ({seconds:.0f} s)")
            print(f"model answers that parse   {ok / n:6.1%}  (goal >= 80%); ended with EOS {ended / n:.0%}")
            print(f"real bodies that parse     {real / n:6.1%}  model/real {ok / max(real, 1):.2f}")

        if "speed" not in skip:
            import torch
            from transformers import DeepseekV4ForCausalLM

            from bench.engine import engine_decode_rate, reference_decode_rate

            torch.set_num_threads(args.threads)
            model = DeepseekV4ForCausalLM.from_pretrained(args.checkpoint, dtype=torch.float32).eval()
            text = "".join(texts.values())
            ids = engine.tokenizer.encode(text)
            prompts_32 = [ids[i * 500 : i * 500 + 32] for i in range(8)]
            print(f"\n== decode tokens/s, prompt 32 tokens, 48 new, {args.threads} threads")
            print(f"{'batch':>5}  {'bundle tok/s':>12}  {'transformers tok/s':>18}  {'bundle/transformers':>19}")
            for batch in (1, 8):
                runner = LLMEngine.from_bundle(bundle, num_slots=batch, max_context=96, intra_op_threads=args.threads)
                engine_decode_rate(runner, prompts_32[:batch], 4)
                rate = engine_decode_rate(runner, prompts_32[:batch], 48)
                ref = reference_decode_rate(model, prompts_32[:batch], 48)
                print(f"{batch:>5}  {rate:>12.1f}  {ref:>18.1f}  {rate / ref:>18.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
