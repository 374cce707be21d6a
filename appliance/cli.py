"""The ``enclave`` command.

Each top-level command lives in its own module under ``appliance.commands`` and exposes
``register(parser)``, which adds its arguments (and sub-commands) and sets ``func`` — a callable
taking the parsed namespace and returning an exit code. This module only dispatches and turns
:class:`shared.errors.EnclaveError` into a one-line message and a non-zero exit.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from shared.errors import EnclaveError
from shared.version import VERSION

__all__ = ["main"]

# command -> (module, one-line help). Modules are imported lazily so `enclave user list` does not
# pay for onnxruntime or FastAPI.
COMMANDS: dict[str, tuple[str, str]] = {
    "init": ("appliance.commands.init", "create a data directory: settings, database, keys, TLS, first admin"),
    "serve": ("appliance.commands.serve", "serve the API over HTTPS"),
    "demo": ("appliance.commands.demo", "one command for a newcomer: temp data dir + demo model + serve"),
    "user": ("appliance.commands.user", "manage users"),
    "team": ("appliance.commands.team", "manage teams, their members and their policies"),
    "token": ("appliance.commands.token", "manage API tokens"),
    "group-map": ("appliance.commands.group_map", "map identity-provider groups to teams and roles"),
    "model": ("appliance.commands.model", "build, verify, import and list model bundles"),
    "generate": ("appliance.commands.generate", "run a model bundle offline, without the server"),
    "audit": ("appliance.commands.audit", "verify, export, checkpoint and purge the audit log"),
    "bundle": ("appliance.commands.bundle", "build and verify the offline installer bundle"),
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def _build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = _Parser(prog="enclave", description="Enclave appliance")
    parser.add_argument("--version", action="version", version=f"enclave {VERSION}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    wanted = next((a for a in argv if not a.startswith("-")), None)
    for name, (module, help_text) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        # Import only the module the user asked for; the others are listed with their help.
        if name == wanted:
            importlib.import_module(module).register(cmd)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = _build_parser(args_list)
    args = parser.parse_args(args_list)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(func(args) or 0)
    except EnclaveError as exc:
        print(f"enclave: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("enclave: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `enclave audit export | head`: the reader left; that is not an error worth a traceback.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
