"""``enclave model build|demo|verify|import|list``: model bundles (see appliance.model)."""

from __future__ import annotations

import argparse
import json
import signal
from pathlib import Path
from types import FrameType

__all__ = ["register"]


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="model_command", metavar="SUBCOMMAND", required=True)

    build = sub.add_parser("build", help="build a signed bundle from a DeepSeek-V4 checkpoint directory")
    build.add_argument("checkpoint", type=Path, metavar="CHECKPOINT_DIR")
    build.add_argument("out", type=Path, metavar="OUT_DIR", help="bundle directory to create (must not exist)")
    build.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default="fp32", help="activation dtype")
    build.add_argument("--quant", choices=("none", "int8", "int4"), default="none", help="weight-only quantization (int4: routed experts at 4 bits, other projections at 8)")
    build.add_argument("--stages", type=int, default=1, metavar="N", help="pipeline stages (one per GPU)")
    build.add_argument("--moe", choices=("ort", "portable"), default="ort", help="MoE implementation (ort: com.microsoft.MoE, prefill memory bounded; portable: standard ONNX ops only)")
    build.add_argument("--name", help="bundle name (default: the checkpoint directory's name)")
    build.add_argument("--version", type=int, help="bundle version, an integer (default: build time YYYYMMDDHHMMSS)")
    _signing_key_option(build)
    build.set_defaults(func=_build)

    demo = sub.add_parser("demo", help="write the shipped (trained) demo checkpoint and build its signed bundle")
    demo.add_argument("out", type=Path, metavar="OUT_DIR", help="directory to create (checkpoint/ and bundle/)")
    _signing_key_option(demo)
    demo.set_defaults(func=_demo)

    verify = sub.add_parser("verify", help="check a bundle's manifest and signature")
    verify.add_argument("bundle", type=Path, metavar="BUNDLE")
    verify.add_argument(
        "--key", type=Path, action="append", metavar="PUBFILE",
        help="trusted public key (PEM; repeatable). Default: the data directory's pinned keys",
    )  # fmt: skip
    verify.add_argument("--data", type=Path, help="data directory whose pinned keys to trust")
    verify.set_defaults(func=_verify)

    imp = sub.add_parser("import", help="install a verified bundle into the appliance and make it active")
    imp.add_argument("bundle", type=Path, metavar="BUNDLE")
    imp.add_argument("--data", type=Path, help="data directory (default: $ENCLAVE_DATA or the platform's)")
    imp.set_defaults(func=_import)

    trust = sub.add_parser("trust", help="pin a model-signing public key in the data directory")
    trust.add_argument("pubkey", type=Path, metavar="PUBFILE", help="Ed25519 public key (PEM)")
    trust.add_argument("--name", default="pinned", help="file name for the key in the trust store")
    trust.add_argument("--data", type=Path, help="data directory (default: $ENCLAVE_DATA or the platform's)")
    trust.set_defaults(func=_trust)

    pubkey = sub.add_parser("pubkey", help="print the signing key's public key (PEM), to pin on appliances")
    _signing_key_option(pubkey)
    pubkey.set_defaults(func=_pubkey)

    lst = sub.add_parser("list", help="list installed model bundles")
    lst.add_argument("--data", type=Path, help="data directory (default: $ENCLAVE_DATA or the platform's)")
    lst.set_defaults(func=_list)


def _signing_key_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--signing-key", type=Path, metavar="FILE",
        help="Ed25519 private key (PEM) to sign with. Default: the per-user key, created on first use "
        "($ENCLAVE_MODEL_SIGNING_KEY, else ~/.config/enclave/model-signing-key.pem)",
    )  # fmt: skip


def _key(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from appliance.model.signing import default_signing_key, load_private_key

    return load_private_key(args.signing_key) if args.signing_key else default_signing_key()


def _interrupt_on_sigterm() -> None:
    """A killed build unwinds like Ctrl-C, so its temporary directory is removed (see bundle.staged_directory)."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def _build(args: argparse.Namespace) -> int:
    from appliance.model.bundle import build_bundle
    from appliance.model.progress import TextProgress

    _interrupt_on_sigterm()

    out = build_bundle(
        args.checkpoint, args.out, dtype=args.dtype, quant=args.quant, stages=args.stages, moe=args.moe,
        signing_key=_key(args), name=args.name, version=args.version, progress=TextProgress(),
    )  # fmt: skip
    print(f"bundle written to {out}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from appliance.model.demo import build_demo
    from appliance.model.progress import TextProgress

    _interrupt_on_sigterm()
    paths = build_demo(args.out, signing_key=_key(args), progress=TextProgress())
    print(f"demo checkpoint: {paths.checkpoint}")
    print(f"demo bundle: {paths.bundle}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from appliance.model.bundle import load_bundle
    from appliance.model.signing import load_public_key, trusted_keys

    if args.key:
        keys = [load_public_key(path) for path in args.key]
    else:
        from appliance.db.datadir import load_data_dir

        keys = trusted_keys(load_data_dir(args.data).data_dir)
    bundle = load_bundle(args.bundle, trusted_keys=keys)
    print(
        f"bundle {bundle.name} version {bundle.version} OK: {len(bundle.manifest.files)} files match the manifest "
        f"signed by key {bundle.manifest.key_id}"
    )
    return 0


def _import(args: argparse.Namespace) -> int:
    from appliance.commands._local_admin import model_installed, record_change
    from appliance.db.base import utcnow
    from appliance.db.datadir import load_data_dir, open_database
    from appliance.model.bundle import Bundle
    from appliance.model.store import import_bundle

    settings = load_data_dir(args.data)
    with open_database(settings) as (engine, uow), uow() as session:

        def register(bundle: Bundle) -> None:
            # Recorded (with its audit event) in the transaction that commits only if the copy succeeds.
            record_change(settings, engine, session, model_installed(session, settings, bundle, now=utcnow()))

        bundle = import_bundle(args.bundle, settings.data_dir, before_install=register)
    print(f"installed {bundle.name} version {bundle.version} at {bundle.path} (active)")
    return 0


def _list(args: argparse.Namespace) -> int:
    from appliance.commands._local_admin import print_table
    from appliance.db.datadir import load_data_dir
    from appliance.model.store import is_sealed, list_models

    models = list_models(load_data_dir(args.data).data_dir)
    if not models:
        print("no models installed")
        return 0
    rows = [("", "NAME", "VERSION", "DTYPE", "QUANT", "STAGES", "SIZE", "VERIFIED", "PATH")]
    for m in models:
        info = _bundle_info(m.path)
        size = sum(f.stat().st_size for f in m.path.rglob("*") if f.is_file())
        rows.append(
            (
                "*" if m.active else "",
                m.name,
                str(m.version),
                str(info.get("dtype", "?")),
                str(info.get("quant", "?")),
                str(info.get("stages", "?")),
                f"{size / 1e6:,.1f} MB",
                "sealed" if is_sealed(m.path) else "re-hash at next load",
                str(m.path),
            )
        )
    print_table(rows)
    return 0


def _bundle_info(path: Path) -> dict[str, object]:
    """bundle.json as it stands, for display only (loading verifies it)."""
    try:
        info = json.loads((path / "bundle.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def _trust(args: argparse.Namespace) -> int:
    from appliance.db.datadir import load_data_dir
    from appliance.model.signing import key_id, load_public_key, pin_public_key

    key = load_public_key(args.pubkey)
    path = pin_public_key(load_data_dir(args.data).data_dir, key, args.name)
    print(f"trusting model-signing key {key_id(key)} ({path})")
    return 0


def _pubkey(args: argparse.Namespace) -> int:
    from appliance.model.signing import public_pem

    print(public_pem(_key(args).public_key()).decode(), end="")
    return 0
