"""The connection profile: which appliance, which CA was pinned for it, and the last sign-in's user
name and account kind (``ldap`` or ``local``; empty until a password sign-in). No secrets here.

Stored as JSON in the user's config directory. The pinned CA is copied next to it, so moving or
deleting the original ``ca.pem`` does not break the client, and the copy is re-checked against the
recorded fingerprint on every load: a swapped file is refused, not trusted.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

from desktop.client.tls import ca_fingerprint
from shared.errors import ConfigError, InputError, IntegrityError

__all__ = ["Profile", "ProfileStore", "normalize_url"]


def normalize_url(url: str) -> str:
    url = url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise InputError(f"appliance URL must look like https://host:port, got {url!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise InputError(f"appliance URL must not have a path, got {url!r}")
    return url


@dataclass(frozen=True)
class Profile:
    url: str
    ca_fingerprint: str
    username: str = ""
    # The account the last password sign-in was for ("ldap" or "local"; "" before one).
    account: str = ""


class ProfileStore:
    def __init__(self, config_dir: Path) -> None:
        self.dir = config_dir
        self._file = config_dir / "profile.json"
        self.file = self._file
        self.ca_file = config_dir / "pinned-ca.pem"

    def load(self) -> Profile | None:
        try:
            data = json.loads(self._file.read_text(encoding="utf-8"))
            profile = Profile(**data)
        except FileNotFoundError:
            return None
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{self._file} is damaged ({exc}); delete it to connect afresh") from None
        try:
            actual = ca_fingerprint(self.ca_file.read_bytes())
        except (OSError, InputError):
            raise ConfigError(f"the pinned CA {self.ca_file} is missing or damaged; connect afresh") from None
        if actual != profile.ca_fingerprint:
            raise IntegrityError(f"the pinned CA {self.ca_file} was replaced (fingerprint {actual}); connect afresh")
        return profile

    def save(self, profile: Profile, ca_pem: bytes) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        _atomic_write(self.ca_file, ca_pem)
        _atomic_write(self._file, json.dumps(asdict(profile), indent=2).encode())

    def forget(self) -> None:
        for path in (self._file, self.ca_file):
            path.unlink(missing_ok=True)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
