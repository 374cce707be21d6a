"""``enclave group-map add|list|remove``: which identity-provider (OIDC) or LDAP groups give which
team and role. Applied at every sign-in; an outside user in no mapped group is refused. Each change
is audited in the same transaction; bad input is a one-line error and changes nothing.
"""

from __future__ import annotations

import argparse

from appliance.auth import groups
from appliance.commands._local_admin import action_subparsers, print_table, record_change
from appliance.db.base import utcnow
from appliance.db.datadir import load_data_dir, open_database

__all__ = ["register"]


def _add(args: argparse.Namespace) -> int:
    settings = load_data_dir(args.data)
    with open_database(settings) as (engine, uow), uow() as session:
        change = groups.add_mapping(session, args.source, args.group, args.team, args.role, now=utcnow())
        record_change(settings, engine, session, change)
    print(f"{args.source} group {args.group!r} -> team {args.team} as {args.role} (mapping {change.target_id})")
    return 0


def _list(args: argparse.Namespace) -> int:
    settings = load_data_dir(args.data)
    with open_database(settings) as (_, uow), uow() as session:
        rows = [("ID", "SOURCE", "GROUP", "TEAM", "ROLE")]
        rows += [(str(m.id), m.source, m.group, m.team, m.role) for m in groups.list_mappings(session)]
    print_table(rows)
    return 0


def _remove(args: argparse.Namespace) -> int:
    settings = load_data_dir(args.data)
    with open_database(settings) as (engine, uow), uow() as session:
        change = groups.remove_mapping(session, args.id)
        record_change(settings, engine, session, change)
    print(f"removed mapping {args.id}")
    return 0


def register(parser: argparse.ArgumentParser) -> None:
    sub, common = action_subparsers(parser)
    add = sub.add_parser("add", parents=[common], help="map a provider group to a team and role")
    add.add_argument("source", choices=groups.SOURCES)
    add.add_argument("group", help="the group's name as the provider sends it (OIDC groups claim, LDAP group DN)")
    add.add_argument("team")
    add.add_argument("--role", default="developer", choices=("developer", "auditor", "admin"))
    add.set_defaults(func=_add)
    sub.add_parser("list", parents=[common], help="list group mappings").set_defaults(func=_list)
    remove = sub.add_parser("remove", parents=[common], help="remove a group mapping")
    remove.add_argument("id", type=int)
    remove.set_defaults(func=_remove)
