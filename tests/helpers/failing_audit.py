"""An AuditLog stand-in whose appends fail as a full disk would make them; reads go to a real log."""

from __future__ import annotations

from typing import Any

from appliance.audit.events import AuditEvent
from shared.errors import AuditUnavailableError

__all__ = ["DownAuditLog"]


class DownAuditLog:
    def __init__(self, real: Any) -> None:
        self._real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    async def append_async(self, event: AuditEvent) -> int:
        raise AuditUnavailableError("audit store cannot commit: disk full")
