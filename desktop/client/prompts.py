"""The requests a generation is asked with, from a question and its context: the desktop window
and the language server build them here, so the appliance sees (and audits) one shape from both.
"""

from __future__ import annotations

from desktop.project.context import Context
from desktop.project.fim import DEFAULT_FIM_BUDGET, fim_window
from shared.schemas import (
    ChatCompletionRequest,
    ChatMessageIn,
    CompletionRequest,
    ContextFile,
    EnclaveMetadata,
    ThinkingOption,
)

__all__ = ["SYSTEM_PROMPT", "build_chat_request", "build_fim_request", "metadata_for"]

SYSTEM_PROMPT = (
    "You are Enclave, a coding assistant working inside the user's project. Use the files below as "
    "context. When you propose a change to the selected code, answer with one fenced code block "
    "holding the full replacement for the selection."
)


def metadata_for(context: Context | None, project_id: str) -> EnclaveMetadata:
    """The ``enclave`` metadata: the project and the (path, sha256) of every file the context used."""
    files = context.files() if context is not None else []
    return EnclaveMetadata(
        project_id=project_id or None, context_files=[ContextFile(path=p, sha256=s) for p, s in files]
    )


def build_chat_request(
    model: str, question: str, context: Context, project_id: str, *, max_tokens: int = 512, thinking: bool = False
) -> ChatCompletionRequest:
    user = f"{context.render()}\n\nQuestion: {question}" if context.items else question
    return ChatCompletionRequest(
        thinking=ThinkingOption(type="enabled") if thinking else None,
        model=model,
        messages=[ChatMessageIn(role="system", content=SYSTEM_PROMPT), ChatMessageIn(role="user", content=user)],
        stream=True,
        max_tokens=max_tokens,
        temperature=0.2,
        enclave=metadata_for(context, project_id),
    )


def render_fim_context(context: Context, current_path: str | None) -> str:
    """Other files' lines ahead of the file being completed, each under a ``# path`` line — the
    repository-level layout DeepSeek's code models were trained on."""
    parts = [f"# {it.path}\n{it.text}\n" for it in context.items]
    if parts and current_path:
        parts.append(f"# {current_path}\n")
    return "".join(parts)


def build_fim_request(
    model: str,
    prefix: str,
    suffix: str,
    *,
    budget: int = DEFAULT_FIM_BUDGET,
    max_tokens: int = 48,
    context: Context | None = None,
    current_path: str | None = None,
    project_id: str = "",
    stop: list[str] | None = None,
) -> CompletionRequest:
    """A fill-in-the-middle request: the cursor's surroundings trimmed to ``budget`` tokens, after
    the project context (which must already fit its own budget)."""
    before, after = fim_window(prefix, suffix, budget=budget)
    header = render_fim_context(context, current_path) if context is not None and context.items else ""
    return CompletionRequest(
        model=model,
        prompt=header + before,
        suffix=after,
        stream=True,
        max_tokens=max_tokens,
        temperature=0.0,
        stop=stop,
        enclave=metadata_for(context, project_id) if context is not None or project_id else None,
    )
