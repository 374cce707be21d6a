"""The code to apply, taken from a model's answer: the right fenced block, without control
characters, re-indented to where it goes.

Pure text logic, no Qt and no files. An answer is Markdown; what a user applies is the code in it,
not the prose around it, and never bytes a terminal or a diff tool would read differently from
what an editor shows (a form feed or a lone carriage return makes ``splitlines`` see lines that
``git diff`` does not).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

__all__ = ["Extracted", "code_blocks", "extract_code", "indent_of", "reindent", "strip_controls"]

# A fence opens with three or more backticks or tildes, optionally indented (inside a list item),
# then an info string whose first word is the language.
_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\n]*)$")

# Languages by file extension, as fences name them (only what the index also knows).
_LANGUAGES: dict[str, tuple[str, ...]] = {
    ".py": ("python", "py", "python3"),
    ".js": ("javascript", "js", "jsx"),
    ".ts": ("typescript", "ts", "tsx"),
    ".go": ("go", "golang"),
    ".rs": ("rust", "rs"),
    ".java": ("java",),
    ".c": ("c",),
    ".h": ("c", "cpp", "c++"),
    ".cpp": ("cpp", "c++", "cxx"),
    ".sh": ("sh", "bash", "shell", "zsh"),
    ".rb": ("ruby", "rb"),
}


@dataclass(frozen=True)
class _Block:
    language: str
    text: str


def _blocks(markdown: str) -> list[_Block]:
    blocks: list[_Block] = []
    lines = markdown.replace("\r\n", "\n").split("\n")
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        language = (opening["info"].split() or [""])[0].lower()
        body: list[str] = []
        i += 1
        while i < len(lines):
            closing = _FENCE.match(lines[i])
            # Closed by the same kind of fence, at least as long, with no info string (CommonMark).
            if closing and closing["fence"][0] == fence[0] and len(closing["fence"]) >= len(fence) and not closing["info"].strip():
                break
            line = lines[i]
            # A fence indented inside a list item indents its body as much: that is not the code's.
            body.append(line[len(indent):] if line.startswith(indent) else line.lstrip(" \t"))
            i += 1
        closed = i < len(lines)
        if body or closed:
            blocks.append(_Block(language, "\n".join(body)))
        i += 1
    return blocks


def code_blocks(markdown: str) -> list[str]:
    """The contents of the fenced code blocks in an answer, in order (an unclosed last one counts)."""
    return [b.text for b in _blocks(markdown)]


# Kept: tab and newline. Everything else in Unicode's "C" categories (C0/C1 controls, DEL,
# format characters such as bidi overrides and zero-width spaces, unassigned, private use) goes.
_KEEP = frozenset("\t\n")


def strip_controls(text: str) -> tuple[str, int]:
    """``text`` with line ends made ``\\n`` and control characters removed; and how many were removed."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    kept = [c for c in text if c in _KEEP or not unicodedata.category(c).startswith("C")]
    return "".join(kept), len(text) - len(kept)


def indent_of(line: str) -> str:
    return line[: len(line) - len(line.lstrip(" \t"))]


def reindent(code: str, indent: str) -> str:
    """``code`` with its common indentation replaced by ``indent``; relative indentation is kept and
    blank lines carry none."""
    lines = code.split("\n")
    filled = [line for line in lines if line.strip()]
    if not filled:
        return code
    common = indent_of(filled[0])
    for line in filled[1:]:
        own = indent_of(line)
        n = 0
        while n < min(len(common), len(own)) and common[n] == own[n]:
            n += 1
        common = common[:n]
    return "\n".join(indent + line[len(common):].rstrip(" \t") if line.strip() else "" for line in lines)


@dataclass(frozen=True)
class Extracted:
    code: str
    from_block: bool  # False: the answer had no code block and its whole text is proposed
    removed_controls: int
    blocks: int  # how many code blocks the answer had

    def note(self) -> str:
        """What was done to the answer to get the code, for the user (empty when nothing worth saying)."""
        notes = []
        if not self.from_block:
            notes.append("the answer has no code block: its whole text is proposed")
        elif self.blocks > 1:
            notes.append(f"the last of {self.blocks} code blocks is proposed")
        if self.removed_controls:
            n = self.removed_controls
            notes.append(f"{n} control character{'s' if n > 1 else ''} removed")
        return "; ".join(notes)


def extract_code(answer: str, *, path: str = "", indent: str | None = None) -> Extracted:
    """The code an answer proposes for ``path``: its last code block in the file's language (else its
    last code block; else its whole text), control characters removed, re-indented to ``indent``
    when given (where the replaced lines start)."""
    blocks = _blocks(answer)
    suffix = "." + path.rsplit(".", 1)[-1].lower() if "." in path.rsplit("/", 1)[-1] else ""
    wanted = _LANGUAGES.get(suffix, ())
    matching = [b for b in blocks if b.language in wanted] if wanted else []
    candidates: list[_Block | None] = [*(matching or blocks)] or [None]
    chosen = candidates[-1]
    raw = chosen.text if chosen is not None else answer.strip("\n")
    code, removed = strip_controls(raw)
    code = code.strip("\n")
    if indent is not None:
        code = reindent(code, indent)
    return Extracted(code, chosen is not None, removed, len(blocks))
