"""``enclave-lsp`` driven over stdio by pytest-lsp's LSP client, against a real appliance (the demo
model on ONNX Runtime, HTTPS with the pinned CA, the real audit log with sealed content).

The demo model's weights are random, so what it suggests is noise; the tests check the path: what
the editor gets is what the appliance generated, what was sent (read back from the sealed audit
content), cancellation reaching the appliance, and messages when it cannot be used.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from lsprotocol import types
from pygls import uris
from pygls.exceptions import JsonRpcRequestCancelled
from pytest_lsp import ClientServerConfig, LanguageClient

from desktop.client.api import ApplianceClient
from desktop.client.profile import Profile, ProfileStore
from desktop.lsp.completion import shape_suggestion
from desktop.project.index import project_id
from tests.desktop.lsp.conftest import SECRET_MARKER
from tests.helpers.desktop_real_appliance import RealAppliance
from tests.helpers.lsp_session import (
    LSP_COMMAND,
    LspHome,
    audit_records,
    auditor_client,
    connect_and_sign_in,
    wait_for,
)

pytestmark = pytest.mark.asyncio
INIT_RESULTS: dict[int, types.InitializeResult] = {}


@contextlib.asynccontextmanager
async def lsp(home: LspHome, root: Path, options: dict[str, Any] | None = None) -> AsyncIterator[LanguageClient]:
    client = await ClientServerConfig(server_command=LSP_COMMAND, server_env=home.env).start()
    try:
        INIT_RESULTS[id(client)] = await client.initialize_session(
            types.InitializeParams(
                capabilities=types.ClientCapabilities(window=types.WindowClientCapabilities(work_done_progress=True)),
                root_uri=uris.from_fs_path(str(root)),
                workspace_folders=[types.WorkspaceFolder(uri=uris.from_fs_path(str(root)) or "", name=root.name)],
                initialization_options=options,
            )
        )
        yield client
        await client.shutdown_session()
    finally:
        server = client._server
        if server is not None and server.returncode is None:
            server.kill()  # a failed test must not leave the server (and the client's stop) waiting
        await client.stop()
        INIT_RESULTS.pop(id(client), None)


async def command(client: LanguageClient, name: str, args: dict[str, Any] | None = None) -> Any:
    params = types.ExecuteCommandParams(command=name, arguments=[args] if args is not None else None)
    return await client.workspace_execute_command_async(params)


async def indexed(client: LanguageClient) -> dict[str, Any]:
    for _ in range(400):
        status = await command(client, "enclave.status")
        if status.get("indexedFiles"):
            return dict(status)
        await asyncio.sleep(0.05)
    raise AssertionError("the project was never indexed")


def open_doc(client: LanguageClient, path: Path) -> str:
    uri = uris.from_fs_path(str(path)) or ""
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(types.TextDocumentItem(uri=uri, language_id="python", version=1, text=path.read_text()))
    )
    return uri


def inline_params(uri: str, line: int, character: int, token: str | None = None) -> types.InlineCompletionParams:
    return types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri),
        position=types.Position(line=line, character=character),
        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic),
        work_done_token=token,
    )


def sealed(auditor: ApplianceClient, record: dict[str, Any]) -> str:
    content = record["content"]
    assert content is not None and content["mode"] == "sealed", record
    return json.dumps(auditor.audit_sealed(content["ref"]))


async def test_initialize_open_and_inline_completion(
    appliance: RealAppliance, project: Path, signed_in_home: LspHome
) -> None:
    auditor = await asyncio.to_thread(auditor_client, appliance)
    async with lsp(signed_in_home, project) as client:
        caps = INIT_RESULTS[id(client)].capabilities
        assert caps.inline_completion_provider and caps.completion_provider
        assert caps.execute_command_provider is not None
        assert "enclave.editSelection" in caps.execute_command_provider.commands
        status = await indexed(client)
        assert status["signedIn"] and status["username"] == appliance.username and status["capture"] == "sealed"
        assert "internal/" in status["pathExclusions"]
        cart = project / "src/shop/cart.py"
        uri = open_doc(client, cart)
        line = cart.read_text().split("\n").index("        return sum(unit_price(sku) * q for sku, q in self.items)")
        before = len(await asyncio.to_thread(audit_records, auditor, appliance.username, "generation.requested"))
        result = await client.text_document_inline_completion_async(inline_params(uri, line, 8))

        requested = await asyncio.to_thread(audit_records, auditor, appliance.username, "generation.requested")
        assert len(requested) == before + 1
        record = requested[0]
        assert record["details"]["endpoint"].startswith("completions")
        assert record["details"]["project_id"] == project_id(project)
        sent = {f["path"] for f in record["details"]["context_files"]}
        assert "src/shop/prices.py" in sent  # unit_price's definition, from the index
        prompt = sealed(auditor, record)
        assert "def unit_price" in prompt and "class Cart" in prompt
        # The answer the editor got is the appliance's completion, cut where a suggestion ends.
        closing = wait_for(lambda: [r for r in audit_records(auditor, appliance.username) if r["request_id"] == record["request_id"] and r["action"] != "generation.requested"])
        # The server stops reading once the suggestion is whole (here, at the first line end: the rest
        # of the line is code) and closing the stream stops the generation, audited as cancelled; a
        # generation that ends before that is completed. Anything else (failed, none) is a defect.
        action = closing[0]["action"]
        assert action in ("generation.completed", "generation.cancelled")
        completion = json.loads(sealed(auditor, closing[0]))["completion"]
        if action == "generation.cancelled":
            assert "\n" in completion  # it was cut because the suggestion was whole, not by accident
        expected = shape_suggestion(completion, "return sum(unit_price(sku) * q for sku, q in self.items)")
        assert isinstance(result, types.InlineCompletionList)
        assert [i.insert_text for i in result.items] == ([expected] if expected else [])
        if result.items:
            assert result.items[0].range == types.Range(types.Position(line, 8), types.Position(line, 8))
        assert client.messages == []  # nothing went wrong: nothing to say


async def test_completion_fallback_and_long_file_trimmed(appliance: RealAppliance, project: Path, signed_in_home: LspHome) -> None:
    auditor = await asyncio.to_thread(auditor_client, appliance)
    async with lsp(signed_in_home, project, {"fimBudget": 300, "contextBudget": 0}) as client:
        await indexed(client)
        big = project / "src/shop/big.py"
        uri = open_doc(client, big)
        lines = big.read_text().split("\n")
        middle = len(lines) // 2
        result = await client.text_document_completion_async(
            types.CompletionParams(text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(middle, 0))
        )
        assert isinstance(result, types.CompletionList) and result.is_incomplete
        [record] = (await asyncio.to_thread(audit_records, auditor, appliance.username, "generation.requested"))[:1]
        prompt = json.loads(sealed(auditor, record))["prompt"]
        # The file has ~1800 lines; only the lines next to the cursor went, and no context section.
        assert record["details"]["prompt_tokens"] < 1500 and "# src/" not in prompt
        assert lines[middle - 1] in prompt and lines[0] not in prompt
        for item in result.items:
            assert item.text_edit is not None and isinstance(item.text_edit, types.TextEdit)
            assert item.text_edit.range.start == types.Position(middle, 0)


async def _generating(client: LanguageClient, token: str, request: Any) -> None:
    for _ in range(2000):
        if client.progress_reports.get(token):
            return
        if request.done():
            raise AssertionError(f"the request ended before it was cancelled: {request.result()!r} {client.messages}")
        await asyncio.sleep(0.01)
    raise AssertionError("the generation never started")


async def _closing(auditor: ApplianceClient, actor: str, request_id: str) -> dict[str, Any]:
    def find() -> list[dict[str, Any]]:
        return [r for r in audit_records(auditor, actor) if r["request_id"] == request_id and r["action"] != "generation.requested"]

    return (await asyncio.to_thread(wait_for, find))[0]


# Long prompts (a long prefill) and many tokens: the generation is still running when the cancel comes.
_SLOW = {"fimBudget": 1400, "contextBudget": 0, "maxTokens": 600, "debounceMs": 0}


async def test_cancel_request_stops_the_generation_on_the_appliance(
    appliance: RealAppliance, project: Path, signed_in_home: LspHome
) -> None:
    auditor = await asyncio.to_thread(auditor_client, appliance)
    async with lsp(signed_in_home, project, _SLOW) as client:
        uri = open_doc(client, project / "src/shop/big.py")
        client.progress_reports["gen-1"] = []
        request = asyncio.wrap_future(client.protocol.send_request(types.TEXT_DOCUMENT_INLINE_COMPLETION, inline_params(uri, 1500, 0, "gen-1"), msg_id="req-1"))
        await _generating(client, "gen-1", request)  # the appliance admitted it (and audited the request)
        client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id="req-1"))
        with pytest.raises(JsonRpcRequestCancelled):
            await request
        [requested] = (await asyncio.to_thread(audit_records, auditor, appliance.username, "generation.requested"))[:1]
        closing = await _closing(auditor, appliance.username, requested["request_id"])
        assert closing["action"] == "generation.cancelled" and closing["outcome"] == "cancelled"
        assert closing["details"]["completion_tokens"] < 600
        assert [p.kind for p in client.progress_reports["gen-1"]] == ["begin", "end"]


async def test_a_newer_request_cancels_the_running_one(appliance: RealAppliance, project: Path, signed_in_home: LspHome) -> None:
    auditor = await asyncio.to_thread(auditor_client, appliance)
    async with lsp(signed_in_home, project, _SLOW) as client:
        uri = open_doc(client, project / "src/shop/big.py")
        client.progress_reports["gen-a"] = []
        first = asyncio.wrap_future(client.protocol.send_request(types.TEXT_DOCUMENT_INLINE_COMPLETION, inline_params(uri, 1500, 0, "gen-a")))
        await _generating(client, "gen-a", first)
        [first_record] = (await asyncio.to_thread(audit_records, auditor, appliance.username, "generation.requested"))[:1]
        second = await client.text_document_inline_completion_async(inline_params(uri, 30, 0))
        with pytest.raises(JsonRpcRequestCancelled):
            await first
        assert isinstance(second, types.InlineCompletionList)
        closing = await _closing(auditor, appliance.username, first_record["request_id"])
        assert closing["action"] == "generation.cancelled"


async def test_excluded_files_are_never_sent(appliance: RealAppliance, project: Path, signed_in_home: LspHome) -> None:
    auditor = await asyncio.to_thread(auditor_client, appliance)
    async with lsp(signed_in_home, project, {"contextBudget": 800}) as client:
        await indexed(client)
        keys = open_doc(client, project / "internal/keys.py")  # open in the editor, so a buffer
        env = open_doc(client, project / ".env")
        before = len(await asyncio.to_thread(audit_records, auditor, appliance.username, "generation.requested"))
        # Completing inside an excluded file sends nothing at all.
        for uri in (keys, env):
            result = await client.text_document_inline_completion_async(inline_params(uri, 1, 0))
            assert isinstance(result, types.InlineCompletionList) and not result.items
        assert len(await asyncio.to_thread(audit_records, auditor, appliance.username, "generation.requested")) == before
        # Completing next to a call into it: its definition and its open buffer stay out of the context.
        cart = project / "src/shop/cart.py"
        uri = open_doc(client, cart)
        line = cart.read_text().split("\n").index("        secret_helper(self.items)")
        await client.text_document_inline_completion_async(inline_params(uri, line, 21))
        requested = await asyncio.to_thread(audit_records, auditor, appliance.username, "generation.requested")
        assert len(requested) == before + 1
        sent = {f["path"] for f in requested[0]["details"]["context_files"]}
        assert sent and not any(p.startswith("internal/") or p == ".env" for p in sent)
        prompt = sealed(auditor, requested[0])
        assert "secret_helper" in prompt  # the current file's own lines went
        assert SECRET_MARKER not in prompt and "never leaves the machine" not in prompt


async def test_expired_token_and_unreachable_appliance_say_so(appliance: RealAppliance, project: Path, tmp_path: Path) -> None:
    # A session token that the appliance then ends (as when it expires): sign-in worked, then 401s.
    login = ApplianceClient(appliance.url, ca_file=appliance.ca_file)
    token = (await asyncio.to_thread(login.login, appliance.username, appliance.password)).token
    home = LspHome(tmp_path / "expired")
    await asyncio.to_thread(connect_and_sign_in, home, appliance, token)
    login.token = token
    await asyncio.to_thread(login.logout)
    async with lsp(home, project) as client:
        uri = open_doc(client, project / "src/shop/cart.py")
        for _ in range(3):
            result = await client.text_document_inline_completion_async(inline_params(uri, 3, 0))
            assert isinstance(result, types.InlineCompletionList) and not result.items
        errors = [m for m in client.messages if m.type == types.MessageType.Error]
        # Said once, not once per keystroke, with what to do.
        assert len(errors) == 1 and "expired or was revoked" in errors[0].message and "enclave.signIn" in errors[0].message
        # Signing in again from the editor (a token) brings completions back.
        signed = await command(client, "enclave.signIn", {"token": appliance.token})
        assert signed["username"] == appliance.username
        assert home.secrets() and appliance.token in home.secrets().values()

    # Nothing listens where the profile points.
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    dead = f"https://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()
    away = LspHome(tmp_path / "away")
    store = ProfileStore(away.path / "config" / "enclave-desktop")
    store.save(Profile(dead, appliance.fingerprint), appliance.ca_file.read_bytes())
    (away.keyring_file).write_text(json.dumps({f"enclave-desktop\n{dead}": appliance.token}))
    async with lsp(away, project) as client:
        uri = open_doc(client, project / "src/shop/cart.py")
        result = await client.text_document_inline_completion_async(inline_params(uri, 3, 0))
        assert isinstance(result, types.InlineCompletionList) and not result.items
        errors = [m.message for m in client.messages if m.type == types.MessageType.Error]
        assert len(errors) == 1 and "cannot reach the appliance" in errors[0]


async def test_commands_status_explain_edit(appliance: RealAppliance, project: Path, signed_in_home: LspHome, tmp_path: Path) -> None:
    async with lsp(signed_in_home, project) as client:
        await indexed(client)
        cart = project / "src/shop/cart.py"
        uri = open_doc(client, cart)
        rng = {"start": {"line": 11, "character": 0}, "end": {"line": 13, "character": 0}}
        edit = await command(client, "enclave.editSelection", {"uri": uri, "range": rng, "instruction": "add a docstring", "maxTokens": 24})
        [change] = edit.changes[uri] if hasattr(edit, "changes") else edit["changes"][uri]
        change_range = change["range"] if isinstance(change, dict) else change.range
        assert json.loads(json.dumps(change_range, default=lambda o: o.__dict__)) in (rng,) or change_range == rng
        explained = await command(client, "enclave.explainSelection", {"uri": uri, "range": rng, "maxTokens": 16})
        assert isinstance(explained["explanation"], str)
        assert any(m.type == types.MessageType.Info for m in client.messages)
        # Bad arguments: one line, no traceback.
        with pytest.raises(Exception, match="needs the argument 'instruction'") as err:
            await command(client, "enclave.editSelection", {"uri": uri, "range": rng})
        assert "Traceback" not in str(err.value)

    # Not signed in yet: status says so; sign in with the API token through the command.
    fresh = LspHome(tmp_path / "fresh")
    done = await asyncio.to_thread(
        __import__("tests.helpers.lsp_session", fromlist=["lsp_command"]).lsp_command,
        fresh, "connect", appliance.url, str(appliance.ca_file), "--fingerprint", appliance.fingerprint,
    )
    assert done.returncode == 0, done.stderr
    async with lsp(fresh, project) as client:
        status = await command(client, "enclave.status")
        assert status["signedIn"] is False and "sign" in status["problem"].lower()
        await command(client, "enclave.signIn", {"token": appliance.token})
        status = await command(client, "enclave.status")
        assert status["signedIn"] is True and status["model"]
        await command(client, "enclave.signOut")
        assert fresh.secrets() == {}
