"""The appliance's own tables: people, teams, credentials, policies, projects, installed models.

Secrets never live here in a usable form: passwords are Argon2id PHC strings, API and session
tokens are SHA-256 digests of the raw token (which is shown to its owner once and never stored).
Schema changes go through Alembic (``migrations/``); ``tests/appliance/db`` checks that these
models and the migrations agree.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, Boolean, CheckConstraint, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from appliance.db.base import Base, intpk, str64, str255, uuid_str

__all__ = [
    "CAPTURE_MODES",
    "ROLE_NAMES",
    "ApiToken",
    "InstalledModel",
    "LoginSession",
    "LoginThrottle",
    "Membership",
    "Policy",
    "Project",
    "Role",
    "Team",
    "TrustedAddress",
    "User",
]

# Seeded by migration 0001_foundation; the permission table lives in appliance.auth.roles.
ROLE_NAMES = ("developer", "auditor", "admin")
CAPTURE_MODES = ("none", "digest", "sealed")

# A SHA-256 digest in lowercase hex.
digest_hex = String(64)


class Role(Base):
    __tablename__ = "roles"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    description: Mapped[str255]


class User(Base):
    __tablename__ = "users"

    id: Mapped[intpk]
    username: Mapped[str64] = mapped_column(unique=True)
    # Argon2id in PHC form: "$argon2id$v=19$m=...,t=...,p=...$salt$hash" (parameters travel with it).
    password_hash: Mapped[str255]
    role: Mapped[str] = mapped_column(String(32), ForeignKey("roles.name"))
    # A password someone else chose (init, `user add` without one) must be replaced before use.
    must_change_password: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime]
    password_changed_at: Mapped[dt.datetime]
    disabled_at: Mapped[dt.datetime | None]

    memberships: Mapped[list[Membership]] = relationship(back_populates="user", cascade="all, delete-orphan")

    @property
    def disabled(self) -> bool:
        return self.disabled_at is not None


class Team(Base):
    __tablename__ = "teams"

    id: Mapped[intpk]
    name: Mapped[str64] = mapped_column(unique=True)
    created_at: Mapped[dt.datetime]

    memberships: Mapped[list[Membership]] = relationship(back_populates="team", cascade="all, delete-orphan")
    policy: Mapped[Policy | None] = relationship(back_populates="team", cascade="all, delete-orphan")


class Membership(Base):
    __tablename__ = "memberships"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), primary_key=True)
    created_at: Mapped[dt.datetime]

    user: Mapped[User] = relationship(back_populates="memberships")
    team: Mapped[Team] = relationship(back_populates="memberships")


class Policy(Base):
    """What members of one team may do. ``None`` in a quota column means "no limit"."""

    __tablename__ = "policies"
    __table_args__ = (
        CheckConstraint("capture_mode IN ('none', 'digest', 'sealed')", name="capture_mode"),
    )

    id: Mapped[intpk]
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), unique=True)
    # fnmatch patterns over installed model names; ["*"] allows every installed model.
    allowed_models: Mapped[list[str]] = mapped_column(JSON)
    requests_per_minute: Mapped[int | None] = mapped_column(Integer)
    tokens_per_minute: Mapped[int | None] = mapped_column(Integer)
    concurrent_streams: Mapped[int | None] = mapped_column(Integer)
    max_prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    max_output_tokens: Mapped[int | None] = mapped_column(Integer)
    capture_mode: Mapped[str] = mapped_column(String(16))
    # gitignore-style patterns the desktop client must never send as context.
    path_exclusions: Mapped[list[str]] = mapped_column(JSON)
    # Thinking mode: may members ask for it, and at most how many reasoning tokens (None: no cap).
    allow_thinking: Mapped[bool] = mapped_column(Boolean, server_default="1", default=True)
    max_reasoning_tokens: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[dt.datetime]

    team: Mapped[Team] = relationship(back_populates="policy")


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[intpk]
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str64]
    token_digest: Mapped[str] = mapped_column(digest_hex, unique=True)
    # Permission values; the token can do at most what both its scopes and its owner's role allow.
    scopes: Mapped[list[str]] = mapped_column(JSON)
    # The token that created this one (None: created by a login session, an admin or the CLI).
    # Revoking a token revokes the tokens it minted.
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("api_tokens.id", ondelete="SET NULL"), index=True)
    created_at: Mapped[dt.datetime]
    expires_at: Mapped[dt.datetime]
    revoked_at: Mapped[dt.datetime | None]
    last_used_at: Mapped[dt.datetime | None]


class LoginSession(Base):
    __tablename__ = "login_sessions"

    id: Mapped[intpk]
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_digest: Mapped[str] = mapped_column(digest_hex, unique=True)
    address: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime]
    expires_at: Mapped[dt.datetime]
    revoked_at: Mapped[dt.datetime | None]


class LoginThrottle(Base):
    """Failed-login counters, shared by every replica through the database.

    ``scope`` is "account" (key: username), "pair" (key: username + address) or "address".
    The username need not exist, so throttling behaves the same for unknown accounts.
    """

    __tablename__ = "login_throttle"
    __table_args__ = (UniqueConstraint("scope", "key"),)

    id: Mapped[intpk]
    scope: Mapped[str] = mapped_column(String(16))
    key: Mapped[str255]
    failures: Mapped[int] = mapped_column(Integer, default=0)
    window_start: Mapped[dt.datetime]
    last_failure_at: Mapped[dt.datetime | None]


class TrustedAddress(Base):
    """An address this user logged in from; account-wide backoff does not apply to it."""

    __tablename__ = "trusted_addresses"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    address: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_success_at: Mapped[dt.datetime]


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[intpk]
    # The id the desktop client sends in request metadata.
    public_id: Mapped[uuid_str] = mapped_column(unique=True)
    name: Mapped[str255]
    team_id: Mapped[int | None] = mapped_column(ForeignKey("teams.id", ondelete="SET NULL"), index=True)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[dt.datetime]


class InstalledModel(Base):
    __tablename__ = "installed_models"
    __table_args__ = (UniqueConstraint("name", "version"),)

    id: Mapped[intpk]
    name: Mapped[str64]
    version: Mapped[str64]
    # Bundle directory, relative to the data directory's models/ when inside it.
    path: Mapped[str] = mapped_column(String(1024))
    manifest_sha256: Mapped[str] = mapped_column(digest_hex)
    installed_at: Mapped[dt.datetime]
    installed_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
