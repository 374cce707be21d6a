"""The audit console's and admin pages' calls: paged queries, verify, export, sealed content,
usage per day, users, tokens and team policies."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from desktop.client.api import ApplianceClient, AuditQuery
from desktop.qt import QObject, QThreadPool, Signal
from desktop.services.worker import Job, submit
from shared.errors import EnclaveError, PermissionDeniedError

__all__ = ["AdminService", "AuditService", "UsageSeries", "usage_per_day"]

ClientSource = Callable[[], ApplianceClient]
# day -> series name -> (requests, tokens)
UsageSeries = dict[dt.date, dict[str, tuple[int, int]]]


def usage_per_day(records: list[dict[str, Any]], *, group: Callable[[str], str] = lambda actor: actor) -> UsageSeries:
    """Requests and tokens per day and per group, from ``generation.completed`` records."""
    out: UsageSeries = defaultdict(dict)
    for r in records:
        if r.get("action") != "generation.completed":
            continue
        day = dt.datetime.fromisoformat(str(r["time"]).replace("Z", "+00:00")).date()
        details = r.get("details") or {}
        tokens = int(details.get("prompt_tokens") or 0) + int(details.get("completion_tokens") or 0)
        key = group(str(r.get("actor", "")))
        requests, total = out[day].get(key, (0, 0))
        out[day][key] = (requests + 1, total + tokens)
    return dict(out)


_CEF_SEQ = re.compile(rb"(?:^|[ |])externalId=(\d+)(?: |$)")


def _line_seq(fmt: str, line: bytes) -> int | None:
    if fmt == "jsonl":
        try:
            return int(json.loads(line)["seq"])
        except (ValueError, KeyError, TypeError):
            return None
    match = _CEF_SEQ.search(line)
    return int(match.group(1)) if match else None


def _export_filtered(client: ApplianceClient, fmt: str, destination: Path, query: AuditQuery,
                     page: int = 1000) -> int:
    wanted: set[int] = set()
    cursor = None
    while True:
        result = client.audit_events(query, limit=page, cursor=cursor)
        wanted.update(int(r["seq"]) for r in result["records"])
        cursor = result.get("next_cursor")
        if cursor is None:
            break
    full = destination.with_name(destination.name + ".all")
    part = destination.with_name(destination.name + ".part")
    try:
        client.audit_export(fmt, full, since=query.since)
        kept = 0
        with open(full, "rb") as src, open(part, "wb") as out:
            for line in src:
                if _line_seq(fmt, line.rstrip(b"\n")) in wanted:
                    out.write(line)
                    kept += 1
        part.replace(destination)  # whole or not at all, as the unfiltered export
        return kept
    finally:
        full.unlink(missing_ok=True)
        part.unlink(missing_ok=True)


class _Service(QObject):
    failed = Signal(str, object)  # what, exception

    def __init__(self, *, client: ClientSource, pool: QThreadPool, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._client = client
        self._pool = pool
        self._epoch = 0

    def forget(self) -> None:
        """Drop the answers still on their way (the user who asked signed out)."""
        self._epoch += 1

    def _run(self, what: str, fn: Callable[[ApplianceClient], Any], on_done: Callable[[Any], None]) -> None:
        try:
            client = self._client()
        except EnclaveError as exc:  # not signed in: reported like any other failure
            self.failed.emit(what, exc)
            return
        epoch = self._epoch

        def work(job: Job) -> Any:
            return fn(client)

        def done(result: Any) -> None:
            if epoch == self._epoch:
                on_done(result)

        def failed(exc: BaseException) -> None:
            if epoch == self._epoch:
                self.failed.emit(what, exc)

        submit(self._pool, work, on_done=done, on_failed=failed, parent=self)


class AuditService(_Service):
    page = Signal(list, object, object)  # records, next cursor, the query
    verified = Signal(dict)
    exported = Signal(str, int)  # path, lines
    sealed = Signal(str, dict)  # ref, fields
    usage = Signal(object, str)  # UsageSeries, a note on how it is grouped

    def query(self, query: AuditQuery, *, cursor: int | None = None, limit: int = 50) -> None:
        def done(result: dict[str, Any]) -> None:
            self.page.emit(result["records"], result.get("next_cursor"), query)

        self._run("query", lambda c: c.audit_events(query, limit=limit, cursor=cursor), done)

    def verify(self) -> None:
        self._run("verify", lambda c: c.audit_verify(), self.verified.emit)

    def export(self, fmt: str, destination: str, query: AuditQuery | None = None) -> None:
        """Export the log, or with ``query`` (the console's filter) only the records it matches: the
        server's own export lines (JSONL or CEF, chain hashes included), kept by sequence number."""
        if query is None or query == AuditQuery():
            self._run("export", lambda c: (destination, c.audit_export(fmt, Path(destination))),
                      lambda r: self.exported.emit(*r))
            return
        self._run("export", lambda c: (destination, _export_filtered(c, fmt, Path(destination), query)),
                  lambda r: self.exported.emit(*r))

    def read_sealed(self, ref: str) -> None:
        self._run("sealed", lambda c: (ref, c.audit_sealed(ref)), lambda r: self.sealed.emit(*r))

    def load_usage(self, *, days: int, by_team: bool, now: dt.datetime, max_pages: int = 20) -> None:
        since = (now - dt.timedelta(days=days)).replace(hour=0, minute=0, second=0, microsecond=0)

        def work(c: ApplianceClient) -> tuple[UsageSeries, str]:
            records: list[dict[str, Any]] = []
            cursor = None
            for _ in range(max_pages):
                page = c.audit_events(AuditQuery(action="generation.completed", since=since), limit=1000, cursor=cursor)
                records.extend(page["records"])
                cursor = page.get("next_cursor")
                if cursor is None:
                    break
            if not by_team:
                return usage_per_day(records), ""
            # Audit records name the user, not the team; the membership list is an admin read.
            try:
                users = c.users()
            except PermissionDeniedError:
                return usage_per_day(records), "Per team needs the list of users, which your role cannot read: shown per user."
            teams: dict[str, str] = {}
            for user in users:
                teams[f"user:{user['username']}"] = teams[user["username"]] = ",".join(user["teams"]) or "(none)"
            return usage_per_day(records, group=lambda actor: teams.get(actor, "(unknown)")), ""

        self._run("usage", work, lambda r: self.usage.emit(*r))


class AdminService(_Service):
    users = Signal(list)
    tokens = Signal(list)
    teams = Signal(list)
    changed = Signal(str)
    userAdded = Signal(str, object)  # user name, the one-time password (None: the admin chose one)

    def reload(self) -> None:
        """Users, tokens and teams again: one change can show in all three (a new user joins a team)."""
        self.load_users()
        self.load_tokens()
        self.load_teams()

    def load_users(self) -> None:
        self._run("users", lambda c: c.users(), self.users.emit)

    def load_tokens(self) -> None:
        self._run("tokens", lambda c: c.tokens(), self.tokens.emit)

    def load_teams(self) -> None:
        self._run("teams", lambda c: c.teams(), self.teams.emit)

    def add_user(self, username: str, role: str, password: str | None) -> None:
        def done(result: dict[str, Any]) -> None:
            self.userAdded.emit(username, result.get("one_time_password"))
            self.changed.emit(f"added {username}")
            self.reload()

        self._run("add user", lambda c: c.add_user(username, role, password), done)

    def set_disabled(self, username: str, disabled: bool) -> None:
        def done(_: Any) -> None:
            self.changed.emit(f"{'disabled' if disabled else 'enabled'} {username}")
            self.reload()

        self._run("disable", lambda c: c.set_user_disabled(username, disabled), done)

    def set_role(self, username: str, role: str) -> None:
        def done(_: Any) -> None:
            self.changed.emit(f"{username} is now {role}")
            self.reload()

        self._run("role", lambda c: c.set_role(username, role), done)

    def revoke(self, token_id: int) -> None:
        def done(_: Any) -> None:
            self.changed.emit(f"revoked token {token_id}")
            self.load_tokens()

        self._run("revoke", lambda c: c.revoke_token(token_id), done)

    def set_policy(self, team: str, changes: dict[str, Any]) -> None:
        def done(_: Any) -> None:
            self.changed.emit(f"updated the policy of {team}")
            self.load_teams()

        self._run("policy", lambda c: c.set_policy(team, changes), done)
