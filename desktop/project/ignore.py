"""Which files of a project may be read, indexed and sent.

Three layers, checked in this order of strength:

1. **Never leaves the machine** (:data:`SECRET_PATTERNS`): ``.env``, private keys, keystores,
   credential files. Nothing the user or the server writes can re-include them.
2. **Server policy** exclusions: patterns the appliance's policy names; hard excludes too.
3. **The project's own rules**: every ``.gitignore`` and ``.enclaveignore`` in the tree, with git's
   semantics (a deeper file overrides a shallower one, the last matching line wins, ``!`` negates,
   an excluded directory hides everything below it). ``.enclaveignore`` is read after
   ``.gitignore`` in the same directory, so it can also re-include what git ignores.

Patterns are matched with ``pathspec``'s ``GitIgnoreSpec``, which implements git's wildmatch rules.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import pathspec

__all__ = ["SECRET_PATTERNS", "Exclusion", "IgnoreRules"]

SECRET_PATTERNS: tuple[str, ...] = (
    ".env",
    ".env.*",
    "*.env",
    ".envrc",
    "*.pem",
    "*.key",
    "*.p12",
    "*.pfx",
    "*.jks",
    "*.keystore",
    "*.kdbx",
    "*.gpg",
    "*.asc",
    "id_rsa*",
    "id_dsa*",
    "id_ecdsa*",
    "id_ed25519*",
    ".netrc",
    ".pgpass",
    ".pypirc",
    ".npmrc",
    ".git-credentials",
    "credentials.json",
    "secrets.*",
    ".ssh/",
    ".aws/",
    ".gnupg/",
    ".docker/config.json",
    ".kube/config",
)

# Version-control internals are never project content.
_ALWAYS_SKIPPED_DIRS = frozenset({".git", ".hg", ".svn", ".enclave"})
_RULE_FILES = (".gitignore", ".enclaveignore")


class Exclusion(Enum):
    SECRET = "secret"
    POLICY = "policy"
    IGNORED = "ignored"


@dataclass(frozen=True)
class _Layer:
    base: str  # directory of the rule file, relative to the root, "" for the root, else ending in "/"
    spec: pathspec.GitIgnoreSpec


def _spec(lines: Iterable[str]) -> pathspec.GitIgnoreSpec:
    return pathspec.GitIgnoreSpec.from_lines(list(lines))


def _matcher(spec: pathspec.GitIgnoreSpec) -> Callable[[str], bool]:
    """``spec.match_file`` for "/"-separated relative paths; one regular expression for all the
    patterns when none negates (then any match is a match), instead of one match per pattern.
    The secret patterns are checked for every entry of a walk, which made them a third of its cost."""
    patterns = [p for p in spec.patterns if p.include is not None]
    if any(not p.include or not isinstance(p, pathspec.pattern.RegexPattern) for p in patterns):
        return spec.match_file
    regexes = [p.regex for p in patterns if p.regex is not None]
    if not regexes:
        return lambda path: False
    try:
        # The group name marks directory matches, which only negations care about; names may not repeat.
        combined = re.compile("|".join(f"(?:{r.pattern.replace('(?P<ps_d>', '(?:')})" for r in regexes))
    except re.error:
        return spec.match_file
    if any(r.flags != regexes[0].flags for r in regexes) or combined.groupindex:
        return spec.match_file
    return lambda path: combined.match(path) is not None


class IgnoreRules:
    """Decides, for one project root, whether a relative path is excluded and why.

    ``rel`` paths use ``/`` separators and are relative to the root; directories are passed with
    ``is_dir=True``. Rule files are loaded lazily per directory as the scanner descends, so a
    single walk reads each one once.
    """

    def __init__(self, root: Path, *, policy_patterns: Sequence[str] = ()) -> None:
        self.root = root
        self._secrets = _matcher(_spec(SECRET_PATTERNS))
        self._policy = _matcher(_spec(policy_patterns))
        self._layers: dict[str, list[_Layer]] = {}

    def _layers_for_dir(self, rel_dir: str) -> list[_Layer]:
        """The rule layers that apply inside ``rel_dir`` (root first, deepest last)."""
        cached = self._layers.get(rel_dir)
        if cached is not None:
            return cached
        if rel_dir:
            parent = rel_dir.rpartition("/")[0]
            inherited = self._layers_for_dir(parent)
        else:
            inherited = []
        own: list[_Layer] = []
        base = f"{rel_dir}/" if rel_dir else ""
        for name in _RULE_FILES:
            path = self.root / rel_dir / name
            try:
                text = path.read_text(encoding="utf-8", errors="replace")
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError):
                continue
            own.append(_Layer(base, _spec(text.splitlines())))
        layers = inherited + own if own else inherited
        self._layers[rel_dir] = layers
        return layers

    def exclusion(self, rel: str, *, is_dir: bool = False) -> Exclusion | None:
        """Why ``rel`` is excluded, or None when it may be indexed.

        The caller is expected to have checked the parent directories already (the scanner prunes
        excluded directories), as git does: a file below an ignored directory is never re-included.
        """
        name = rel.rpartition("/")[2]
        if is_dir and name in _ALWAYS_SKIPPED_DIRS:
            return Exclusion.IGNORED
        probe = f"{rel}/" if is_dir else rel
        if self._secrets(probe):
            return Exclusion.SECRET
        if self._policy(probe):
            return Exclusion.POLICY
        rel_dir = rel.rpartition("/")[0]
        ignored: bool | None = None
        for layer in self._layers_for_dir(rel_dir):
            result = layer.spec.check_file(probe[len(layer.base) :])
            if result.include is not None:
                ignored = result.include
        return Exclusion.IGNORED if ignored else None

    def is_excluded(self, rel: str, *, is_dir: bool = False) -> bool:
        """True when ``rel`` or any directory above it is excluded (for paths not from a walk)."""
        parts = rel.split("/")
        for i in range(1, len(parts)):
            if self.exclusion("/".join(parts[:i]), is_dir=True) is not None:
                return True
        return self.exclusion(rel, is_dir=is_dir) is not None

    def never_sent(self, rel: str) -> bool:
        """True when ``rel`` or a directory above it is a secret or excluded by policy: such a file
        never leaves the machine, whatever reads it (the index, an editor's buffer, context assembly).
        Paths the project's own ignore files name may still be sent when the user opens them."""
        parts = rel.split("/")
        never = (Exclusion.SECRET, Exclusion.POLICY)
        for i in range(1, len(parts)):
            if self.exclusion("/".join(parts[:i]), is_dir=True) in never:
                return True
        return self.exclusion(rel) in never
