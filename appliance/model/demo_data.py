"""The demo model's data: the running Python's standard-library source, split into training and
held-out files, and the three sample formats it is trained on (and measured with).

The corpus is what every machine with Python has and what we may use (PSF licence): the ``.py``
files of the standard library, less its tests, generated tables (``encodings/``, ``pydoc_data/``)
and the build's own ``_sysconfigdata``. :func:`corpus_digest` pins which files and which bytes a
model saw, so a retrain can check it reads the same corpus.

The formats are the product's own (``appliance.engine.prompt``), so the model learns exactly the
token sequences the engine will give it:

- ``lm``: BOS + a window of a file that starts at a line, as a plain completion prompt is.
- ``fim``: DeepSeek's fill-in-the-middle, ``render_fim(prefix, suffix) + middle + EOS``, with the hole
  at line boundaries (whole lines, as an IDE asks for the rest of a line or a block).
- ``chat``: a function's signature + docstring as the user turn (``render_chat``), its body as the
  answer. The answer is the body as it stands under a ``def`` at column 0, so
  ``signature + docstring + answer`` is the whole function and parses.

No torch here: the trainer, ``bench/demo_model.py`` and the tests share it.
"""

from __future__ import annotations

import ast
import hashlib
import random
import sys
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from appliance.engine.prompt import render_chat, render_fim
from appliance.engine.tokenizer import BOS_TOKEN, EOS_TOKEN
from appliance.engine.types import ChatMessage

__all__ = [
    "HELD_OUT_FILES",
    "ChatSample",
    "FimLine",
    "chat_samples",
    "chat_text",
    "corpus_digest",
    "fim_lines",
    "fim_text",
    "lm_text",
    "python_version",
    "read_file",
    "stdlib_files",
    "stdlib_root",
    "training_files",
]

# Held out by name: never trained on, tokenizer included. Plain, typical library code of several
# kinds (parsers, numerics, data structures, text), about 400 KB.
HELD_OUT_FILES = (
    "bisect.py",
    "calendar.py",
    "colorsys.py",
    "csv.py",
    "fractions.py",
    "graphlib.py",
    "heapq.py",
    "json/decoder.py",
    "json/encoder.py",
    "sched.py",
    "shlex.py",
    "statistics.py",
    "string.py",
    "textwrap.py",
)

_SKIPPED_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "encodings", "pydoc_data", "__pycache__"}


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def python_version() -> str:
    return ".".join(str(v) for v in sys.version_info[:3])


def stdlib_files(root: Path | None = None) -> list[str]:
    """Every corpus file, as a path relative to the standard library, sorted."""
    base = root or stdlib_root()
    out = []
    for path in base.rglob("*.py"):
        rel = path.relative_to(base)
        if _SKIPPED_DIRS.intersection(rel.parts[:-1]) or rel.name.startswith("_sysconfigdata"):
            continue
        if any(part.startswith("config-") for part in rel.parts[:-1]):
            continue
        out.append(rel.as_posix())
    return sorted(out)


def training_files(root: Path | None = None) -> list[str]:
    held = set(HELD_OUT_FILES)
    return [f for f in stdlib_files(root) if f not in held]


def read_file(rel: str, root: Path | None = None) -> str:
    return ((root or stdlib_root()) / rel).read_text(encoding="utf-8", errors="replace")


def corpus_digest(files: list[str], root: Path | None = None) -> str:
    """SHA-256 over each file's name and the SHA-256 of its bytes, in order."""
    outer = hashlib.sha256()
    base = root or stdlib_root()
    for rel in files:
        outer.update(rel.encode() + b"\0" + hashlib.sha256((base / rel).read_bytes()).digest())
    return outer.hexdigest()


# --- sample formats -------------------------------------------------------------------------------


def lm_text(text: str) -> str:
    return BOS_TOKEN + text


def fim_text(prefix: str, middle: str, suffix: str) -> str:
    return render_fim(prefix, suffix) + middle + EOS_TOKEN


@dataclass(frozen=True)
class ChatSample:
    """One function: ``prompt`` (its signature and docstring, dedented) and ``answer`` (its body)."""

    prompt: str
    answer: str


def chat_text(sample: ChatSample) -> str:
    return render_chat([ChatMessage(role="user", content=sample.prompt)], thinking=False) + sample.answer + EOS_TOKEN


def _dedent(lines: list[str], col: int) -> str:
    """``lines`` moved left by ``col`` columns (a def's offset); lines indented less (inside a
    string) lose only their indentation."""
    out = []
    for line in lines:
        cut = min(col, len(line) - len(line.lstrip(" \t")))
        out.append(line[cut:])
    return "".join(out)


def chat_samples(source: str) -> list[ChatSample]:
    """Every function in ``source`` with a docstring and a body after it."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    lines = source.splitlines(keepends=True)
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) or len(node.body) < 2:
            continue
        doc = node.body[0]
        if not (isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant) and isinstance(doc.value.value, str)):
            continue
        end = node.end_lineno or node.lineno
        head = _dedent(lines[node.lineno - 1 : doc.end_lineno], node.col_offset)
        body = _dedent(lines[(doc.end_lineno or doc.lineno) : end], node.col_offset).lstrip("\n")
        if body.strip():
            out.append(ChatSample(head.rstrip("\n"), body.rstrip() + "\n"))
    return out


@dataclass(frozen=True)
class FimLine:
    """One masked line: ``prefix`` + ``middle`` + ``suffix`` is the file; ``middle`` is one line."""

    file: str
    lineno: int
    prefix: str
    middle: str
    suffix: str


def fim_lines(rel: str, source: str, *, context_lines: int = 40) -> Iterator[FimLine]:
    """Each non-blank line strictly inside a function body (not the def, not a docstring line),
    with ``context_lines`` lines either side as prefix and suffix."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return
    lines = source.splitlines(keepends=True)
    candidates: set[int] = set()
    doc_lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0]
            candidates.update(range(first.lineno, (node.end_lineno or node.lineno) + 1))
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            doc_lines.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.lineno != node.end_lineno:
            doc_lines.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    for lineno in sorted(candidates - doc_lines):
        line = lines[lineno - 1]
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        i = lineno - 1
        yield FimLine(
            rel,
            lineno,
            "".join(lines[max(0, i - context_lines) : i]),
            line,
            "".join(lines[i + 1 : i + 1 + context_lines]),
        )


def sample_fim_split(lines: list[str], rng: random.Random, single_line: float = 0.6) -> tuple[str, str, str]:
    """A random hole in ``lines`` at line boundaries: one non-blank line with probability
    ``single_line`` (the inline completion case), else a block of up to 8."""
    n = len(lines)
    size = 1 if rng.random() < single_line else rng.randint(2, min(8, max(2, n // 2)))
    size = min(size, n)
    for _ in range(8):
        start = rng.randrange(0, n - size + 1)
        if lines[start].strip():
            break
    return "".join(lines[:start]), "".join(lines[start : start + size]), "".join(lines[start + size :])
