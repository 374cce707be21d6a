"""Desktop test fixtures: Qt offscreen, Qt warnings fail the test, an in-memory keyring, user dirs in tmp."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import keyring
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from pytestqt.qtbot import QtBot

from desktop.app import App, Dirs, build
from desktop.qt import QtMsgType, qInstallMessageHandler
from tests.helpers.desktop_fake_appliance import FakeAppliance
from tests.helpers.desktop_flows import confirm_and_connect, connect, sign_in
from tests.helpers.desktop_keyring import MemoryKeyring
from tests.helpers.desktop_tls import make_ca

# The offscreen platform plugin cannot do these; they say nothing about our code.
_PLATFORM_NOISE = ("This plugin does not support",)


@pytest.fixture(autouse=True)
def qt_warnings_fail() -> Iterator[list[str]]:
    """Any Qt warning (or worse) during a test fails it, with the message."""
    seen: list[str] = []

    def handler(kind: QtMsgType, context: object, message: str) -> None:
        serious = kind in (QtMsgType.QtWarningMsg, QtMsgType.QtCriticalMsg, QtMsgType.QtFatalMsg)
        if serious and not message.startswith(_PLATFORM_NOISE):
            seen.append(message)

    previous = qInstallMessageHandler(handler)
    yield seen
    qInstallMessageHandler(previous)
    if seen:
        pytest.fail("Qt warned: " + " | ".join(seen))


@pytest.fixture
def memory_keyring() -> Iterator[MemoryKeyring]:
    backend = MemoryKeyring()
    previous = keyring.get_keyring()
    keyring.set_keyring(backend)
    yield backend
    keyring.set_keyring(previous)


@pytest.fixture
def dirs(tmp_path: Path) -> Dirs:
    return Dirs(tmp_path / "config", tmp_path / "cache", tmp_path / "data")


@pytest.fixture
def fixture_project(tmp_path: Path) -> Path:
    """A small project with code in three languages, ignore rules, a secret and a binary."""
    root = tmp_path / "project"
    (root / "src" / "shop").mkdir(parents=True)
    (root / "web").mkdir()
    (root / "build").mkdir()
    (root / ".gitignore").write_text("build/\n*.log\n!keep.log\n")
    (root / ".enclaveignore").write_text("vendor/\n")
    (root / "src" / "shop" / "__init__.py").write_text("")
    (root / "src" / "shop" / "cart.py").write_text(
        "from shop.prices import unit_price\n\n\n"
        "class Cart:\n"
        '    """A shopping cart."""\n\n'
        "    def __init__(self) -> None:\n"
        "        self.items: list[tuple[str, int]] = []\n\n"
        "    def add(self, sku: str, quantity: int) -> None:\n"
        "        self.items.append((sku, quantity))\n\n"
        "    def total(self) -> float:\n"
        "        return sum(unit_price(sku) * q for sku, q in self.items)\n"
    )
    (root / "src" / "shop" / "prices.py").write_text(
        "PRICES = {'apple': 0.5, 'pear': 0.75}\n\n\n"
        "def unit_price(sku: str) -> float:\n"
        '    """The price of one item; unknown items cost nothing."""\n'
        "    return PRICES.get(sku, 0.0)\n"
    )
    (root / "web" / "app.js").write_text(
        "export function renderCart(cart) {\n  return cart.items.map((i) => i.sku).join(', ');\n}\n"
    )
    (root / "build" / "out.py").write_text("generated = True\n")
    (root / "debug.log").write_text("noise\n")
    (root / "keep.log").write_text("kept on purpose\n")
    (root / ".env").write_text("DATABASE_PASSWORD=hunter2\n")
    (root / "deploy.pem").write_text("-----BEGIN PRIVATE KEY-----\n")
    (root / "logo.bin").write_bytes(b"\x89PNG\x00\x00binary")
    (root / "data.txt").write_bytes(b"text then\x00nul")
    (root / "vendor").mkdir()
    (root / "vendor" / "lib.py").write_text("x = 1\n")
    return root


@pytest.fixture
def make_app(qtbot: object, dirs: Dirs, memory_keyring: MemoryKeyring) -> Iterator[Callable[..., App]]:
    """Build the whole client (real services, given client factory) with the window shown."""
    built: list[App] = []

    def factory(**kwargs: object) -> App:
        kwargs.setdefault("poll_ms", 60_000)
        app = build(dirs, keyring_backend=memory_keyring, **kwargs)  # type: ignore[arg-type]
        app.window.show()
        built.append(app)
        return app

    yield factory
    for app in built:
        app.close()


@pytest.fixture
def fake() -> FakeAppliance:
    return FakeAppliance()


@pytest.fixture
def signed_in(qtbot: QtBot, make_app: Callable[..., App], fake: FakeAppliance, tmp_path: Path) -> App:
    """The client connected to the in-process fake appliance and signed in as a developer."""
    app = make_app(client_factory=fake.client_factory)
    dialog = connect(qtbot, app, "https://appliance.test:8443", str(make_ca().write(tmp_path / "ca.pem")))
    confirm_and_connect(qtbot, app, dialog)
    sign_in(qtbot, app, "dev", "pw")
    return app
