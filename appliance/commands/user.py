"""``enclave user add|list|disable|enable|set-role|unlock|reset-password`` on a data directory.

The operator at the appliance's shell acts with the data directory's authority. Every change is
recorded in the audit log in the same transaction; bad input is a one-line error and changes
nothing.
"""

from __future__ import annotations

import argparse

from appliance.audit.keys import load_audit_keys
from appliance.auth import admin, throttle
from appliance.commands._local_admin import action_subparsers, format_time, print_table, record_change
from appliance.db.base import utcnow
from appliance.db.datadir import load_data_dir, open_database

__all__ = ["register"]



def _add(args: argparse.Namespace) -> int:
    settings = load_data_dir(args.data)
    teams = args.team or [admin.DEFAULT_TEAM]
    with open_database(settings) as (engine, uow), uow() as session:
        # No password of the operator's choosing: the account's holder picks their own.
        change, generated = admin.create_user(session, args.name, role=args.role, teams=teams, now=utcnow())
        record_change(settings, engine, session, change)
    print(f"created user {args.name.strip().lower()} ({args.role}, teams: {', '.join(teams)})")
    print(f"one-time password (shown only now; must be changed at first login): {generated}")
    return 0


def _list(args: argparse.Namespace) -> int:
    settings = load_data_dir(args.data)
    with open_database(settings) as (_, uow), uow() as session:
        users = admin.list_users(session)
    rows = [("USERNAME", "ROLE", "STATUS", "TEAMS", "CREATED")]
    for u in users:
        status = "disabled" if u.disabled else "must-change-password" if u.must_change_password else "active"
        rows.append((u.username, u.role, status, ",".join(u.teams) or "-", format_time(u.created_at)))
    print_table(rows)
    return 0


def _change(args: argparse.Namespace) -> int:
    settings = load_data_dir(args.data)
    now = utcnow()
    throttle_key = throttle.derive_key(load_audit_keys(settings))
    with open_database(settings) as (engine, uow), uow() as session:
        generated = None
        if args.action == "disable":
            change = admin.disable_user(session, args.name, now=now)
        elif args.action == "enable":
            change = admin.enable_user(session, args.name, now=now)
        elif args.action == "set-role":
            change = admin.set_role(session, args.name, args.role, now=now)
        elif args.action == "unlock":
            change = admin.unlock_user(session, args.name, throttle_key=throttle_key, now=now)
        else:
            change, generated = admin.reset_password(session, args.name, throttle_key=throttle_key, now=now)
        record_change(settings, engine, session, change)
    old = ", ".join(f"{k}={v}" for k, v in (change.old or {}).items()) or "-"
    new = ", ".join(f"{k}={v}" for k, v in (change.new or {}).items()) or "-"
    print(f"{change.target}: {old} -> {new}")
    if generated is not None:
        print(f"one-time password (shown only now; must be changed at first login): {generated}")
    return 0


def register(parser: argparse.ArgumentParser) -> None:
    sub, common = action_subparsers(parser)

    add = sub.add_parser(
        "add", parents=[common], help="add a user (with a one-time password, shown once, to change at first login)"
    )
    add.add_argument("name")
    add.add_argument("--role", default="developer", help="developer (default), auditor or admin")
    add.add_argument(
        "--team", action="append", metavar="TEAM", help="team to join (repeatable; default: default)"
    )
    add.set_defaults(func=_add)

    sub.add_parser("list", parents=[common], help="list users").set_defaults(func=_list)

    for action, help_text in (
        ("disable", "disable a user: their tokens and sessions stop working at once"),
        ("enable", "enable a disabled user"),
        ("unlock", "clear a user's failed-login counters"),
        ("reset-password", "give a user a new one-time password"),
    ):
        cmd = sub.add_parser(action, help=help_text, parents=[common])
        cmd.add_argument("name")
        cmd.set_defaults(func=_change)

    set_role = sub.add_parser("set-role", parents=[common], help="change a user's role")
    set_role.add_argument("name")
    set_role.add_argument("role", help="developer, auditor or admin")
    set_role.set_defaults(func=_change)
