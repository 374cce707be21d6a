"""What an admin operation returns so the caller can record it in the audit log."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Change"]


@dataclass(frozen=True, kw_only=True)
class Change:
    """One change for the audit log: ``action`` on ``target``, ``old`` -> ``new`` (None: absent).

    ``action`` is the audit action name (``admin.user.created``, ``admin.user.role_changed``, ...);
    ``target`` is ``kind:name`` (``user:alice``, ``token:7``, ``team:default``, ``model:demo@1``).
    Values never hold a secret: passwords and raw tokens are not in them.
    """

    action: str
    target: str
    target_id: int
    old: dict[str, object] | None
    new: dict[str, object] | None
