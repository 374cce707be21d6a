"""Where the desktop client and the language server keep their files, per user (no Qt here: the
language server shares the client's profile and index cache without loading the GUI stack)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import platformdirs

__all__ = ["APP_NAME", "Dirs"]

APP_NAME = "enclave-desktop"


@dataclass(frozen=True)
class Dirs:
    config: Path
    cache: Path
    data: Path

    @classmethod
    def for_user(cls) -> Dirs:
        return cls(
            Path(platformdirs.user_config_dir(APP_NAME, appauthor=False)),
            Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False)),
            Path(platformdirs.user_data_dir(APP_NAME, appauthor=False)),
        )
