"""The ``enclave-lsp`` command: the language server on stdio, and the one-time set-up an editor
cannot do for itself.

    enclave-lsp                                   serve LSP on stdin/stdout (what editors run)
    enclave-lsp connect URL CA_FILE --fingerprint FP   pin the appliance's CA (the fingerprint
                                                  your administrator gave, as `enclave init` printed it)
    enclave-lsp sign-in --token-stdin             store an API token in the keyring
    enclave-lsp sign-in --username NAME [--account ldap|local]
                                                  sign in with a password (read from stdin): the
                                                  directory's (LDAP / Active Directory) or a local
                                                  account's; by default the last choice, else the
                                                  directory when the appliance offers one
    enclave-lsp status                            who is signed in where

The profile and the keyring entry are the desktop client's: connecting in either serves both.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import sys
from collections.abc import Sequence

from shared.version import VERSION

__all__ = ["main"]

# The [desktop] extra's import names the language server needs, in the order a missing one is reported.
REQUIRED = ("pygls", "lsprotocol", "keyring", "httpx", "pathspec")


def _absent(name: str) -> bool:
    if sys.modules.get(name, False) is None:  # blocked, as tests and some packagers do
        return True
    try:
        return importlib.util.find_spec(name) is None
    except (ImportError, ValueError):
        return True


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="enclave-lsp", description="Enclave language server (LSP over stdio)")
    parser.add_argument("--version", action="version", version=f"enclave-lsp {VERSION}")
    parser.add_argument("--stdio", action="store_true", help="serve on stdin/stdout (the default)")
    sub = parser.add_subparsers(dest="action")
    connect = sub.add_parser("connect", help="pin the appliance's CA certificate")
    connect.add_argument("url")
    connect.add_argument("ca_file")
    connect.add_argument("--fingerprint", required=True, help="the CA's SHA-256 fingerprint, to compare")
    sign_in = sub.add_parser("sign-in", help="sign in; the token goes to the system keyring")
    how = sign_in.add_mutually_exclusive_group(required=True)
    how.add_argument("--token-stdin", action="store_true", help="read an API token from stdin")
    how.add_argument("--username", help="sign in with this user's password, read from stdin")
    sign_in.add_argument(
        "--account", choices=("ldap", "local"), default="",
        help="the password is the site directory's (ldap) or a local Enclave account's (local)",
    )
    sub.add_parser("sign-out", help="remove the stored token")
    sub.add_parser("status", help="print who is signed in where (JSON)")
    return parser


async def _setup(args: argparse.Namespace) -> int:
    from desktop.client.credentials import CredentialStore
    from desktop.client.profile import ProfileStore
    from desktop.dirs import Dirs
    from desktop.lsp.connection import Connection

    said: list[str] = []
    connection = Connection(ProfileStore(Dirs.for_user().config), CredentialStore(), notify=lambda m, e: said.append(m))
    try:
        if args.action == "connect":
            profile = await connection.connect(args.url, args.ca_file, args.fingerprint)
            print(f"pinned CA {profile.ca_fingerprint} for {profile.url}")
        elif args.action == "sign-in":
            secret = sys.stdin.readline().strip()
            if args.token_stdin:
                info = await connection.sign_in_token(secret)
            else:
                info = await connection.sign_in_password(args.username, secret, args.account)
            print(f"signed in to {info.url} as {info.username} (model {info.model})")
        elif args.action == "sign-out":
            await connection.sign_out()
            print("signed out")
        else:
            info = await connection.session()
            print(json.dumps({"url": info.url, "username": info.username, "model": info.model,
                              "expiresAt": info.expires_at.isoformat()}))
    finally:
        await connection.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    missing = [name for name in REQUIRED if _absent(name)]
    if missing:
        print(
            f"enclave-lsp: error: the language server needs {', '.join(missing)}; "
            "install it with: pip install 'enclave-codegen[desktop]'",
            file=sys.stderr,
        )
        return 1
    from shared.errors import EnclaveError

    if args.action is not None:
        try:
            return asyncio.run(_setup(args))
        except EnclaveError as exc:
            print(f"enclave-lsp: error: {str(exc).removeprefix('Enclave: ')}", file=sys.stderr)
            return 1
    from desktop.lsp.server import build_server

    build_server().start_io()
    return 0
