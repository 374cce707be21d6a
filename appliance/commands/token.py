"""``enclave token create|list|revoke``: API tokens, shown once at creation, never again.

``create`` prints the token alone on standard output (so ``TOKEN=$(enclave token create ...)``
works) and what it is on standard error. Changes are recorded in the audit log in the same
transaction.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys

from appliance.auth import MAX_TOKEN_LIFETIME, admin, create_token, list_tokens, revoke_token
from appliance.commands._local_admin import action_subparsers, format_time, print_table, record_change
from appliance.db.base import utcnow
from appliance.db.datadir import load_data_dir, open_database
from shared.errors import InputError

__all__ = ["register"]



def _create(args: argparse.Namespace) -> int:
    settings = load_data_dir(args.data)
    if args.expires_days is None or args.expires_days <= 0 or args.expires_days > MAX_TOKEN_LIFETIME.days:
        raise InputError(f"--expires-days must be 1..{MAX_TOKEN_LIFETIME.days}")
    with open_database(settings) as (engine, uow), uow() as session:
        user = admin.get_user(session, args.user)
        raw, info, change = create_token(
            session,
            user.id,
            name=args.name,
            expires_in=dt.timedelta(days=args.expires_days),
            scopes=args.scope,
            now=utcnow(),
        )
        record_change(settings, engine, session, change)
        must_change = user.must_change_password
    print(raw)
    print(
        f"token {info.id} for {info.username} ({', '.join(info.scopes)}), expires {format_time(info.expires_at)};"
        " shown only now",
        file=sys.stderr,
    )
    if must_change:
        print(
            f"note: {info.username} still has a one-time password; until they change it, this token"
            " allows nothing else",
            file=sys.stderr,
        )
    return 0


def _list(args: argparse.Namespace) -> int:
    settings = load_data_dir(args.data)
    now = utcnow()
    with open_database(settings) as (_, uow), uow() as session:
        user_id = admin.get_user(session, args.user).id if args.user else None
        tokens = list_tokens(session, user_id=user_id)
    rows = [("ID", "USER", "NAME", "STATUS", "EXPIRES", "LAST USED", "SCOPES")]
    for t in tokens:
        status = t.status(now)
        if status != "active" and not args.all:
            continue
        rows.append(
            (
                str(t.id),
                t.username,
                t.name,
                status,
                format_time(t.expires_at),
                format_time(t.last_used_at),
                ",".join(t.scopes),
            )
        )
    print_table(rows)
    return 0


def _revoke(args: argparse.Namespace) -> int:
    settings = load_data_dir(args.data)
    with open_database(settings) as (engine, uow), uow() as session:
        change = revoke_token(session, args.id, now=utcnow())
        record_change(settings, engine, session, change)
    print(f"token {args.id} revoked")
    return 0


def register(parser: argparse.ArgumentParser) -> None:
    sub, common = action_subparsers(parser)

    create = sub.add_parser("create", parents=[common], help="create an API token (printed once)")
    create.add_argument("--user", required=True, help="owner's username")
    create.add_argument("--name", required=True, help="a label, e.g. the machine it is for")
    create.add_argument(
        "--expires-days",
        type=int,
        default=90,
        help=f"lifetime in days, 1..{MAX_TOKEN_LIFETIME.days} (default 90)",
    )
    create.add_argument(
        "--scope",
        action="append",
        metavar="PERMISSION",
        help="repeatable; default: everything the role allows",
    )
    create.set_defaults(func=_create)

    lst = sub.add_parser("list", parents=[common], help="list active tokens")
    lst.add_argument("--user", help="only this user's tokens")
    lst.add_argument("--all", action="store_true", help="include expired and revoked tokens")
    lst.set_defaults(func=_list)

    revoke = sub.add_parser(
        "revoke", parents=[common], help="revoke a token; refused from the next request on"
    )
    revoke.add_argument("id", type=int)
    revoke.set_defaults(func=_revoke)
