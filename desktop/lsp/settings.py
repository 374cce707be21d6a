"""The language server's settings: defaults, overridden by the editor's ``initializationOptions``
(and later ``workspace/didChangeConfiguration``) under the keys below, camelCase as LSP clients
write them. A wrong value is refused with one line naming the key; the server keeps the defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from desktop.client.methods import ACCOUNTS
from desktop.project.fim import DEFAULT_FIM_BUDGET
from shared.errors import InputError

__all__ = ["Settings"]

_KEYS = {
    "debounceMs": "debounce_ms",
    "maxTokens": "max_tokens",
    "fimBudget": "fim_budget",
    "contextBudget": "context_budget",
    "model": "model",
    "account": "account",
}
# What a password signs in: the site directory's account or a local one ("": ask the appliance).
_ACCOUNTS = ("", *ACCOUNTS)


@dataclass(frozen=True)
class Settings:
    # Wait this long after the last request before asking the appliance: a burst of keystrokes
    # (each of which supersedes the previous request) then costs one generation, not one each.
    debounce_ms: int = 60
    max_tokens: int = 48
    # Estimated tokens (four characters each) of the code around the cursor.
    fim_budget: int = DEFAULT_FIM_BUDGET // 2
    # Estimated tokens of other files' definitions and matches put ahead of it; 0 turns that off.
    context_budget: int = 256
    model: str = ""  # empty: the first model the appliance lists for this user
    # Password sign-in: "ldap" (the directory), "local", or "" — the last choice kept in the profile,
    # else the directory when the appliance offers one, else local.
    account: str = ""

    def updated(self, options: Any) -> Settings:
        """These settings with ``options`` (a JSON object, may be nested under ``enclave``) applied."""
        if options is None:
            return self
        if not isinstance(options, dict):
            raise InputError("Enclave settings must be a JSON object")
        if isinstance(options.get("enclave"), dict):
            options = options["enclave"]
        changes: dict[str, Any] = {}
        types = {f.name: f.type for f in fields(self)}
        for key, value in options.items():
            name = _KEYS.get(key)
            if name is None:
                continue  # other tools' settings may share the object
            if types[name] in ("int", int):
                if not isinstance(value, int) or isinstance(value, bool) or value < (0 if name in ("debounce_ms", "context_budget") else 1):
                    raise InputError(f"Enclave setting {key} must be a whole number (got {value!r})")
                if name == "debounce_ms" and value > 5000:
                    raise InputError(f"Enclave setting {key} must be at most 5000 ms (got {value})")
            elif not isinstance(value, str):
                raise InputError(f"Enclave setting {key} must be a string (got {value!r})")
            elif name == "account" and value not in _ACCOUNTS:
                raise InputError(f'Enclave setting {key} must be "ldap" or "local" (got {value!r})')
            changes[name] = value
        return replace(self, **changes)
