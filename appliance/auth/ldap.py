"""LDAP / Active Directory, the protocol half (ldap3): bind as the service account, find the user,
bind as the user with the password they typed, read their groups.

Nothing here touches the database (:mod:`appliance.auth.ldap_login` does). The directory is only
reached over TLS (``ldaps://``, or ``ldap://`` + StartTLS) with its certificate checked against the
site CA and its name; a plain-text directory is refused when settings load. No anonymous or
unauthenticated bind is ever made: the service account binds with its password, and an empty user
password is refused before the directory is asked (RFC 4513 5.1.2: a simple bind with a name and no
password "succeeds" anonymously on many servers).

Groups come from the user entry's ``memberOf`` (OpenLDAP's memberof overlay, Active Directory), or,
with ``group_base`` set, from a search for groups that name the user (``group_filter``). Each group
is offered to the group mapping by its full DN and by the value of its first RDN (``cn``), so an
admin may map ``eng`` or ``cn=eng,ou=groups,dc=example,dc=com``.
"""

from __future__ import annotations

import math
import ssl
import urllib.parse
from dataclasses import dataclass
from typing import Any

from ldap3 import NONE, SIMPLE, SUBTREE, Connection, Server, Tls
from ldap3.core.exceptions import LDAPException
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import parse_dn

from shared.errors import AuthError, UpstreamError

__all__ = ["DirectoryUser", "LdapDirectory"]

_INVALID_CREDENTIALS = 49
_ATTRIBUTES = ("memberOf", "entryUUID", "objectGUID")


@dataclass(frozen=True, kw_only=True)
class DirectoryUser:
    dn: str
    # A stable id for the identity link: entryUUID (OpenLDAP), objectGUID (AD), else the DN.
    subject: str
    groups: tuple[str, ...]


def _first(values: Any) -> Any:
    if isinstance(values, list):
        return values[0] if values else None
    return values


def _group_names(dns: list[str]) -> tuple[str, ...]:
    names: list[str] = []
    for dn in dns:
        names.append(dn)
        try:
            rdn = parse_dn(dn)[0][1]
        except (LDAPException, IndexError):
            continue
        names.append(rdn)
    return tuple(dict.fromkeys(names))


class LdapDirectory:
    def __init__(
        self,
        *,
        url: str,
        starttls: bool,
        ca_file: str,
        bind_dn: str,
        bind_password: str,
        user_base: str,
        user_filter: str,
        group_base: str,
        group_filter: str,
        timeout_s: float,
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        self.url = url
        self._starttls = starttls
        tls = Tls(ca_certs_file=ca_file or None, validate=ssl.CERT_REQUIRED, version=ssl.PROTOCOL_TLS_CLIENT)
        self._server = Server(
            parts.hostname or "",
            port=parts.port,
            use_ssl=parts.scheme == "ldaps",
            tls=tls,
            get_info=NONE,
            connect_timeout=timeout_s,
        )
        self._bind_dn = bind_dn
        self._bind_password = bind_password
        self._user_base = user_base
        self._user_filter = user_filter
        self._group_base = group_base
        self._group_filter = group_filter
        self._timeout_s = timeout_s

    def _bound(self, user: str, password: str) -> tuple[Connection, bool]:
        """A connection over TLS and whether the simple bind as ``user`` succeeded."""
        conn = Connection(
            self._server,
            user=user,
            password=password,
            authentication=SIMPLE,
            read_only=True,
            raise_exceptions=False,
            # Whole seconds: ldap3 packs it into SO_RCVTIMEO as an integer.
            receive_timeout=max(1, math.ceil(self._timeout_s)),
        )
        try:
            conn.open()
            if self._starttls and not conn.start_tls():
                raise UpstreamError(f"directory {self.url} refused StartTLS: {conn.result.get('description')}")
            return conn, bool(conn.bind())
        except LDAPException as exc:
            conn.unbind()
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise UpstreamError(f"directory {self.url} is unreachable: {first}") from None

    def _search(self, conn: Connection, base: str, query: str, attributes: tuple[str, ...]) -> list[dict[str, Any]]:
        conn.search(base, query, search_scope=SUBTREE, attributes=list(attributes), size_limit=50)
        if conn.result.get("result") not in (0, 4):  # 4: size limit exceeded, still answers
            raise UpstreamError(f"directory search under {base!r} failed: {conn.result.get('description')}")
        return [r for r in conn.response or [] if r.get("type") == "searchResEntry"]

    def authenticate(self, username: str, password: str) -> DirectoryUser:
        """The directory's user ``username`` if ``password`` binds as them.

        Raises AuthError (reasons ``bad_password``, ``unknown_user``, ``ambiguous_user``,
        ``directory_refused``) or UpstreamError when the directory cannot be used at all.
        """
        if not password:
            raise AuthError("invalid username or password", reason="bad_password")
        return self._resolve(username, password)

    def lookup(self, username: str) -> DirectoryUser:
        """The directory's user ``username`` and their groups now, found by the service account
        alone (a session refresh: no password at hand). Raises as :meth:`authenticate`."""
        return self._resolve(username, None)

    def _resolve(self, username: str, password: str | None) -> DirectoryUser:
        if not self._bind_password:
            raise UpstreamError("ldap_bind_password is empty: set it (ENCLAVE_LDAP_BIND_PASSWORD) for `enclave serve`")
        service, ok = self._bound(self._bind_dn, self._bind_password)
        try:
            if not ok:
                raise UpstreamError(
                    f"directory {self.url} refused the service account "
                    f"({service.result.get('description')}); check ldap_bind_dn and ldap_bind_password"
                )
            query = self._user_filter.replace("{username}", escape_filter_chars(username))
            found = self._search(service, self._user_base, query, _ATTRIBUTES)
            if not found:
                raise AuthError("invalid username or password", reason="unknown_user")
            if len(found) > 1:
                raise AuthError("invalid username or password", reason="ambiguous_user")
            entry = found[0]
            dn = str(entry["dn"])
            if password is not None:
                self._check_password(dn, password)
            attrs = entry.get("attributes", {})
            if self._group_base:
                query = self._group_filter.replace("{dn}", escape_filter_chars(dn)).replace(
                    "{username}", escape_filter_chars(username)
                )
                group_dns = [str(g["dn"]) for g in self._search(service, self._group_base, query, ())]
            else:
                raw = attrs.get("memberOf") or []
                group_dns = [str(g) for g in (raw if isinstance(raw, list) else [raw])]
            uuid = _first(attrs.get("entryUUID")) or _first(attrs.get("objectGUID"))
            subject = uuid.hex() if isinstance(uuid, bytes) else str(uuid or dn)
            return DirectoryUser(dn=dn, subject=subject, groups=_group_names(group_dns))
        finally:
            service.unbind()

    def _check_password(self, dn: str, password: str) -> None:
        user, bound = self._bound(dn, password)
        try:
            if not bound:
                code = user.result.get("result")
                if code == _INVALID_CREDENTIALS:
                    raise AuthError("invalid username or password", reason="bad_password")
                raise AuthError(
                    f"the directory refused the sign-in: {user.result.get('description')}",
                    reason="directory_refused",
                )
        finally:
            user.unbind()
