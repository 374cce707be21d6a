"""Tables for outside identity: sign-ins in flight at an OpenID provider, the link from an
provider's subject to a local user, and the admin's map from provider groups to teams and roles.

A user who signs in through a provider still has a ``users`` row (role, teams, disabled state are
decided there, as for local users); its password hash is unusable, so password sign-in never works
for it.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from appliance.db.base import Base, intpk, str255

__all__ = ["GroupMapping", "IdentityLink", "OidcFlow", "ScimResource"]


class OidcFlow(Base):
    """One authorization-code sign-in between ``/start`` and ``/callback``; used once."""

    __tablename__ = "oidc_flows"

    id: Mapped[intpk]
    # SHA-256 of the `state` parameter: the only handle the returning client holds.
    state_digest: Mapped[str] = mapped_column(String(64), unique=True)
    nonce: Mapped[str] = mapped_column(String(128))
    # The PKCE verifier never leaves the appliance: the client only ever sees its S256 challenge.
    code_verifier: Mapped[str] = mapped_column(String(128))
    redirect_uri: Mapped[str] = mapped_column(String(512))
    created_at: Mapped[dt.datetime]
    expires_at: Mapped[dt.datetime]


class IdentityLink(Base):
    """``(provider, subject)`` -> user: a provider's ``sub`` is stable, its usernames need not be."""

    __tablename__ = "identity_links"
    __table_args__ = (UniqueConstraint("provider", "subject"),)

    id: Mapped[intpk]
    # "oidc:<issuer>", "ldap:<server>" or "scim".
    provider: Mapped[str255]
    subject: Mapped[str255]
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[dt.datetime]
    last_sign_in_at: Mapped[dt.datetime | None]


class GroupMapping(Base):
    """A provider group grants membership of ``team_id`` and at least ``role``."""

    __tablename__ = "group_mappings"
    __table_args__ = (UniqueConstraint("source", "group_name", "team_id"),)

    id: Mapped[intpk]
    # "oidc", "ldap" or "scim".
    source: Mapped[str] = mapped_column(String(16))
    group_name: Mapped[str255]
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    role: Mapped[str] = mapped_column(String(32), ForeignKey("roles.name"))
    created_at: Mapped[dt.datetime]


class ScimResource(Base):
    """A resource the site's IdP provisioned through SCIM (``User`` or ``Group``), kept whole as the
    IdP sent it (scim2-models' dump), with the Enclave user a ``User`` stands for."""

    __tablename__ = "scim_resources"

    id: Mapped[intpk]
    resource_type: Mapped[str] = mapped_column(String(16))
    # The SCIM id (what /Users/{id} names); ours, random.
    resource_id: Mapped[str] = mapped_column(String(64), unique=True)
    # userName or displayName, lower-cased: the index the usual `userName eq` look-ups use.
    name_key: Mapped[str] = mapped_column(String(255), index=True)
    version: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)
    created_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]
