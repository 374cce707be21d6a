#!/usr/bin/env python
"""Train Enclave's demo model: a small DeepSeek-V4-architecture code model on the standard library.

    .venv/bin/python scripts/train_demo_model.py OUT_DIR [--max-minutes 60] [--device cpu|cuda]

Dev tool (torch + the transformers V4 reference, both dev dependencies); the product only reads
what it writes. OUT_DIR gets, and rewrites atomically every ``--save-minutes``, a checkpoint the
appliance reads as it is (config.json, model.safetensors in bf16, tokenizer.json,
generation_config.json) plus training.json (corpus digest, Python version, held-out files, steps,
figures) and loss.csv (the curve; written as it goes to OUT_DIR.loss.csv). A run cut short therefore still leaves a usable model, and the
learning-rate schedule runs on ``max(step / steps, elapsed / budget)`` so a wall-clock budget ends
with a decayed rate, as a full run does.

``--qat-int4`` trains the routed experts for the int4 bundle (scripts/demo_qat.py: fake quantization
onto the grid the builder's quantizer keeps exactly, straight-through gradients) and stores them on
that grid, so the int4 bundle's experts are the checkpoint's own. With ``--init-from`` it continues a
checkpoint; keep ``--lr`` near where that run ended and ``--warmup 0`` (``--lr-hold`` holds it for a
share of the run before the decay).

Copy the result into the package with ``--ship`` (appliance/model/demo_model/) and redraw the
model card's picture with ``scripts/plot_demo_loss.py``. docs/demo-model.md says what the defaults are
and why.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import math
import os
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import demo_qat  # noqa: E402  - beside this script (its directory is sys.path[0])
import torch  # noqa: E402
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402
from torch.nn.utils import parametrize  # noqa: E402
from transformers import DeepseekV4Config, DeepseekV4ForCausalLM  # noqa: E402

from appliance.model import demo_data as data  # noqa: E402
from appliance.model.bundle import SPECIAL_TOKENS  # noqa: E402
from appliance.model.demo import SPECIALS_IN_ID_ORDER  # noqa: E402

SHIP_DIR = ROOT / "appliance" / "model" / "demo_model"

# V4's BOS/EOS ids are 0 and 1, and the demo keeps them there. V4's other special tokens sit near id
# 128,800 (its 129,280-entry vocabulary); at those ids the embedding and head alone would be 2 x 129k
# x hidden — about 100 MB at hidden 192 — so the rest follow BOS/EOS at ids 2..9. The product finds
# every special token by its text (PromptEncoder, bundle.json's special ids), never by a fixed id, so
# its chat and FIM encoders are used unchanged. The order is appliance.model.demo's SPECIALS_IN_ID_ORDER.


def model_config(vocab_size: int, *, hidden: int) -> dict[str, Any]:
    """Every V4 part at a size a 2-core CPU trains in an hour and that ships in < 16 MB (bf16)."""
    return {
        "vocab_size": vocab_size,
        "hidden_size": hidden,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 1,
        "head_dim": 64,
        "q_lora_rank": hidden // 2,
        "o_groups": 2,
        "o_lora_rank": hidden // 2,
        "moe_intermediate_size": 128,
        "n_routed_experts": 8,
        "n_shared_experts": 1,
        "num_experts_per_tok": 2,
        "index_n_heads": 2,
        "index_head_dim": 32,
        "index_topk": 16,
        "sliding_window": 64,
        "compress_rates": {"compressed_sparse_attention": 4, "heavily_compressed_attention": 16},
        "layer_types": [
            "sliding_attention",
            "compressed_sparse_attention",
            "heavily_compressed_attention",
            "compressed_sparse_attention",
        ],
        "mlp_layer_types": ["hash_moe", "moe", "moe", "moe"],
        "hc_mult": 2,
        "partial_rotary_factor": 0.5,
        "max_position_embeddings": 8192,
        "rope_parameters": {
            "rope_type": "yarn",
            "factor": 16.0,
            "original_max_position_embeddings": 512,
            "beta_fast": 32,
            "beta_slow": 1,
        },
        "initializer_range": 0.02,
        "tie_word_embeddings": False,
        "bos_token_id": 0,
        "eos_token_id": 1,
        "pad_token_id": 9,
    }


def train_tokenizer(texts: list[str], vocab_size: int) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[AddedToken(t, special=True, normalized=False) for t in SPECIALS_IN_ID_ORDER],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    for i, text in enumerate(SPECIALS_IN_ID_ORDER):
        assert tok.token_to_id(text) == i, text
    return tok


class Samples:
    """Draws training rows: samples of the three formats, packed into rows of ``seq`` tokens."""

    def __init__(
        self,
        texts: list[str],
        tok: Tokenizer,
        seq: int,
        seed: int,
        fim_share: float,
        chat_share: float,
        single_line: float = 0.6,
    ):
        self.tok = tok
        self.seq = seq
        self.rng = random.Random(seed)
        self.files = [t.splitlines(keepends=True) for t in texts if t.strip()]
        self.weights = [len(t) for t in texts if t.strip()]
        self.chats = [c for t in texts for c in data.chat_samples(t)]
        self.fim_share = fim_share
        self.chat_share = chat_share
        self.single_line = single_line
        self.pad = SPECIALS_IN_ID_ORDER.index(SPECIAL_TOKENS["pad"])

    def _window(self, max_bytes: int) -> list[str]:
        lines = self.rng.choices(self.files, weights=self.weights)[0]
        start = self.rng.randrange(len(lines))
        out: list[str] = []
        size = 0
        for line in lines[start:]:
            if size + len(line) > max_bytes and out:
                break
            out.append(line)
            size += len(line)
        return out

    def _encode(self, text: str) -> list[int]:
        return list(self.tok.encode(text, add_special_tokens=False).ids)

    def sample(self, room: int) -> tuple[str, list[int]]:
        roll = self.rng.random()
        if roll < self.chat_share and self.chats:
            for _ in range(4):
                ids = self._encode(data.chat_text(self.rng.choice(self.chats)))
                if len(ids) <= room:
                    return "chat", ids
        if roll < self.chat_share + self.fim_share:
            budget = room * 3
            for _ in range(4):
                lines = self._window(self.rng.randint(budget // 4, budget))
                ids = self._encode(data.fim_text(*data.sample_fim_split(lines, self.rng, self.single_line)))
                if len(ids) <= room:
                    return "fim", ids
                budget //= 2
        lines = self._window(room * 4)
        return "lm", self._encode(data.lm_text("".join(lines)))[:room]

    def batch(self, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.full((rows, self.seq), self.pad, dtype=torch.long)
        labels = torch.full((rows, self.seq), -100, dtype=torch.long)
        for r in range(rows):
            at = 0
            while self.seq - at >= 32:
                _, sample = self.sample(self.seq - at)
                ids[r, at : at + len(sample)] = torch.tensor(sample)
                labels[r, at : at + len(sample)] = torch.tensor(sample)
                at += len(sample)
        return ids, labels


def held_out_rows(tok: Tokenizer, seq: int, rows: int) -> torch.Tensor:
    """Fixed held-out LM rows for the curve: BOS + a slice of the held-out text, as LM rows are."""
    stream: list[int] = []
    for rel in data.HELD_OUT_FILES:
        stream += list(tok.encode(data.read_file(rel), add_special_tokens=False).ids)
    step = max(seq, (len(stream) - seq) // rows)
    bos = SPECIALS_IN_ID_ORDER.index(SPECIAL_TOKENS["bos"])
    return torch.tensor([[bos, *stream[i * step : i * step + seq - 1]] for i in range(rows)])


def init_model(config: DeepseekV4Config, seed: int) -> DeepseekV4ForCausalLM:
    torch.manual_seed(seed)
    model = DeepseekV4ForCausalLM(config).float()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith("tid2eid"):
                # transformers leaves the hash table constant; a released one routes each token to
                # distinct experts, spread evenly.
                n = config.n_routed_experts
                buf.copy_(
                    torch.stack(
                        [torch.randperm(n, generator=gen)[: buf.shape[1]] for _ in range(buf.shape[0])]
                    )
                )
    return model


def save(
    model: DeepseekV4ForCausalLM,
    tok: Tokenizer,
    out: Path,
    record: dict[str, Any],
    log: Path,
    *,
    qat: bool = False,
) -> None:
    """Write the checkpoint into ``out`` atomically (a sibling directory, then renames).

    ``qat``: the routed experts are stored as their int4 grid values (exact in bf16), which the
    builder's int4 quantizer keeps bit for bit.
    """
    tmp = out.with_name(out.name + ".saving")
    shutil.rmtree(tmp, ignore_errors=True)
    if qat:
        demo_qat.detach(model)  # a parametrized model is not copied (demo_qat.detach says why)
    shipped = copy.deepcopy(model)
    if qat:
        demo_qat.attach(model)
        demo_qat.store_snapped(shipped)
    shipped = shipped.to(dtype=torch.bfloat16).eval()  # type: ignore[call-arg]  # transformers types .to oddly
    shipped.save_pretrained(tmp, safe_serialization=True)
    tok.save(str(tmp / "tokenizer.json"))
    generation = {"bos_token_id": 0, "eos_token_id": 1, "do_sample": True, "temperature": 0.2}
    (tmp / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    (tmp / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    shutil.copy(log, tmp / "loss.csv")
    old = out.with_name(out.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="checkpoint directory to write (rewritten as training goes)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--steps", type=int, default=3000, help="optimizer steps at most")
    p.add_argument("--max-minutes", type=float, default=60.0, help="wall-clock budget for the training loop")
    p.add_argument("--save-minutes", type=float, default=5.0)
    p.add_argument("--batch", type=int, default=16, help="rows a step (scale up with --device cuda)")
    p.add_argument("--seq", type=int, default=256, help="tokens a row")
    p.add_argument("--hidden", type=int, default=192)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=100, help="warm-up steps (0: start at --lr)")
    p.add_argument(
        "--lr-hold",
        type=float,
        default=0.0,
        help="share of the run held at --lr before the cosine decay (a fine-tune: 0.5)",
    )
    p.add_argument("--fim-share", type=float, default=0.5)
    p.add_argument("--chat-share", type=float, default=0.15)
    p.add_argument("--fim-single-line", type=float, default=0.6, help="share of FIM holes that are one line")
    p.add_argument("--init-from", type=Path, help="continue from this checkpoint (its weights and tokenizer)")
    p.add_argument(
        "--qat-int4",
        action="store_true",
        help="train the routed experts on the int4 bundle's grid (fake quantization, straight-through) "
        "and store them on it",
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=20260424)
    p.add_argument("--ship", action="store_true", help=f"copy the finished checkpoint to {SHIP_DIR}")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.time()

    files = data.training_files()
    texts = [data.read_file(f) for f in files]
    previous: dict[str, Any] | None = None
    if args.init_from:
        # A fine-tune keeps the tokenizer (the embedding rows are its ids) and the architecture.
        tok = Tokenizer.from_file(str(args.init_from / "tokenizer.json"))
        model = DeepseekV4ForCausalLM.from_pretrained(args.init_from, dtype=torch.float32)
        model = model.to(args.device).train()
        previous = json.loads((args.init_from / "training.json").read_text())
        print(f"continuing from {args.init_from} ({previous.get('steps')} steps)", flush=True)
    else:
        tok = train_tokenizer(texts, args.vocab)
        model = init_model(
            DeepseekV4Config(**model_config(tok.get_vocab_size(), hidden=args.hidden)), args.seed
        )
        model = model.to(args.device).train()
    print(
        f"corpus: {len(files)} files, {sum(map(len, texts)) / 1e6:.1f} MB; tokenizer {tok.get_vocab_size()} "
        f"entries ({time.time() - started:.0f} s)",
        flush=True,
    )
    n_params = sum(p.numel() for p in model.parameters())
    if args.qat_int4:
        # Before the optimizer is made: the parametrization keeps each weight's Parameter object.
        print(f"int4 quantization-aware training: {demo_qat.attach(model)} routed-expert weights", flush=True)
    samples = Samples(texts, tok, args.seq, args.seed, args.fim_share, args.chat_share, args.fim_single_line)
    held = held_out_rows(tok, args.seq, 16).to(args.device)

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    rest = [p for n, p in model.named_parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.95),
    )
    record: dict[str, Any] = {
        "python": data.python_version(),
        "corpus": "CPython standard library source (.py), PSF licence",
        "corpus_files": len(files),
        "corpus_digest": data.corpus_digest(files),
        "held_out_files": list(data.HELD_OUT_FILES),
        "parameters": n_params,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "objectives": {
            "lm": 1 - args.fim_share - args.chat_share,
            "fim": args.fim_share,
            "chat": args.chat_share,
            "fim_single_line": args.fim_single_line,
        },
    }
    if args.qat_int4:
        record["qat_int4"] = {
            "weights": "routed experts (gate_up_proj, down_proj)",
            "block": demo_qat.QUANT_BLOCK,
            "levels": list(demo_qat.LEVELS),
            "scale_significant_bits": demo_qat.SCALE_BITS,
            "estimator": "straight-through",
        }
    if previous is not None:
        record["continued_from"] = previous
    args.out.parent.mkdir(parents=True, exist_ok=True)
    log_path = args.out.with_name(args.out.name + ".loss.csv")  # beside the checkpoint, copied in on save
    log = open(log_path, "w", newline="")  # noqa: SIM115 - held for the whole run
    writer = csv.writer(log)
    writer.writerow(["step", "minutes", "tokens", "lr", "train_loss", "held_out_loss"])
    # A continued run's curve goes on from the previous one's: its rows first, then ours offset by
    # its steps, minutes and tokens (the schedule still counts this run's steps from 0).
    base_step, base_minutes, base_tokens = 0, 0.0, 0
    if args.init_from and (args.init_from / "loss.csv").exists():
        with open(args.init_from / "loss.csv", newline="") as f:
            for row in list(csv.reader(f))[1:]:
                writer.writerow(row)
                base_step, base_minutes, base_tokens = int(row[0]), float(row[1]), int(row[2])
    budget = args.max_minutes * 60
    loop_start = time.time()
    last_save = loop_start
    tokens = 0
    running: list[float] = []
    step = 0
    print(
        f"model: {n_params / 1e6:.2f} M parameters; training for {args.steps} steps or {args.max_minutes} min",
        flush=True,
    )
    while True:
        progress = max(step / args.steps, (time.time() - loop_start) / budget)
        if progress >= 1.0:
            break
        warm = min(1.0, (step + 1) / args.warmup) if args.warmup > 0 else 1.0
        decayed = max(0.0, progress - args.lr_hold) / (1.0 - args.lr_hold)
        lr = args.lr * warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * decayed)))
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y = samples.batch(args.batch)
        x, y = x.to(args.device), y.to(args.device)
        with parametrize.cached():  # each fake-quantized weight computed once a step (--qat-int4)
            loss = model(x, labels=y).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step += 1
        tokens += int((y != -100).sum())
        running.append(loss.item())
        if step % 25 == 0:
            held_loss = ""
            if step % 100 == 0:
                model.eval()
                with torch.no_grad(), parametrize.cached():
                    held_loss = f"{float(model(held, labels=held).loss):.4f}"
                model.train()
            minutes = (time.time() - loop_start) / 60
            writer.writerow(
                [
                    base_step + step,
                    f"{base_minutes + minutes:.2f}",
                    base_tokens + tokens,
                    f"{lr:.6f}",
                    f"{sum(running) / len(running):.4f}",
                    held_loss,
                ]
            )
            log.flush()
            print(
                f"step {step} {minutes:.1f} min loss {sum(running) / len(running):.3f} held {held_loss} lr {lr:.2e}",
                flush=True,
            )
            running = []
        if time.time() - last_save > args.save_minutes * 60:
            save(
                model,
                tok,
                args.out,
                {**record, "steps": step, "tokens": tokens, "finished": False},
                log_path,
                qat=args.qat_int4,
            )
            last_save = time.time()
    model.eval()
    if args.qat_int4:
        demo_qat.store_snapped(model)  # the final figures are the stored model's
    with torch.no_grad():
        final = float(model(held, labels=held).loss)
    writer.writerow(
        [
            base_step + step,
            f"{base_minutes + (time.time() - loop_start) / 60:.2f}",
            base_tokens + tokens,
            "0",
            "",
            f"{final:.4f}",
        ]
    )
    log.close()
    record.update(
        steps=step,
        tokens=tokens,
        finished=True,
        held_out_loss=final,
        minutes=round((time.time() - started) / 60, 1),
    )
    save(model, tok, args.out, record, log_path, qat=args.qat_int4)
    print(
        f"done: {step} steps, {tokens / 1e6:.2f} M tokens, held-out loss {final:.3f} -> {args.out}",
        flush=True,
    )
    if args.ship:
        shutil.rmtree(SHIP_DIR, ignore_errors=True)
        shutil.copytree(args.out, SHIP_DIR)
        print(f"shipped to {SHIP_DIR}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    raise SystemExit(main())
