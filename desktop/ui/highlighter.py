"""Syntax highlighting for the editor: keywords, strings, comments and numbers per language family."""

from __future__ import annotations

from desktop.project.symbols import language_of
from desktop.qt import QColor, QFont, QRegularExpression, QSyntaxHighlighter, QTextCharFormat, QTextDocument

__all__ = ["CodeHighlighter", "DiffHighlighter"]

_KEYWORDS = {
    "python": "and as assert async await break class continue def del elif else except False finally for from "
    "global if import in is lambda None nonlocal not or pass raise return True try while with yield match case",
    "js": "async await break case catch class const continue default delete do else export extends false finally "
    "for function if import in instanceof interface let new null return static super switch this throw true try "
    "type typeof undefined var void while yield",
    "go": "break case chan const continue default defer else fallthrough for func go goto if import interface map "
    "package range return select struct switch type var nil true false",
    "rust": "as async await break const continue crate else enum extern false fn for if impl in let loop match mod "
    "move mut pub ref return self Self static struct super trait true type unsafe use where while",
    "java": "abstract boolean break case catch class const continue default do double else enum extends final "
    "finally float for if implements import int interface long new null package private protected public return "
    "static super switch this throw throws try void while true false fun val var",
    "c": "auto break case char class const continue default delete do double else enum extern float for if "
    "inline int long namespace new nullptr private public return short signed sizeof static struct switch "
    "template this typedef union unsigned using virtual void volatile while",
    "ruby": "begin break case class def do else elsif end ensure false for if in module next nil not or redo "
    "rescue retry return self super then true unless until when while yield",
}
_HASH_COMMENT = {"python", "ruby"}


def _fmt(color: str, *, bold: bool = False, italic: bool = False) -> QTextCharFormat:
    fmt = QTextCharFormat()
    fmt.setForeground(QColor(color))
    if bold:
        fmt.setFontWeight(QFont.Weight.Bold)
    fmt.setFontItalic(italic)
    return fmt


class CodeHighlighter(QSyntaxHighlighter):
    def __init__(self, document: QTextDocument, path: str = "") -> None:
        super().__init__(document)
        self._rules: list[tuple[QRegularExpression, QTextCharFormat]] = []
        self.set_path(path)

    def set_path(self, path: str) -> None:
        self.language = language_of(path) or ""
        rules: list[tuple[QRegularExpression, QTextCharFormat]] = []
        words = _KEYWORDS.get(self.language, "").split()
        if words:
            rules.append((QRegularExpression(r"\b(" + "|".join(words) + r")\b"), _fmt("#0033b3", bold=True)))
        rules.append((QRegularExpression(r"\b[0-9][0-9_]*(\.[0-9_]+)?\b"), _fmt("#1750eb")))
        rules.append((QRegularExpression(r"\"(\\.|[^\"\\])*\"|'(\\.|[^'\\])*'"), _fmt("#067d17")))
        comment = r"#[^\n]*" if self.language in _HASH_COMMENT else r"//[^\n]*"
        if self.language:
            rules.append((QRegularExpression(comment), _fmt("#8c8c8c", italic=True)))
        self._rules = rules
        self.rehighlight()

    def highlightBlock(self, text: str) -> None:
        for pattern, fmt in self._rules:
            it = pattern.globalMatch(text)
            while it.hasNext():
                m = it.next()
                self.setFormat(m.capturedStart(), m.capturedLength(), fmt)


class DiffHighlighter(QSyntaxHighlighter):
    def highlightBlock(self, text: str) -> None:
        if text.startswith(("+++", "---")):
            self.setFormat(0, len(text), _fmt("#555555", bold=True))
        elif text.startswith("+"):
            self.setFormat(0, len(text), _fmt("#067d17"))
        elif text.startswith("-"):
            self.setFormat(0, len(text), _fmt("#c00000"))
        elif text.startswith("@@"):
            self.setFormat(0, len(text), _fmt("#6f42c1"))
