"""Fixtures for the language server's tests: one real appliance for the package (``enclave demo``:
the demo model on ONNX Runtime, the real audit log), whose demo user is in a team that seals
content (so the tests can read exactly what was sent) and excludes ``internal/``; a project."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.desktop_real_appliance import RealAppliance, real_appliance
from tests.helpers.lsp_session import LspHome, connect_and_sign_in

SECRET_MARKER = "SECRET_MARKER_4242"


@pytest.fixture(scope="package")
def appliance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealAppliance]:
    with real_appliance(tmp_path_factory.mktemp("appliance") / "data") as running:
        data = str(running.data_dir)
        for args in (
            ["team", "add", "lsp", "--capture", "sealed", "--exclude-path", "internal/"],
            ["team", "add-member", "lsp", running.username],
        ):
            done = subprocess.run([sys.executable, "-m", "appliance", *args, "--data", data], capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stderr
        yield running


@pytest.fixture(scope="package")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Code that uses a helper defined in a policy-excluded file, a secret, and enough lines to trim."""
    root = tmp_path_factory.mktemp("project")
    (root / "src" / "shop").mkdir(parents=True)
    (root / "internal").mkdir()
    (root / "src" / "shop" / "prices.py").write_text(
        "PRICES = {'apple': 0.5, 'pear': 0.75}\n\n\n"
        "def unit_price(sku: str) -> float:\n"
        '    """The price of one item; unknown items cost nothing."""\n'
        "    return PRICES.get(sku, 0.0)\n"
    )
    (root / "src" / "shop" / "cart.py").write_text(
        "from internal.keys import secret_helper\n"
        "from shop.prices import unit_price\n\n\n"
        "class Cart:\n"
        "    def __init__(self) -> None:\n"
        "        self.items: list[tuple[str, int]] = []\n\n"
        "    def add(self, sku: str, quantity: int) -> None:\n"
        "        self.items.append((sku, quantity))\n\n"
        "    def total(self) -> float:\n"
        "        secret_helper(self.items)\n"
        "        return sum(unit_price(sku) * q for sku, q in self.items)\n"
    )
    (root / "internal" / "keys.py").write_text(
        f"{SECRET_MARKER} = 'never leaves the machine'\n\n\ndef secret_helper(items):\n    return {SECRET_MARKER}\n"
    )
    (root / ".env").write_text(f"DATABASE_PASSWORD={SECRET_MARKER}\n")
    # A long file: its FIM window must be trimmed to fit the model's context.
    (root / "src" / "shop" / "big.py").write_text(
        "".join(f"def helper_{i}(value: int) -> int:\n    return value * {i} + unit_price('apple')\n\n" for i in range(600))
    )
    return root


@pytest.fixture(scope="package")
def signed_in_home(tmp_path_factory: pytest.TempPathFactory, appliance: RealAppliance) -> LspHome:
    """A user who connected and signed in with ``enclave-lsp connect`` / ``sign-in``."""
    home = LspHome(tmp_path_factory.mktemp("home"))
    connect_and_sign_in(home, appliance)
    return home
