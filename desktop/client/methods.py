"""Which sign-ins an appliance offers (``GET /v1/auth/methods``), and which account a password is for.

A password signs in either a local Enclave account (``POST /v1/auth/login``) or a directory account
(LDAP / Active Directory, ``POST /v1/auth/ldap/login``); the appliance cannot tell which from the
name, so the client says. An appliance from before ``/v1/auth/methods`` does not say what it offers:
``None`` here, and sign-in screens offer what they always did (password and the SSO button).
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from shared.errors import InputError
from shared.schemas import AuthMethod, AuthMethods

__all__ = [
    "ACCOUNTS",
    "LOGIN_PATHS",
    "Account",
    "account_for",
    "directory_name",
    "offers_sso",
    "parse_methods",
]

Account = Literal["ldap", "local"]
ACCOUNTS: tuple[Account, ...] = get_args(Account)
LOGIN_PATHS: dict[Account, str] = {"local": "/v1/auth/login", "ldap": "/v1/auth/ldap/login"}
_KINDS = get_args(AuthMethod.model_fields["kind"].annotation)


def parse_methods(raw: Any) -> AuthMethods:
    """The answer, read as the schema we know: kinds and fields a newer appliance adds are left out."""
    items = raw.get("methods", []) if isinstance(raw, dict) else []
    known = [
        {k: m[k] for k in AuthMethod.model_fields if k in m}
        for m in items
        if isinstance(m, dict) and m.get("kind") in _KINDS
    ]
    return AuthMethods.model_validate({"methods": known})


def directory_name(methods: AuthMethods | None) -> str | None:
    """The directory's display name when the appliance offers LDAP sign-in, else None."""
    if methods is None:
        return None
    return next((m.display_name for m in methods.methods if m.kind == "ldap"), None)


def offers_sso(methods: AuthMethods | None) -> bool:
    """Single sign-on is offered (an appliance that does not say keeps the SSO button, as before)."""
    return methods is None or any(m.kind == "sso" for m in methods.methods)


def account_for(methods: AuthMethods | None, chosen: str = "", remembered: str = "") -> Account:
    """The account a password is for: what the user chose; else what they used last time, while the
    appliance still offers it; else the directory when it is offered (a site with a directory signs
    its people in there); else local."""
    if chosen:
        if chosen not in ACCOUNTS:
            raise InputError(f"the account must be 'ldap' or 'local', got {chosen!r}")
        return chosen
    offered = directory_name(methods) is not None
    if remembered == "local" or (remembered == "ldap" and (offered or methods is None)):
        return remembered  # type: ignore[return-value]
    return "ldap" if offered else "local"
