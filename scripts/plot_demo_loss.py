#!/usr/bin/env python
"""Draw the demo model's loss curve for its model card.

    .venv/bin/python scripts/plot_demo_loss.py [LOSS_CSV] [OUT_PNG]

Reads loss.csv as scripts/train_demo_model.py writes it (default: the shipped one) and writes
docs/img/demo-model-loss.png. Dev tool (matplotlib).
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display needed
import matplotlib.pyplot as plt

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str]) -> int:
    source = Path(argv[0]) if argv else ROOT / "appliance" / "model" / "demo_model" / "loss.csv"
    out = Path(argv[1]) if len(argv) > 1 else ROOT / "docs" / "img" / "demo-model-loss.png"
    with source.open(newline="") as f:
        rows = list(csv.DictReader(f))
    train = [(int(r["tokens"]) / 1e6, float(r["train_loss"])) for r in rows if r["train_loss"]]
    held = [(int(r["tokens"]) / 1e6, float(r["held_out_loss"])) for r in rows if r["held_out_loss"]]
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=100)
    ax.plot(*zip(*train, strict=True), label="training batches (LM + FIM + chat)", linewidth=1)
    ax.plot(*zip(*held, strict=True), label="held-out files (plain text)", marker="o", markersize=3)
    ax.set_xlabel("training tokens (millions)")
    ax.set_ylabel("cross-entropy (nats / token)")
    ax.set_title("Enclave demo model: loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
