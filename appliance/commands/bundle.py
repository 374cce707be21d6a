"""``enclave bundle build|verify|keygen``: the offline installer bundle (see installers/offline)."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["register"]


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bundle_command", metavar="SUBCOMMAND", required=True)

    build = sub.add_parser(
        "build", help="collect wheels, model bundles and service files into a signed bundle"
    )
    build.add_argument("out", type=Path, metavar="OUT", help="directory to create (must not exist)")
    build.add_argument("--gpu", action="store_true", help="include the CUDA build of ONNX Runtime")
    build.add_argument(
        "--model",
        dest="models",
        type=Path,
        action="append",
        default=[],
        metavar="BUNDLE",
        help="a model bundle directory to ship (repeatable)",
    )
    build.add_argument(
        "--model-key",
        dest="model_keys",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="public key that signed a model bundle (default: this machine's model signing key)",
    )
    build.add_argument(
        "--platform",
        dest="platforms",
        action="append",
        default=[],
        metavar="TAG",
        help="target wheel platform, e.g. manylinux_2_28_x86_64 (repeatable; default: this machine)",
    )
    build.add_argument("--python-version", metavar="X.Y", help="target Python (default: this one)")
    build.add_argument(
        "--signing-key",
        type=Path,
        metavar="FILE",
        help="Ed25519 private key (PEM); default: a new key written to OUT.signing-key.pem",
    )
    build.add_argument(
        "--source", type=Path, metavar="DIR", help="source tree to build the appliance wheel from"
    )
    build.add_argument("--wheel", type=Path, metavar="FILE", help="use this prebuilt appliance wheel")
    build.add_argument("--version", metavar="X.Y.Z", help="bundle version (default: the appliance's)")
    build.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help="resolve the newest dependencies instead of the versions installed here",
    )
    build.set_defaults(func=_build)

    verify = sub.add_parser("verify", help="check a bundle's signature, files and version")
    verify.add_argument("bundle", type=Path, metavar="BUNDLE")
    trust = verify.add_mutually_exclusive_group()
    trust.add_argument("--key", type=Path, metavar="FILE", help="the pinned signer's public key (PEM)")
    trust.add_argument("--fingerprint", metavar="HEX", help="the signer's key fingerprint (sha256, hex)")
    verify.add_argument(
        "--installed",
        type=Path,
        metavar="MANIFEST",
        help="manifest of the installed bundle: refuse an older version or another build of it",
    )
    verify.set_defaults(func=_verify)

    keygen = sub.add_parser("keygen", help="create an Ed25519 signing key for bundles")
    keygen.add_argument("path", type=Path, metavar="FILE")
    keygen.set_defaults(func=_keygen)


def _build(args: argparse.Namespace) -> int:
    from installers.offline.build import build_bundle

    built = build_bundle(
        args.out,
        models=args.models,
        model_keys=args.model_keys,
        gpu=args.gpu,
        platforms=args.platforms,
        python_version=args.python_version,
        signing_key=args.signing_key,
        source=args.source,
        wheel=args.wheel,
        version=args.version,
        pin_installed=args.pin,
    )
    m = built.manifest
    print(f"bundle {m.version} written to {built.path}: {len(m.files)} files, {len(m.models)} model(s)")
    if built.new_key is not None:
        print(f"new signing key: {built.new_key} (keep it secret; sign this site's updates with it)")
    print(f"signer fingerprint: {built.signer}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from installers.offline.verify import verify_bundle

    result = verify_bundle(
        args.bundle,
        key=args.key,
        expected_fingerprint=args.fingerprint,
        installed_manifest=args.installed,
    )
    m = result.manifest
    print(f"bundle {m.version} OK: {len(m.files)} files match the signed manifest")
    if result.pinned:
        print(f"signer: {result.signer} (pinned)")
    else:
        print(f"signer: {result.signer} (NOT pinned: compare it with the fingerprint from the publisher)")
    if not result.upgrade:
        print("this exact bundle is already installed")
    return 0


def _keygen(args: argparse.Namespace) -> int:
    from installers.offline.manifest import fingerprint, generate_signing_key

    key = generate_signing_key(args.path)
    print(f"signing key written to {args.path}")
    print(f"fingerprint: {fingerprint(key.public_key())}")
    return 0
