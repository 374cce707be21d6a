"""``enclave-lsp``: Enclave's completion, explain and edit in any editor that speaks LSP (stdio).

Built with pygls; nothing here imports Qt. Features:

* ``textDocument/inlineCompletion`` (LSP 3.18: VS Code, Neovim 0.12+, Zed) and
  ``textDocument/completion`` (one item, for editors without inline completion), both served by
  :class:`desktop.lsp.completion.Completer`: debounced, the newest request wins, ``$/cancelRequest``
  closes the appliance stream. A request with a ``workDoneToken`` gets ``$/progress`` begin once the
  appliance has admitted it, and end when it is over.
* ``workspace/executeCommand``: see :mod:`desktop.lsp.commands`.
* ``window/showMessage`` when the appliance cannot be reached, its certificate is wrong, or the
  sign-in expired — once per problem, not once per keystroke.

The workspace's first folder is the project (index, scan rules, the appliance's exclusions).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from lsprotocol import types
from pygls import uris
from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams
from pygls.lsp.server import LanguageServer
from pygls.workspace import TextDocument

from desktop.client.credentials import CredentialStore
from desktop.client.profile import ProfileStore
from desktop.dirs import Dirs
from desktop.lsp.commands import (
    COMMANDS,
    Selection,
    ask_about_selection,
    edit_for,
    object_argument,
    text_argument,
)
from desktop.lsp.completion import Completer, CompletionAsk
from desktop.lsp.connection import Connection, SessionInfo
from desktop.lsp.project import Project
from desktop.lsp.settings import Settings
from shared.errors import AuthError, EnclaveError, InputError
from shared.version import VERSION

__all__ = ["EnclaveServer", "build_server"]

_TRIGGERS = [".", "(", "[", ",", "=", ":", " "]


class _RequestFailed(JsonRpcException):
    """LSP's RequestFailed: the request was valid, the appliance said no. (pygls's JsonRpcServerError
    takes only -32099..-32000 and raised ValueError for this code, so a refusal became a traceback.)"""

    CODE = -32803


class EnclaveServer(LanguageServer):
    def __init__(self, dirs: Dirs, *, credentials: CredentialStore | None = None) -> None:
        super().__init__("enclave-lsp", VERSION)
        self.dirs = dirs
        self.settings = Settings()
        self.connection = Connection(
            ProfileStore(dirs.config), credentials or CredentialStore(), notify=self.tell,
        )
        self.project = Project(None, dirs.cache)
        self.completer = Completer(self.connection, self.project, lambda: self.settings)

    # -- talking to the user --------------------------------------------------------------------------

    def tell(self, message: str, error: bool = False) -> None:
        kind = types.MessageType.Error if error else types.MessageType.Info
        self.window_show_message(types.ShowMessageParams(type=kind, message=message))

    def log(self, message: str) -> None:
        self.window_log_message(types.LogMessageParams(type=types.MessageType.Log, message=message))

    def configure(self, options: Any) -> None:
        try:
            self.settings = self.settings.updated(options)
        except InputError as exc:
            self.tell(f"{exc}; keeping the previous settings", error=True)
        self.connection.model_preference = self.settings.model
        self.connection.account_preference = self.settings.account

    # -- documents ----------------------------------------------------------------------------------

    def document(self, uri: str) -> tuple[TextDocument, Path]:
        doc = self.workspace.get_text_document(uri)
        path = uris.to_fs_path(uri)
        if path is None:
            raise InputError(f"not a file: {uri}")
        return doc, Path(path)

    def buffers(self, exclude: str) -> dict[Path, str]:
        """The other open documents' text, most recently opened last."""
        out: dict[Path, str] = {}
        for uri, doc in self.workspace.text_documents.items():
            path = uris.to_fs_path(uri)
            if uri != exclude and path is not None:
                out[Path(path)] = doc.source
        return out

    def ask_at(self, uri: str, position: types.Position) -> CompletionAsk:
        doc, path = self.document(uri)
        text = doc.source
        return CompletionAsk(path, text, doc.offset_at_position(position), position.line + 1, self.buffers(uri))

    # -- start-up -----------------------------------------------------------------------------------

    def open_project(self, root: Path | None) -> None:
        self.project = Project(root, self.dirs.cache)
        self.completer = Completer(self.connection, self.project, lambda: self.settings)

    async def start_project(self) -> None:
        """Learn the appliance's exclusions (when signed in), then index the project."""
        try:
            session = await self.connection.session()
            self.project.set_policy(session.path_exclusions)
            self.log(f"signed in to {session.url} as {session.username}; model {session.model}")
        except EnclaveError as exc:
            self.connection.problem(exc)
        self.project.refresh()

    @contextlib.contextmanager
    def generating(self, token: types.ProgressToken | None) -> Iterator[Callable[[], None]]:
        """A callback that begins ``token``'s progress, and its end when the block ends."""
        begun = False

        def begin() -> None:
            nonlocal begun
            if token is not None and not begun:
                begun = True
                self.work_done_progress.begin(token, types.WorkDoneProgressBegin(title="Enclave", message="generating"))

        try:
            yield begin
        finally:
            if begun and token is not None:
                self.work_done_progress.end(token, types.WorkDoneProgressEnd())

    async def suggestion(self, uri: str, position: types.Position, token: types.ProgressToken | None) -> str:
        try:
            ask = self.ask_at(uri, position)
            with self.generating(token) as begin:
                return await self.completer.complete(ask, started=begin)
        except EnclaveError as exc:
            self.connection.problem(exc)
            return ""


def _selection(server: EnclaveServer, args: dict[str, Any], command: str) -> Selection:
    uri = text_argument(args, "uri", command)
    try:
        rng = server.protocol._converter.structure(args.get("range"), types.Range)
    except Exception:
        raise InputError(f"{command} needs 'range' ({{start: {{line, character}}, end: ...}})") from None
    doc, path = server.document(uri)
    selected = doc.text_in_client_range(rng) if hasattr(doc, "text_in_client_range") else ""
    return Selection(uri, path, doc.source, rng, selected, rng.start.line + 1, rng.end.line + 1)


def _answered(server: EnclaveServer, name: str) -> Callable[[Callable[..., Awaitable[Any]]], Any]:
    """Register a command whose failures reach the user as one line (shown, and as the JSON-RPC
    error's message), never as a traceback."""

    def register(fn: Callable[..., Awaitable[Any]]) -> Any:
        @functools.wraps(fn)
        async def run(ls: EnclaveServer, *args: Any) -> Any:
            try:
                return await fn(ls, *args)
            except InputError as exc:
                ls.tell(f"Enclave: {exc}", error=True)
                raise JsonRpcInvalidParams(str(exc)) from None
            except EnclaveError as exc:
                message = ls.connection.problem(exc)
                raise _RequestFailed(message) from None

        return server.command(name)(run)

    return register


async def _sign_in(ls: EnclaveServer, a: dict[str, Any]) -> SessionInfo:
    if "token" in a:
        return await ls.connection.sign_in_token(text_argument(a, "token", "enclave.signIn"))
    if "username" in a:
        return await ls.connection.sign_in_password(
            text_argument(a, "username", "enclave.signIn"), text_argument(a, "password", "enclave.signIn"),
            str(a.get("account") or ""),
        )
    raise InputError(
        "enclave.signIn needs {\"token\": \"encl_...\"} or {\"username\", \"password\"[, \"account\"]}"
    )


def build_server(dirs: Dirs | None = None, *, credentials: CredentialStore | None = None) -> EnclaveServer:
    server = EnclaveServer(dirs or Dirs.for_user(), credentials=credentials)

    @server.feature(types.INITIALIZE)
    def initialize(ls: EnclaveServer, params: types.InitializeParams) -> None:
        ls.configure(params.initialization_options)
        root: str | None = None
        if params.workspace_folders:
            root = uris.to_fs_path(params.workspace_folders[0].uri)
        elif params.root_uri:
            root = uris.to_fs_path(params.root_uri)
        elif params.root_path:
            root = params.root_path
        ls.open_project(Path(root) if root else None)

    @server.feature(types.INITIALIZED)
    async def initialized(ls: EnclaveServer, params: types.InitializedParams) -> None:
        await ls.start_project()

    @server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    def did_change_configuration(ls: EnclaveServer, params: types.DidChangeConfigurationParams) -> None:
        ls.configure(params.settings)

    @server.feature(types.TEXT_DOCUMENT_DID_SAVE)
    def did_save(ls: EnclaveServer, params: types.DidSaveTextDocumentParams) -> None:
        ls.project.refresh()

    @server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
    async def inline_completion(ls: EnclaveServer, params: types.InlineCompletionParams) -> types.InlineCompletionList:
        text = await ls.suggestion(params.text_document.uri, params.position, params.work_done_token)
        pos = params.position
        items = [types.InlineCompletionItem(insert_text=text, range=types.Range(pos, pos))] if text else []
        return types.InlineCompletionList(items=items)

    @server.feature(types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions(trigger_characters=_TRIGGERS))
    async def completion(ls: EnclaveServer, params: types.CompletionParams) -> types.CompletionList:
        text = await ls.suggestion(params.text_document.uri, params.position, params.work_done_token)
        if not text:
            return types.CompletionList(is_incomplete=True, items=[])
        pos = params.position
        first = text.strip().split("\n", 1)[0]
        item = types.CompletionItem(
            label=first[:60] or text[:60],
            kind=types.CompletionItemKind.Text,
            detail="Enclave",
            # An empty range at the cursor: inserted as is, and no word before the cursor filters it out.
            text_edit=types.TextEdit(range=types.Range(pos, pos), new_text=text),
            filter_text="",
            sort_text="0",
        )
        # Incomplete: the client asks again as the user types, instead of filtering a stale answer.
        return types.CompletionList(is_incomplete=True, items=[item])

    @_answered(server, "enclave.connect")
    async def connect(ls: EnclaveServer, *args: Any) -> dict[str, Any]:
        a = object_argument(args, "enclave.connect")
        profile = await ls.connection.connect(
            text_argument(a, "url", "enclave.connect"), text_argument(a, "caFile", "enclave.connect"),
            text_argument(a, "fingerprint", "enclave.connect"),
        )
        ls.tell(f"Enclave: pinned the CA {profile.ca_fingerprint} for {profile.url}; now sign in")
        return {"url": profile.url, "fingerprint": profile.ca_fingerprint}

    @_answered(server, "enclave.signIn")
    async def sign_in(ls: EnclaveServer, *args: Any) -> dict[str, Any]:
        a = object_argument(args, "enclave.signIn")
        try:
            info = await _sign_in(ls, a)
        except AuthError as exc:
            # A refused sign-in is not an expired one (what a 401 means everywhere else).
            message = f"Enclave: sign-in refused: {exc}"
            ls.tell(message, error=True)
            raise _RequestFailed(message) from None
        if ls.project.set_policy(info.path_exclusions):
            ls.project.refresh()
        ls.tell(f"Enclave: signed in to {info.url} as {info.username}")
        return {"username": info.username, "model": info.model}

    @_answered(server, "enclave.signOut")
    async def sign_out(ls: EnclaveServer, *args: Any) -> None:
        ls.completer.cancel_running()
        await ls.connection.sign_out()
        ls.tell("Enclave: signed out; the token was removed from the keyring")

    @_answered(server, "enclave.status")
    async def status(ls: EnclaveServer, *args: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"version": VERSION, "project": str(ls.project.root or ""), "signedIn": False}
        if ls.project.index is not None and ls.project.ready.is_set():
            out["indexedFiles"] = await asyncio.to_thread(ls.project.index.file_count)
        try:
            ls.connection.forget_session()
            info = await ls.connection.session()
        except EnclaveError as exc:
            out["problem"] = ls.connection.problem(exc)
            return out
        out.update(
            signedIn=True, url=info.url, username=info.username, role=info.role, model=info.model,
            contextLength=info.context_length, capture=info.capture_mode, expiresAt=info.expires_at.isoformat(),
            pathExclusions=list(info.path_exclusions),
        )
        return out

    @_answered(server, "enclave.explainSelection")
    async def explain(ls: EnclaveServer, *args: Any) -> dict[str, str]:
        a = object_argument(args, "enclave.explainSelection")
        sel = _selection(ls, a, "enclave.explainSelection")
        question = str(a.get("question") or "Explain what the selected code does.")
        answer = await ask_about_selection(ls.connection, ls.project, sel, question, ls.buffers(sel.uri), max_tokens=int(a.get("maxTokens", 512)))
        ls.tell(answer.strip() or "Enclave: the appliance returned no text")
        return {"explanation": answer}

    @_answered(server, "enclave.editSelection")
    async def edit(ls: EnclaveServer, *args: Any) -> types.WorkspaceEdit:
        a = object_argument(args, "enclave.editSelection")
        sel = _selection(ls, a, "enclave.editSelection")
        instruction = text_argument(a, "instruction", "enclave.editSelection")
        answer = await ask_about_selection(ls.connection, ls.project, sel, instruction, ls.buffers(sel.uri), max_tokens=int(a.get("maxTokens", 512)))
        change = edit_for(sel, answer)
        if a.get("apply"):
            await ls.workspace_apply_edit_async(types.ApplyWorkspaceEditParams(edit=change, label="Enclave edit"))
        return change

    @server.feature(types.SHUTDOWN)
    async def shutdown(ls: EnclaveServer, params: None) -> None:
        ls.completer.cancel_running()
        await ls.connection.close()
        await ls.project.close()

    assert set(COMMANDS) <= set(server.protocol.fm.commands), "every documented command is registered"
    return server
