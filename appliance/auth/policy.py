"""Effective policy: what one user may do, combined from the policies of all their teams.

Combining is conservative, because a policy is a restriction: a model is allowed only if every
team allows it, each quota is the smallest of the teams' (``None`` = no limit), the capture mode
is the strongest (sealed > digest > none), and path exclusions are the union. Thinking mode is
allowed only if every team allows it (the teams that forbid it are named in the refusal), and the
reasoning-token cap is the smallest. Teams without a
policy do not count; a user none of whose teams has one gets :data:`NO_ACCESS`: no models at all
(deny by default).
"""

from __future__ import annotations

import enum
import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from appliance.db.models import Membership, Policy

__all__ = ["DEFAULT_TEAM_POLICY", "NO_ACCESS", "CaptureMode", "EffectivePolicy", "effective_policy"]


class CaptureMode(enum.StrEnum):
    NONE = "none"
    DIGEST = "digest"
    SEALED = "sealed"


_CAPTURE_STRENGTH = {CaptureMode.NONE: 0, CaptureMode.DIGEST: 1, CaptureMode.SEALED: 2}


@dataclass(frozen=True, kw_only=True)
class EffectivePolicy:
    # Every team's pattern list must match; an empty tuple (no teams) allows nothing.
    allowed_models: tuple[tuple[str, ...], ...] = ()
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    concurrent_streams: int | None = None
    max_prompt_tokens: int | None = None
    max_output_tokens: int | None = None
    capture_mode: CaptureMode = CaptureMode.DIGEST
    path_exclusions: tuple[str, ...] = ()
    team_ids: tuple[int, ...] = ()
    # Names of the teams whose policy forbids thinking mode (empty: allowed).
    thinking_forbidden_by: tuple[str, ...] = ()
    max_reasoning_tokens: int | None = None

    @property
    def allows_thinking(self) -> bool:
        return not self.thinking_forbidden_by

    def allows_model(self, name: str) -> bool:
        if not self.allowed_models:
            return False
        return all(any(fnmatch.fnmatchcase(name, p) for p in patterns) for patterns in self.allowed_models)


NO_ACCESS = EffectivePolicy()

# What `enclave init` gives the default team: every installed model, modest quotas.
DEFAULT_TEAM_POLICY: dict[str, object] = {
    "allowed_models": ["*"],
    "requests_per_minute": 60,
    "tokens_per_minute": 100_000,
    "concurrent_streams": 4,
    "max_prompt_tokens": 32_768,
    "max_output_tokens": 4_096,
    "capture_mode": CaptureMode.DIGEST.value,
    "path_exclusions": [".env", "*.pem", "*.key", "id_rsa*", "secrets/"],
    "allow_thinking": True,
    "max_reasoning_tokens": None,
}


def _min(values: Iterable[int | None]) -> int | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None


def _team_name(policy: Policy) -> str:
    return policy.team.name if policy.team is not None else f"#{policy.team_id}"


def combine(policies: Sequence[Policy]) -> EffectivePolicy:
    """The conservative combination of several team policies (see the module docstring)."""
    if not policies:
        return NO_ACCESS
    exclusions: dict[str, None] = {}
    for p in policies:
        exclusions.update(dict.fromkeys(p.path_exclusions))
    strongest = max((CaptureMode(p.capture_mode) for p in policies), key=_CAPTURE_STRENGTH.__getitem__)
    return EffectivePolicy(
        allowed_models=tuple(tuple(p.allowed_models) for p in policies),
        requests_per_minute=_min(p.requests_per_minute for p in policies),
        tokens_per_minute=_min(p.tokens_per_minute for p in policies),
        concurrent_streams=_min(p.concurrent_streams for p in policies),
        max_prompt_tokens=_min(p.max_prompt_tokens for p in policies),
        max_output_tokens=_min(p.max_output_tokens for p in policies),
        capture_mode=strongest,
        path_exclusions=tuple(exclusions),
        team_ids=tuple(sorted(p.team_id for p in policies)),
        # `is False`: a policy built in memory without the field allows, as the column default does.
        thinking_forbidden_by=tuple(sorted(_team_name(p) for p in policies if p.allow_thinking is False)),
        max_reasoning_tokens=_min(p.max_reasoning_tokens for p in policies),
    )


def effective_policy(session: Session, user_id: int) -> EffectivePolicy:
    """The combined policy of every team ``user_id`` belongs to."""
    rows = session.scalars(
        select(Policy)
        .join(Membership, Membership.team_id == Policy.team_id)
        .where(Membership.user_id == user_id)
        .order_by(Policy.team_id)
    ).all()
    return combine(rows)
