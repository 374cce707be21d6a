"""Symbol definitions: where functions, classes and types are defined, and where they end.

Bulk indexing uses one regular expression per language family, because it has to keep up with
thousands of files a second (``ast.parse`` manages a few hundred). Where a definition ends comes from
indentation (Python) or brace balance (C-like languages). For the Python file open in the editor,
:func:`python_names_in_view` uses ``ast`` for an exact list of the names the visible code uses.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence
from typing import NamedTuple

__all__ = ["Symbol", "definition_end", "extract_symbols", "identifiers", "language_of", "python_names_in_view"]

_MAX_DEF_LINES = 400


class Symbol(NamedTuple):
    # A NamedTuple, not a frozen dataclass: tens of thousands are made per second while indexing.
    name: str
    kind: str
    line: int  # 1-based, inclusive
    end_line: int


_LANG_BY_SUFFIX = {
    ".py": "python",
    ".pyi": "python",
    ".js": "js",
    ".jsx": "js",
    ".mjs": "js",
    ".cjs": "js",
    ".ts": "js",
    ".tsx": "js",
    ".go": "go",
    ".rs": "rust",
    ".java": "java",
    ".kt": "java",
    ".cs": "java",
    ".scala": "java",
    ".c": "c",
    ".h": "c",
    ".cc": "c",
    ".cpp": "c",
    ".cxx": "c",
    ".hpp": "c",
    ".hh": "c",
    ".rb": "ruby",
}

_PY_NAME = re.compile(r"[ \t]*([A-Za-z_]\w*)")
_BRACE_PATTERNS: dict[str, list[tuple[str, re.Pattern[str]]]] = {
    "js": [
        ("function", re.compile(r"^[ \t]*(?:export[ \t]+)?(?:default[ \t]+)?(?:async[ \t]+)?function\*?[ \t]+([A-Za-z_$][\w$]*)", re.M)),
        ("class", re.compile(r"^[ \t]*(?:export[ \t]+)?(?:default[ \t]+)?(?:abstract[ \t]+)?class[ \t]+([A-Za-z_$][\w$]*)", re.M)),
        ("interface", re.compile(r"^[ \t]*(?:export[ \t]+)?(?:interface|enum)[ \t]+([A-Za-z_$][\w$]*)", re.M)),
        ("type", re.compile(r"^[ \t]*(?:export[ \t]+)?type[ \t]+([A-Za-z_$][\w$]*)[ \t]*(?:<[^>]*>)?[ \t]*=", re.M)),
        ("function", re.compile(r"^[ \t]*(?:export[ \t]+)?(?:const|let|var)[ \t]+([A-Za-z_$][\w$]*)[ \t]*(?::[^=]+)?=[ \t]*(?:async[ \t]*)?(?:\([^)]*\)|[A-Za-z_$][\w$]*)[ \t]*(?::[^=]+)?=>", re.M)),
    ],
    "go": [
        ("function", re.compile(r"^func[ \t]+(?:\([^)]*\)[ \t]*)?([A-Za-z_]\w*)", re.M)),
        ("type", re.compile(r"^type[ \t]+([A-Za-z_]\w*)", re.M)),
    ],
    "rust": [
        ("function", re.compile(r"^[ \t]*(?:pub(?:\([^)]*\))?[ \t]+)?(?:const[ \t]+)?(?:async[ \t]+)?(?:unsafe[ \t]+)?fn[ \t]+([A-Za-z_]\w*)", re.M)),
        ("type", re.compile(r"^[ \t]*(?:pub(?:\([^)]*\))?[ \t]+)?(?:struct|enum|trait|union|type)[ \t]+([A-Za-z_]\w*)", re.M)),
    ],
    "java": [
        ("class", re.compile(r"^[ \t]*(?:(?:public|private|protected|internal|abstract|final|static|sealed|data|open)[ \t]+)*(?:class|interface|enum|record|object)[ \t]+([A-Za-z_]\w*)", re.M)),
        ("method", re.compile(r"^[ \t]*(?:(?:public|private|protected|internal|static|final|abstract|synchronized|override|async|virtual)[ \t]+)+[\w<>\[\],.? ]+?[ \t]+([A-Za-z_]\w*)[ \t]*\([^;{]*$", re.M)),
        ("function", re.compile(r"^[ \t]*(?:(?:private|public|internal|override|suspend)[ \t]+)*fun[ \t]+(?:<[^>]*>[ \t]*)?([A-Za-z_]\w*)", re.M)),
    ],
    "c": [
        ("type", re.compile(r"^[ \t]*(?:typedef[ \t]+)?(?:struct|class|enum|union)[ \t]+([A-Za-z_]\w*)[ \t]*(?::[^{;]*)?\{?[ \t]*$", re.M)),
        ("function", re.compile(r"^(?:[A-Za-z_][\w:<>,*& ]*[ \t*&]+)([A-Za-z_][\w:~]*)[ \t]*\([^;]*$", re.M)),
        ("macro", re.compile(r"^#[ \t]*define[ \t]+([A-Za-z_]\w*)", re.M)),
    ],
    "ruby": [
        ("method", re.compile(r"^[ \t]*def[ \t]+(?:self\.)?([A-Za-z_]\w*[?!=]?)", re.M)),
        ("class", re.compile(r"^[ \t]*(?:class|module)[ \t]+([A-Z]\w*)", re.M)),
    ],
}
_C_KEYWORDS = frozenset({"if", "for", "while", "switch", "return", "else", "sizeof", "case", "do"})
_IDENT = re.compile(r"[A-Za-z_]\w{2,}")


def language_of(path: str) -> str | None:
    dot = path.rfind(".")
    return _LANG_BY_SUFFIX.get(path[dot:].lower()) if dot >= 0 else None


def _python_end(lines: list[str], line: int) -> int:
    """Last line of the Python definition starting at ``line``: before the next non-blank line
    indented no deeper than it. A closing bracket (the tail of a multi-line signature) does not end
    it; a comment at its depth does, as it usually introduces what follows."""
    head = lines[line - 1]
    indent = len(head.expandtabs()) - len(head.lstrip().expandtabs())
    end = line
    for i in range(line, min(len(lines), line - 1 + _MAX_DEF_LINES)):
        s = lines[i]
        stripped = s.lstrip()
        if not stripped:
            continue
        if len(s.expandtabs()) - len(stripped.expandtabs()) <= indent and stripped[0] not in ")]}":
            break
        end = i + 1
    return end


def _python_symbols(text: str) -> list[Symbol]:
    # str.find for the keywords, then a look at the line they are on, is several times faster than
    # a regular expression tried at every line start (this runs over every file of a project).
    found: list[tuple[int, str, str]] = []
    for keyword in ("def", "class"):
        needle = keyword + " "
        i = text.find(needle)
        while i >= 0:
            line_start = text.rfind("\n", 0, i) + 1
            prefix = text[line_start:i].strip()
            if prefix in ("", "async"):
                m = _PY_NAME.match(text, i + len(needle))
                if m is not None:
                    found.append((line_start, keyword, m.group(1)))
            i = text.find(needle, i + len(needle))
    found.sort()
    lines = _line_numbers(text, [f[0] for f in found])
    return [
        Symbol(name, "class" if keyword == "class" else "function", line, line)
        for (_, keyword, name), line in zip(found, lines, strict=True)
    ]


def _line_numbers(text: str, offsets: list[int]) -> list[int]:
    """1-based line numbers of sorted offsets."""
    out = []
    line, last = 1, 0
    for off in offsets:
        line += text.count("\n", last, off)
        last = off
        out.append(line)
    return out


def _brace_end(lines: list[str], line: int) -> int:
    depth = 0
    opened = False
    for i in range(line - 1, min(len(lines), line - 1 + _MAX_DEF_LINES)):
        s = lines[i]
        depth += s.count("{") - s.count("}")
        if "{" in s:
            opened = True
        if opened and depth <= 0:
            return i + 1
        if not opened and (i - line >= 2 or s.rstrip().endswith(";")):
            return line
    return line


def definition_end(path: str, lines: list[str], line: int) -> int:
    """Last line (1-based) of the definition that starts at ``line`` of a file."""
    lang = language_of(path)
    if not 1 <= line <= len(lines) or lang in (None, "ruby"):
        return line
    if lang == "python":
        return _python_end(lines, line)
    if lang == "c" and lines[line - 1].lstrip().startswith("#"):
        return line  # a macro
    return _brace_end(lines, line)


def extract_symbols(path: str, text: str, *, extents: bool = True) -> list[Symbol]:
    """Definitions in one file, in order of appearance; [] for languages we do not know.

    With ``extents=False`` each symbol's ``end_line`` is its first line: the index stores only where
    definitions start (fast), and :func:`definition_end` finds the end when a definition is used.
    """
    lang = language_of(path)
    if lang is None:
        return []
    if lang == "python":
        found = _python_symbols(text)
    else:
        matches: list[tuple[int, str, str]] = []
        for kind, pattern in _BRACE_PATTERNS[lang]:
            for m in pattern.finditer(text):
                if lang == "c" and m.group(1) in _C_KEYWORDS:
                    continue
                matches.append((m.start(), kind, m.group(1)))
        matches.sort()
        by_line: dict[int, Symbol] = {}
        for (_, kind, name), line in zip(matches, _line_numbers(text, [m[0] for m in matches]), strict=True):
            by_line.setdefault(line, Symbol(name, kind, line, line))
        found = [by_line[k] for k in sorted(by_line)]
    if not extents:
        return found
    lines = text.split("\n")
    return [Symbol(s.name, s.kind, s.line, definition_end(path, lines, s.line)) for s in found]


def identifiers(text: str) -> list[str]:
    """Distinct identifiers (3+ characters) in order of first appearance."""
    return list(dict.fromkeys(_IDENT.findall(text)))


_CONTINUATIONS = ("else", "elif", "except", "finally", "case")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def _starts_statement(line: str, depth: int) -> bool:
    """Whether ``line`` begins a statement at indentation ``depth`` (not a continuation of one)."""
    if not line.strip() or _indent(line) != depth:
        return False
    body = line[depth:]
    return body[0] not in "#)]}" and not body.startswith(_CONTINUATIONS)


def _parse_region(lines: Sequence[str], first: int, last: int, depth: int) -> tuple[ast.Module, int] | None:
    """Parse the statements at ``depth`` that cover lines first..last, dedented; with the offset."""
    start = first
    while start > 1 and not _starts_statement(lines[start - 1], depth):
        start -= 1
    end = last
    while end < len(lines) and not (lines[end].strip() and _indent(lines[end]) <= depth and not lines[end].lstrip().startswith(("#", ")", "]", "}"))):
        end += 1
    if not _starts_statement(lines[start - 1], depth):
        return None
    try:
        return ast.parse("\n".join(line[depth:] if line.strip() else "" for line in lines[start - 1 : end])), start - 1
    except (SyntaxError, ValueError):
        return None


def python_names_in_view(lines: Sequence[str], first_line: int, last_line: int) -> list[str] | None:
    """Names used in lines ``first_line..last_line`` of Python source (a list of lines), via ``ast``.

    Only the statements around the view are parsed — those at the view's shallowest indentation,
    dedented; failing that, the enclosing top-level statements — which is far cheaper than the
    whole file, and a syntax error elsewhere (mid-edit) does not matter. Returns None when even
    that does not parse; callers then fall back to :func:`identifiers`.
    """
    first = max(1, min(first_line, len(lines)))
    last = max(first, min(last_line, len(lines)))
    depths = [_indent(line) for line in lines[first - 1 : last] if line.strip() and not line.lstrip().startswith("#")]
    parsed = None
    if depths and min(depths) > 0:
        parsed = _parse_region(lines, first, last, min(depths))
    if parsed is None:
        parsed = _parse_region(lines, first, last, 0)
    if parsed is None:
        return None
    tree, offset = parsed
    first_line, last_line = first - offset, last - offset
    names: dict[str, None] = {}
    for node in ast.walk(tree):
        lineno = getattr(node, "lineno", None)
        if lineno is None or not first_line <= lineno <= last_line:
            continue
        if isinstance(node, ast.Name):
            names[node.id] = None
        elif isinstance(node, ast.Attribute):
            names[node.attr] = None
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                names[alias.name] = None
    return [n for n in names if len(n) >= 3]
