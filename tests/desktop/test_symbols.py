from __future__ import annotations

from desktop.project.symbols import extract_symbols, python_names_in_view

PY = '''import os


@decorator
class Store:
    def get(self, key,
            default=None):
        return self._data.get(key, default)

    # helpers below
    async def close(self):
        pass


def main():
    return Store()
'''


def test_python_definitions_and_their_extent() -> None:
    got = {(s.name, s.kind, s.line, s.end_line) for s in extract_symbols("m.py", PY)}
    assert got == {
        ("Store", "class", 5, 12),
        ("get", "function", 6, 8),
        ("close", "function", 11, 12),
        ("main", "function", 15, 16),
    }


def test_brace_languages() -> None:
    go = "package x\n\nfunc (s *Server) Start(port int) error {\n\treturn nil\n}\n\ntype Server struct {\n\tname string\n}\n"
    assert [(s.name, s.line, s.end_line) for s in extract_symbols("s.go", go)] == [("Start", 3, 5), ("Server", 7, 9)]
    ts = "export const add = (a: number, b: number) => a + b;\nexport class Shop {\n  open() {}\n}\n"
    assert [(s.name, s.kind) for s in extract_symbols("a.ts", ts)] == [("add", "function"), ("Shop", "class")]
    rs = "pub fn parse(input: &str) -> u32 {\n    0\n}\n"
    assert [(s.name, s.end_line) for s in extract_symbols("l.rs", rs)] == [("parse", 3)]
    assert extract_symbols("notes.txt", "def not_code(): pass") == []


def test_names_in_view_use_the_ast_of_the_visible_statements() -> None:
    lines = PY.split("\n")
    assert python_names_in_view(lines, 15, 16) == ["Store"]
    # Inside a method: only that method is parsed (dedented); names from elsewhere do not leak in.
    assert set(python_names_in_view(lines, 8, 8) or []) == {"self", "_data", "get", "key", "default"}
    broken = (PY + "\ndef half(:\n").split("\n")
    # A syntax error outside the view does not matter; inside it, the caller falls back.
    assert python_names_in_view(broken, 15, 16) == ["Store"]
    assert python_names_in_view(broken, 18, 18) is None
    # A view deep in a block whose own statements do not parse alone falls back to the top level.
    tricky = ["if x:", "    pass", "else:", "    value = compute(1)", ""]
    assert set(python_names_in_view(tricky, 3, 4) or []) == {"value", "compute"}


def test_a_definition_on_the_first_line() -> None:
    [sym] = extract_symbols("x.py", "def first():\n    pass\n")
    assert (sym.name, sym.line, sym.end_line) == ("first", 1, 2)
