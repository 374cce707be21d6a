"""The issue's done-when: a working day in the real client on a real X server (Xvfb and openbox), as a
fresh user account (HOME in a temp dir, no D-Bus session so no keyring daemon), against a real
appliance with the demo model: start, connect, sign in (session-only: there is no keyring), index a
project, ask and see the answer stream (painted piece by piece), accept an inline completion in a
file larger than the model's context, propose and apply an edit, switch files without losing edits,
sign out, and sign in as a new user who must change the one-time password the admin was shown.

The client runs as its own process (tests/helpers/desktop_x_day.py), driven in-process with QTest on
the X display: the pytest process's Qt is offscreen and a process has one platform.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.desktop_real_appliance import ADMIN, RealAppliance, real_appliance

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (shutil.which("Xvfb") and shutil.which("xdotool")),
                       reason="needs Xvfb and xdotool (.ci/run installs them)"),
]
ROOT = Path(__file__).resolve().parents[2]
SMALL = "src/shop/cart.py"
OTHER = "src/shop/prices.py"
BIG = "src/shop/catalog.py"


@pytest.fixture(scope="module")
def appliance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealAppliance]:
    with real_appliance(tmp_path_factory.mktemp("appliance") / "data") as running:
        yield running


@pytest.fixture
def display(tmp_path: Path) -> Iterator[str]:
    xvfb = subprocess.Popen(["Xvfb", "-displayfd", "1", "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert xvfb.stdout is not None
    name = f":{xvfb.stdout.readline().strip()}"
    wm = None
    if shutil.which("openbox"):
        wm = subprocess.Popen(["openbox"], env={**os.environ, "DISPLAY": name, "HOME": str(tmp_path)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield name
    finally:
        if wm is not None:
            wm.terminate()
            wm.wait(timeout=20)
        xvfb.terminate()
        xvfb.wait(timeout=20)


def _project(root: Path) -> Path:
    shop = root / "src" / "shop"
    shop.mkdir(parents=True)
    (shop / "__init__.py").write_text("")
    (shop / "cart.py").write_text(
        "from shop.prices import unit_price\n\n\n"
        "class Cart:\n"
        "    def __init__(self) -> None:\n"
        "        self.items: list[tuple[str, int]] = []\n\n"
        "    def add(self, sku: str, quantity: int) -> None:\n"
        "        self.items.append((sku, quantity))\n\n"
        "    def total(self) -> float:\n"
        "        return sum(unit_price(sku) * q for sku, q in self.items)\n"
    )
    (shop / "prices.py").write_text("PRICES = {'apple': 0.5}\n\n\ndef unit_price(sku: str) -> float:\n    return PRICES.get(sku, 0.0)\n")
    # Far more than the demo model's 4,096 tokens: the client must trim the FIM window around the cursor.
    functions = [f"def price_of_item_{i}(quantity: int) -> float:\n    base = {i}.25 * quantity\n"
                 f"    return round(base * 1.2, 2)\n\n" for i in range(700)]
    (shop / "catalog.py").write_text('"""Prices of the catalogue items."""\n\n' + "".join(functions))
    return root


def _day(spec: dict[str, Any], home: Path, display: str, out: Path) -> tuple[int, dict[str, Any], str]:
    (out / "spec.json").write_text(json.dumps(spec))
    # A fresh account's environment: no D-Bus session bus, no XDG dirs of the tester, nothing inherited.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "DISPLAY": display,
           "PYTHONPATH": str(ROOT), "LANG": "C.UTF-8", "QT_QPA_PLATFORM": "xcb"}
    done = subprocess.run([sys.executable, "-m", "tests.helpers.desktop_x_day", str(out / "spec.json"),
                           str(out / "report.json")], env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
    report = json.loads((out / "report.json").read_text()) if (out / "report.json").exists() else {}
    return done.returncode, report, done.stdout + done.stderr


def test_a_working_day_on_a_plain_x_session(appliance: RealAppliance, display: str, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    project = _project(tmp_path / "project")
    shots = os.environ.get("ENCLAVE_X_SHOTS", "")
    spec = {
        "url": appliance.url, "ca": str(appliance.ca_file), "user": appliance.username, "password": appliance.password,
        "admin": ADMIN[0], "admin_password": ADMIN[1], "new_user": "newdev", "new_password": "Newdev-chose-this-2026",
        "project": str(project), "small": SMALL, "other": OTHER, "big": BIG, "select": [11, 12], "shots": shots,
    }
    code, report, output = _day(spec, home, display, tmp_path)
    steps = {s["step"]: s for s in report.get("steps", [])}
    assert code == 0, json.dumps(report.get("failed"), indent=1) + "\n" + output[-4000:]
    assert "Traceback" not in output and "could not load the Qt platform plugin" not in output, output[-4000:]

    assert steps["connect"]["fingerprint"] == appliance.fingerprint and steps["connect"]["dialog_mapped"]
    # No keyring daemon: said so, and signed in for the session only (the token in memory).
    assert "cannot be remembered" in report["keyring_note"] and steps["sign-in"]["session_only"]
    assert steps["sign-in"]["user"] == appliance.username and steps["sign-in"]["models"]
    assert steps["index"]["files"] >= 4
    # The answer streamed: every piece from the appliance was painted before the next one was read
    # (the stream is paced on the paints, so this does not depend on how fast the model is).
    ask = steps["ask"]
    assert ask["pieces"] > 1 and not ask["missed"] and ask["partial_paints"] >= 1, ask
    # Inline completion in a file larger than the model's context: accepted, no request refused.
    completion = steps["completion"]
    assert completion["file_chars"] > 4 * max(completion["context_length"].values()), completion
    assert completion["accepted"] and not completion["failures"], completion
    edit = steps["edit"]
    assert edit["diff_equals_proposal"] and edit["written"] and edit["changed"], edit
    switch = steps["switch"]
    assert switch["kept"] and switch["disk_untouched"] and OTHER in switch["unsaved"]
    assert any(t.startswith("● ") and t.endswith("prices.py") for t in switch["tabs"]), switch
    out = steps["sign-out"]
    assert out["answer"] == "" and out["history"] == 0 and OTHER in out["unsaved"]
    assert steps["admin"]["otp_shown"] and "newdev" in steps["admin"]["users"]
    assert steps["admin-cleared"] == {"step": "admin-cleared", "users": 0, "otp": ""}  # nothing left for the next user
    new = steps["new-user"]
    assert new["forced"] and new["changed"] and new["user"] == "newdev" and new["models"] and new["banner_hidden"]
    assert report["password_dialog_mapped"][-1]  # the change-password window was on the X screen
    # Session-only means it: no token of the day was written anywhere under the fresh HOME.
    written = b"".join(p.read_bytes() for p in home.rglob("*") if p.is_file())
    assert b"encl_" not in written
