"""The checkpoint engineer's demo model, built once per test session for engine tests.

``demo_paths(tmp_factory)`` returns (checkpoint dir, bundle dir, public key file) — the bundle signed
with a throwaway key whose public half is written next to it, so tests verify it like production.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appliance.model.bundle import Bundle, load_bundle
from appliance.model.demo import build_demo
from appliance.model.signing import public_pem


@dataclass(frozen=True)
class Demo:
    checkpoint: Path
    bundle_dir: Path
    public_key: Path
    key: Ed25519PrivateKey

    def bundle(self) -> Bundle:
        return load_bundle(self.bundle_dir, trusted_keys=[self.key.public_key()])


def build_demo_model(root: Path) -> Demo:
    key = Ed25519PrivateKey.generate()
    paths = build_demo(root / "demo", signing_key=key)
    pub = root / "demo-signer.pub"
    pub.write_bytes(public_pem(key.public_key()))
    return Demo(Path(paths.checkpoint), Path(paths.bundle), pub, key)
