"""Benchmark password hashing: Enclave's Argon2id against scrypt at OWASP's recommended cost.

Prints the median time per hash (and per verification, which is what a login costs) for
``appliance.auth.passwords`` (Argon2id, 19 MiB, t=2, p=1 — OWASP's first Argon2id option), and,
measured in the same run on the same machine, ``hashlib.scrypt`` at OWASP's recommended
N=2**17, r=8, p=1 (128 MiB), with the ratio between them. Also the throughput one core gives an
attacker who stole the hashes, per second, for both.

    .venv/bin/python bench/passwords.py [--rounds N]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from appliance.auth.passwords import PARAMS, hash_password, verify_password

PASSWORD = "violet-harbour-tangent-57"
SCRYPT = {"n": 2**17, "r": 8, "p": 1}


def _median_s(fn: Callable[[], object], rounds: int) -> float:
    fn()  # warm-up: first allocation of the memory-hard buffer
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _scrypt() -> bytes:
    return hashlib.scrypt(PASSWORD.encode(), salt=os.urandom(16), dklen=32, maxmem=256 * 1024 * 1024, **SCRYPT)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    encoded = hash_password(PASSWORD)
    argon_hash = _median_s(lambda: hash_password(PASSWORD), args.rounds)
    argon_verify = _median_s(lambda: verify_password(PASSWORD, encoded), args.rounds)
    scrypt = _median_s(_scrypt, args.rounds)
    print(f"rounds: {args.rounds} (median of each)")
    print(
        f"argon2id m={PARAMS.memory_kib} KiB t={PARAMS.iterations} p={PARAMS.lanes}: "
        f"hash {argon_hash * 1e3:.1f} ms, verify {argon_verify * 1e3:.1f} ms "
        f"({1 / argon_verify:.1f} guesses/s per core)"
    )
    print(
        f"scrypt N=2**17 r=8 p=1 (128 MiB): hash {scrypt * 1e3:.1f} ms ({1 / scrypt:.1f} guesses/s per core)"
    )
    print(f"ratio argon2id/scrypt time per hash: {argon_hash / scrypt:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
