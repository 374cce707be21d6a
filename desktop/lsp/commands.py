"""``workspace/executeCommand``: connect, sign in/out, status, explain and edit a selection.

Arguments are one JSON object (``arguments: [{...}]``), as editors' command palettes and key
bindings pass them. Edit returns a ``WorkspaceEdit`` replacing the selection (and applies it with
``workspace/applyEdit`` when ``apply`` is true); explain returns the answer's text and shows it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lsprotocol import types

from desktop.client.prompts import build_chat_request
from desktop.lsp.connection import Connection
from desktop.lsp.project import Project
from desktop.project.edits import code_blocks
from shared.errors import InputError

__all__ = ["COMMANDS", "Selection", "ask_about_selection", "edit_for", "object_argument"]

COMMANDS = (
    "enclave.connect",
    "enclave.signIn",
    "enclave.signOut",
    "enclave.status",
    "enclave.explainSelection",
    "enclave.editSelection",
)
# Enough for a function and a little more: context assembly fills it highest priority first.
_ASK_CONTEXT_BUDGET = 1500


def object_argument(args: tuple[Any, ...], command: str) -> dict[str, Any]:
    if not args:
        return {}
    if len(args) != 1 or not isinstance(args[0], dict):
        raise InputError(f"{command} takes one JSON object as its argument")
    return dict(args[0])


def text_argument(args: Mapping[str, Any], key: str, command: str) -> str:
    value = args.get(key)
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{command} needs the argument {key!r}")
    return value


@dataclass(frozen=True)
class Selection:
    uri: str
    path: Path
    text: str  # the whole buffer
    range: types.Range
    selected: str
    start_line: int  # 1-based
    end_line: int


async def ask_about_selection(
    connection: Connection, project: Project, selection: Selection, question: str, buffers: dict[Path, str],
    *, max_tokens: int,
) -> str:
    """The appliance's answer to ``question`` about ``selection``, with project context."""
    if project.never_sent(selection.path):
        raise InputError(f"{selection.path.name} is excluded from what Enclave may send; nothing was sent")
    session = await connection.session()
    context = await project.context(
        selection.path, selection.text, selection.start_line, question, buffers, _ASK_CONTEXT_BUDGET, keep_current=True,
    )
    rel = project.relative(selection.path) or selection.path.name
    full = f"{question}\n\nThe selected code ({rel}, lines {selection.start_line}-{selection.end_line}):\n```\n{selection.selected}\n```"
    request = build_chat_request(session.model, full, context, project.id, max_tokens=max_tokens)
    client = await connection.client()
    parts: list[str] = []
    stream = client.stream_chat(request)
    async with contextlib.aclosing(stream):
        async for event in stream:
            parts.append(event.text)
    connection.ok()
    return "".join(parts)


def edit_for(selection: Selection, answer: str) -> types.WorkspaceEdit:
    """A WorkspaceEdit replacing the selection with the answer's first code block (the answer
    itself when it has none)."""
    blocks = code_blocks(answer)
    replacement = blocks[0] if blocks else answer.strip()
    if selection.selected.endswith("\n") and not replacement.endswith("\n"):
        replacement += "\n"
    return types.WorkspaceEdit(changes={selection.uri: [types.TextEdit(range=selection.range, new_text=replacement)]})
