"""Peak memory of a prefill at V4-Flash's per-tensor dimensions, against the portable MoE's gather.

    .venv/bin/python bench/prefill_memory.py [--tokens 64,256] [--dtype fp32] [--moe ort] [--keep DIR]

Writes tests/appliance/model/test_flash_dims.py's checkpoint (hidden 4096, 64 heads x 512, experts
2048 wide, 3 layers: sliding + hash MoE, CSA, HCA; 4 experts, top-2), builds its bundle with the
product's builder, then prefills each ``--tokens`` count in one call, each in a fresh process
(tests/helpers/prefill_rss.py), and prints per count:

* how far anonymous memory rose above the loaded bundle during the prefill (the activations; the
  memory-mapped weights it pages in are reported apart);
* what ``appliance/engine/memory.py`` estimates for that call (the engine sizes its chunks by it);
* the peer: the buffers the portable path gathers for that call, ``T x k`` experts' gate/up and down
  matrices in the bundle's dtype — what an unquantized bundle needed before the fused path became
  the default (at the real 256 experts, top-6, fp16: ~300 MiB a token).

The growth between two counts is the figure that matters: activations only, so it follows
``T x (window + T)`` attention and ``T x k x`` expert width, not ``T x k x`` expert size.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from appliance.engine.memory import prefill_bytes
from appliance.model.bundle import build_bundle
from appliance.model.config import V4Config
from appliance.model.demo import write_random_checkpoint
from tests.appliance.model.test_flash_dims import FLASH, KEY
from tests.helpers.prefill_rss import measure_prefill

MIB = 1 << 20
_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}


def gather_bytes(config: V4Config, tokens: int, dtype: str) -> int:
    """The portable path's gathered expert matrices for one call of ``tokens`` tokens."""
    expert = 3 * config.moe_intermediate_size * config.hidden_size * _BYTES[dtype]
    return tokens * config.num_experts_per_tok * expert


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokens", default="64,256", help="prefill lengths, comma-separated")
    parser.add_argument("--dtype", default="fp32", choices=("fp32", "fp16"))
    parser.add_argument("--moe", default="ort", choices=("ort", "portable"))
    parser.add_argument("--context", type=int, default=512)
    parser.add_argument("--keep", type=Path, help="reuse/keep the checkpoint and bundle here")
    args = parser.parse_args()
    counts = [int(t) for t in args.tokens.split(",")]

    with tempfile.TemporaryDirectory(prefix="enclave-bench-prefill-") as tmp:
        root = args.keep or Path(tmp)
        ckpt = root / "ckpt"
        if not ckpt.exists():
            write_random_checkpoint(ckpt, FLASH)
        bundle = root / f"bundle-{args.dtype}-{args.moe}"
        if not bundle.exists():
            build_bundle(ckpt, bundle, dtype=args.dtype, moe=args.moe, signing_key=KEY, version=1)
        config = V4Config.from_dict(dict(FLASH))
        print(
            f"V4-Flash per-tensor dims, 3 layers, {config.n_routed_experts} experts top-"
            f"{config.num_experts_per_tok}, {args.dtype}, moe={args.moe}, context {args.context}, 2 threads"
        )
        rows = []
        for t in counts:
            got = measure_prefill(bundle, t, context=args.context)
            estimate = prefill_bytes(config, tokens=t, context=args.context, dtype=args.dtype, moe=args.moe)
            gather = gather_bytes(config, t, args.dtype)
            rows.append((t, got["grown_mib"], gather / MIB))
            print(
                f"T={t:5d}: prefill peak +{got['grown_mib']:7.0f} MiB anonymous over the loaded {got['anon_mib']:.0f}"
                f" (+{got['file_mib']:.0f} MiB of weights paged in)"
                f" | estimate {estimate / MIB:7.0f} MiB | portable gather {gather / MIB:8.0f} MiB"
                f" ({gather / MIB / max(got['grown_mib'], 1):5.1f}x the measured peak)"
            )
        if len(rows) > 1:
            (t0, m0, g0), (t1, m1, g1) = rows[0], rows[-1]
            print(
                f"T {t0} -> {t1}: measured +{m1 - m0:.0f} MiB, the portable gather +{g1 - g0:.0f} MiB"
                f" ({(g1 - g0) / max(m1 - m0, 1):.1f}x)"
            )


if __name__ == "__main__":
    main()
