"""A real editor's own LSP client: headless Neovim (Debian's package, 0.7) with no plugins starts
``enclave-lsp`` through ``vim.lsp.start_client`` — the configuration docs/editors.md shows, in
data/nvim_init.lua — opens a project file, asks ``textDocument/completion`` at a cursor (0.7 has
no inline completion) and gets the appliance's suggestion (the demo model, temperature 0)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.desktop.lsp.conftest import SECRET_MARKER
from tests.helpers.desktop_real_appliance import RealAppliance
from tests.helpers.lsp_session import LSP_COMMAND, LspHome, audit_records, auditor_client

INIT = Path(__file__).parent / "data" / "nvim_init.lua"
NVIM = shutil.which("nvim")


@pytest.mark.skipif(NVIM is None, reason="Neovim is not installed (.ci/run installs Debian's neovim)")
def test_neovim_attaches_and_gets_a_completion(
    appliance: RealAppliance, project: Path, signed_in_home: LspHome, tmp_path: Path
) -> None:
    assert NVIM is not None
    cart = project / "src/shop/cart.py"
    lines = cart.read_text().split("\n")
    line = lines.index("    def total(self) -> float:")
    out = tmp_path / "completion.json"
    env = signed_in_home.env | {
        "ENCLAVE_LSP_CMD": json.dumps(LSP_COMMAND),
        "ENCLAVE_NVIM_OUT": str(out),
        "ENCLAVE_NVIM_LINE": str(line + 1),  # Neovim's cursor: 1-based line, 0-based column
        "ENCLAVE_NVIM_COL": "0",
    }
    auditor = auditor_client(appliance)
    before = len(audit_records(auditor, appliance.username, "generation.requested"))
    done = subprocess.run(
        [NVIM, "--headless", "--clean", "-u", str(INIT), str(cart.relative_to(project))],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert out.exists(), (
        f"Neovim wrote nothing (exit {done.returncode}): {done.stdout[-2000:]} {done.stderr[-2000:]}"
    )
    result = json.loads(out.read_text())
    assert result.get("error") is None, result
    assert result["attached"], result
    [response] = result["responses"]
    assert "err" not in response, response
    items = response["result"]["items"]
    assert len(items) >= 1, result
    item = items[0]
    text = item["textEdit"]["newText"]
    assert text.strip() and item["detail"] == "Enclave"
    assert item["textEdit"]["range"]["start"] == {"line": line, "character": 0}
    # It came from the appliance: one more audited generation, for this file and nothing excluded.
    requested = audit_records(auditor, appliance.username, "generation.requested")
    assert len(requested) == before + 1
    details = requested[0]["details"]
    assert details["endpoint"].startswith("completions")
    assert all(not f["path"].startswith("internal/") for f in details["context_files"])
    assert SECRET_MARKER not in text
