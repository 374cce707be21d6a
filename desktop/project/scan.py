"""Walk a project and list the files that may be indexed.

The walk prunes excluded directories (see :mod:`desktop.project.ignore`), skips files over the size
limit and files whose extension says they are binary; :func:`read_text` then rejects anything with
a NUL byte near the start, which is git's own binary test.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from desktop.project.ignore import Exclusion, IgnoreRules

__all__ = ["DEFAULT_MAX_BYTES", "ScanResult", "ScannedFile", "decode_text", "read_text", "scan", "walk"]

DEFAULT_MAX_BYTES = 1_000_000
_BINARY_PROBE = 8192
# Cheap early exits; the NUL probe catches the rest.
_BINARY_SUFFIXES = frozenset(
    [".png", ".jpg", ".jpeg", ".gif", ".bmp", ".ico", ".webp", ".pdf", ".zip", ".gz", ".tgz", ".bz2", ".xz", ".zst", ".7z", ".tar", ".jar", ".war", ".class", ".pyc", ".pyo", ".so", ".dylib", ".dll", ".exe", ".o", ".a", ".lib", ".obj", ".bin", ".dat", ".db", ".sqlite", ".wasm", ".onnx", ".safetensors", ".pt", ".pth", ".npy", ".npz", ".whl", ".woff", ".woff2", ".ttf", ".otf", ".mp3", ".mp4", ".mov", ".avi", ".wav", ".flac"]
)


@dataclass(frozen=True)
class ScannedFile:
    rel: str  # "/"-separated, relative to the project root
    size: int
    mtime_ns: int


@dataclass
class ScanResult:
    files: list[ScannedFile] = field(default_factory=list)
    # rel path -> reason ("secret", "policy", "ignored", "too_large", "binary")
    skipped: dict[str, str] = field(default_factory=dict)


def scan(
    root: Path,
    *,
    policy_patterns: Sequence[str] = (),
    max_bytes: int = DEFAULT_MAX_BYTES,
    rules: IgnoreRules | None = None,
) -> ScanResult:
    """Every indexable file under ``root``, sorted by path, and what was skipped and why."""
    result = ScanResult()
    result.files.extend(walk(root, result.skipped, policy_patterns=policy_patterns, max_bytes=max_bytes, rules=rules))
    result.files.sort(key=lambda f: f.rel)
    return result


def walk(
    root: Path,
    skipped: dict[str, str],
    *,
    policy_patterns: Sequence[str] = (),
    max_bytes: int = DEFAULT_MAX_BYTES,
    rules: IgnoreRules | None = None,
) -> Iterator[ScannedFile]:
    """The files :func:`scan` admits, in no particular order, as the walk finds them (so indexing
    can start before the walk ends); what is skipped, and why, goes into ``skipped``."""
    rules = rules or IgnoreRules(root, policy_patterns=policy_patterns)
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        try:
            entries = list(os.scandir(root / rel_dir if rel_dir else root))
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            try:
                # Symlinks are not followed: a link can point outside the project.
                if entry.is_symlink():
                    continue
                is_dir = entry.is_dir(follow_symlinks=False)
                if not is_dir and not entry.is_file(follow_symlinks=False):
                    continue
                why = rules.exclusion(rel, is_dir=is_dir)
                if why is not None:
                    if why is not Exclusion.IGNORED or not is_dir:
                        skipped[rel] = why.value
                    continue
                if is_dir:
                    stack.append(rel)
                    continue
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if os.path.splitext(entry.name)[1].lower() in _BINARY_SUFFIXES:
                skipped[rel] = "binary"
            elif st.st_size > max_bytes:
                skipped[rel] = "too_large"
            else:
                yield ScannedFile(rel, st.st_size, st.st_mtime_ns)


def decode_text(data: bytes) -> str | None:
    """The text of a file's bytes, or None when they look binary (a NUL byte near the start)."""
    if b"\0" in data[:_BINARY_PROBE]:
        return None
    return data.decode("utf-8", errors="replace")


def read_text(path: Path) -> str | None:
    """The file's text, or None when it is binary or unreadable."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    return decode_text(data)
