"""``enclave team add|list|show|set-policy|add-member|remove-member`` on a data directory.

A team's policy is what its members may do: the models they may use (fnmatch patterns), their
quotas, how much of their prompts the audit log keeps, and the project paths the desktop client
never sends. A user in several teams gets the strictest combination (appliance/auth/policy.py).
Every change is recorded in the audit log in the same transaction; bad input is a one-line error and
changes nothing.
"""

from __future__ import annotations

import argparse

from appliance.auth import admin
from appliance.auth.policy import CaptureMode
from appliance.commands._local_admin import action_subparsers, format_time, print_table, record_change
from appliance.db.base import utcnow
from appliance.db.datadir import load_data_dir, open_database
from shared.errors import InputError

__all__ = ["register"]

UNLIMITED = "unlimited"
# Quota flag -> policy field; each takes a non-negative integer or "unlimited".
QUOTAS = {
    "--requests-per-minute": "requests_per_minute",
    "--tokens-per-minute": "tokens_per_minute",
    "--concurrent-streams": "concurrent_streams",
    "--max-prompt-tokens": "max_prompt_tokens",
    "--max-output-tokens": "max_output_tokens",
    "--max-reasoning-tokens": "max_reasoning_tokens",
}


def _quota_arg(text: str) -> int | str:
    if text.strip().lower() == UNLIMITED:
        return UNLIMITED
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer or {UNLIMITED!r}, got {text!r}")
    return value


def _policy_values(args: argparse.Namespace) -> dict[str, object]:
    """The policy fields given on the command line (absent flags are left out)."""
    values: dict[str, object] = {}
    for field in QUOTAS.values():
        if getattr(args, field) is not None:
            values[field] = None if getattr(args, field) == UNLIMITED else getattr(args, field)
    if args.allow_model is not None:
        values["allowed_models"] = args.allow_model
    if args.no_path_exclusions:
        values["path_exclusions"] = []
    elif args.exclude_path is not None:
        values["path_exclusions"] = args.exclude_path
    if args.capture is not None:
        values["capture_mode"] = args.capture
    if args.thinking is not None:
        values["allow_thinking"] = args.thinking == "allow"
    return values


def _add(args: argparse.Namespace) -> int:
    settings = load_data_dir(args.data)
    with open_database(settings) as (engine, uow), uow() as session:
        change = admin.create_team(session, args.name, now=utcnow(), policy=_policy_values(args))
        record_change(settings, engine, session, change)
    print(f"created team {change.target.removeprefix('team:')}")
    _print_policy(change.new)
    return 0


def _list(args: argparse.Namespace) -> int:
    settings = load_data_dir(args.data)
    with open_database(settings) as (_, uow), uow() as session:
        rows = [("TEAM", "MEMBERS", "MODELS", "CAPTURE", "REQ/MIN", "TOK/MIN", "CREATED")]
        for team in admin.list_teams(session):
            policy = team.policy
            rows.append(
                (
                    team.name,
                    str(len(team.memberships)),
                    ",".join(policy.allowed_models) if policy else "(no policy: no access)",
                    policy.capture_mode if policy else "-",
                    _shown(policy.requests_per_minute) if policy else "-",
                    _shown(policy.tokens_per_minute) if policy else "-",
                    format_time(team.created_at),
                )
            )
    print_table(rows)
    return 0


def _show(args: argparse.Namespace) -> int:
    settings = load_data_dir(args.data)
    with open_database(settings) as (_, uow), uow() as session:
        policy = admin.get_policy(session, args.name)
        members = sorted(
            u.username for u in admin.list_users(session) if args.name.strip().lower() in u.teams
        )
    print(
        f"team {args.name.strip().lower()}: {len(members)} member(s){': ' if members else ''}{', '.join(members)}"
    )
    if policy is None:
        print("no policy: its members get no access through this team")
    else:
        _print_policy(policy)
    return 0


def _set_policy(args: argparse.Namespace) -> int:
    settings = load_data_dir(args.data)
    values = _policy_values(args)
    if not values:
        raise InputError("give at least one policy option to change (see `enclave team set-policy --help`)")
    with open_database(settings) as (engine, uow), uow() as session:
        change = admin.set_policy(session, args.name, now=utcnow(), **values)
        record_change(settings, engine, session, change)
    old, new = change.old or {}, change.new or {}
    changed = [key for key in new if old.get(key) != new[key]]
    print(
        f"{change.target}: "
        + ("; ".join(f"{k} {old.get(k)!r} -> {new[k]!r}" for k in changed) or "unchanged")
    )
    return 0


def _membership(args: argparse.Namespace) -> int:
    settings = load_data_dir(args.data)
    with open_database(settings) as (engine, uow), uow() as session:
        if args.action == "add-member":
            change = admin.add_member(session, args.user, args.name, now=utcnow())
        else:
            change = admin.remove_member(session, args.user, args.name, now=utcnow())
        record_change(settings, engine, session, change)
    verb = "added to" if args.action == "add-member" else "removed from"
    print(f"{change.target.removeprefix('user:')} {verb} team {args.name.strip().lower()}")
    return 0


def _shown(value: object) -> str:
    return UNLIMITED if value is None else str(value)


def _print_policy(policy: dict[str, object] | None) -> None:
    for key, value in (policy or {}).items():
        shown = ", ".join(map(str, value)) or "-" if isinstance(value, list) else _shown(value)
        print(f"  {key.replace('_', ' ')}: {shown}")


def _policy_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("policy")
    group.add_argument(
        "--allow-model", action="append", metavar="PATTERN",
        help="model name pattern its members may use (fnmatch, e.g. 'deepseek-*'; repeatable; replaces the list)",
    )  # fmt: skip
    for flag, field in QUOTAS.items():
        group.add_argument(
            flag, dest=field, type=_quota_arg, metavar="N", help=f"{field.replace('_', ' ')} (or {UNLIMITED})"
        )
    group.add_argument(
        "--capture", choices=[m.value for m in CaptureMode],
        help="what the audit log keeps of prompts and outputs: none, digest (sha256) or sealed (encrypted)",
    )  # fmt: skip
    group.add_argument(
        "--exclude-path", action="append", metavar="GLOB",
        help="project path the desktop client never sends (repeatable; replaces the list)",
    )  # fmt: skip
    group.add_argument("--no-path-exclusions", action="store_true", help="clear the path exclusions")
    group.add_argument(
        "--thinking", choices=["allow", "forbid"],
        help="whether members may ask for thinking mode (reasoning before the answer)",
    )  # fmt: skip


def register(parser: argparse.ArgumentParser) -> None:
    sub, common = action_subparsers(parser)

    add = sub.add_parser(
        "add", parents=[common], help="create a team (policy: the defaults, changed by the options)"
    )
    add.add_argument("name")
    _policy_options(add)
    add.set_defaults(func=_add)

    sub.add_parser("list", parents=[common], help="list teams and their policies").set_defaults(func=_list)

    show = sub.add_parser("show", parents=[common], help="a team's members and whole policy")
    show.add_argument("name")
    show.set_defaults(func=_show)

    set_policy = sub.add_parser("set-policy", parents=[common], help="change some fields of a team's policy")
    set_policy.add_argument("name")
    _policy_options(set_policy)
    set_policy.set_defaults(func=_set_policy)

    for action, help_text in (
        ("add-member", "add a user to a team"),
        ("remove-member", "remove a user from a team"),
    ):
        cmd = sub.add_parser(action, parents=[common], help=help_text)
        cmd.add_argument("name", metavar="TEAM")
        cmd.add_argument("user", metavar="USER")
        cmd.set_defaults(func=_membership)
