"""The server's event loop and HTTP parser: uvloop and httptools where they import, the pure-Python
ones otherwise (same behaviour, slower)."""

from __future__ import annotations

import asyncio
import sys

import pytest

from appliance.api.server import _http_implementation, run_loop


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_fast_implementations_when_installed() -> None:
    pytest.importorskip("uvloop")
    pytest.importorskip("httptools")
    assert run_loop(_loop_module()).startswith("uvloop")
    assert _http_implementation() == "httptools"


def test_pure_python_fallback_when_they_do_not_import(monkeypatch: pytest.MonkeyPatch) -> None:
    # A None entry in sys.modules makes `import name` raise ImportError.
    monkeypatch.setitem(sys.modules, "uvloop", None)
    monkeypatch.setitem(sys.modules, "httptools", None)
    assert run_loop(_loop_module()).startswith("asyncio")
    assert _http_implementation() == "h11"
