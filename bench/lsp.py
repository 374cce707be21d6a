"""enclave-lsp: completion latency from the keystroke pause (the editor's request) to the first
item, p50/p95, on the demo model, beside the peer in the same run: the same FIM request sent
straight to the appliance over HTTP. Then the server's resident memory with a 2,000-file project
indexed.

    .venv/bin/python bench/lsp.py [--requests 40]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil
from lsprotocol import types
from pygls import uris
from pytest_lsp import ClientServerConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from desktop.client.api import ApplianceClient
from desktop.client.prompts import build_fim_request
from tests.helpers.desktop_real_appliance import real_appliance
from tests.helpers.lsp_session import LSP_COMMAND, LspHome, connect_and_sign_in


def _project(root: Path, files: int) -> Path:
    for i in range(files):
        d = root / f"pkg{i // 100}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"mod{i}.py").write_text(
            f"def compute_{i}(value: int) -> int:\n    return value * {i}\n\n\nclass Thing{i}:\n    size = {i}\n"
        )
    return root


def _pct(xs: list[float], q: float) -> float:
    return sorted(xs)[min(len(xs) - 1, int(q * len(xs)))] * 1000


async def _lsp(home: LspHome, root: Path, n: int) -> tuple[list[float], int]:
    client = await ClientServerConfig(server_command=LSP_COMMAND, server_env=home.env).start()
    await client.initialize_session(types.InitializeParams(capabilities=types.ClientCapabilities(), root_uri=uris.from_fs_path(str(root))))
    for _ in range(600):
        status = await client.workspace_execute_command_async(types.ExecuteCommandParams(command="enclave.status"))
        if status.get("indexedFiles"):
            break
        await asyncio.sleep(0.1)
    target = root / "pkg0" / "mod1.py"
    uri = uris.from_fs_path(str(target)) or ""
    text = target.read_text()
    client.text_document_did_open(types.DidOpenTextDocumentParams(types.TextDocumentItem(uri, "python", 1, text)))
    times = []
    for i in range(n):
        params = types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri), position=types.Position(i % 5, 0),
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic),
        )
        start = time.perf_counter()
        await client.text_document_inline_completion_async(params)
        times.append(time.perf_counter() - start)
    assert client._server is not None
    rss = psutil.Process(client._server.pid).memory_info().rss
    await client.shutdown_session()
    await client.stop()
    return times, rss


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--files", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, real_appliance(Path(tmp) / "data") as app:
        root = _project(Path(tmp) / "project", args.files)
        home = LspHome(Path(tmp) / "home")
        connect_and_sign_in(home, app)
        times, rss = asyncio.run(_lsp(home, root, args.requests))
        # The peer: the same kind of request straight over HTTP (no debounce, no context, no LSP).
        client = ApplianceClient(app.url, ca_file=app.ca_file, token=app.token)
        model = client.models()[0]
        text = (root / "pkg0" / "mod1.py").read_text()
        raw = []
        for i in range(args.requests):
            cut = len(text) * (i % 5) // 5
            start = time.perf_counter()
            for _ in client.stream_completion(build_fim_request(model, text[:cut], text[cut:], max_tokens=48)):
                pass
            raw.append(time.perf_counter() - start)
    print(f"enclave-lsp inline completion (pause -> first item): p50 {_pct(times, 0.5):.0f} ms  p95 {_pct(times, 0.95):.0f} ms  (n={len(times)}, incl. 60 ms debounce)")
    print(f"raw HTTP FIM request (peer):                        p50 {_pct(raw, 0.5):.0f} ms  p95 {_pct(raw, 0.95):.0f} ms")
    print(f"ratio p95 lsp/raw: {_pct(times, 0.95) / _pct(raw, 0.95):.2f}  (mean {statistics.mean(times) * 1000:.0f} vs {statistics.mean(raw) * 1000:.0f} ms)")
    print(f"enclave-lsp resident memory with {args.files} files indexed: {rss / 2**20:.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
