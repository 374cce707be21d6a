"""Request and response models of the appliance HTTP API, imported by the server and the desktop client.

The OpenAI-compatible part mirrors OpenAI's wire format closely enough that the ``openai`` package and
tools built on it work unchanged; an unknown or unsupported request field is refused
with a 400 naming it, never silently ignored; fields clients always send that change nothing here
(``user``, ``stream_options``, ``store``, zero penalties...) are accepted and say so in their
descriptions. Enclave adds one optional object,
``enclave``, that carries project metadata for the audit log (never file contents).

Generation requests validate their values here (ranges, ``n == 1``, well-formed digests) so that a bad
value is a 400 with a message naming the field, before anything reaches the engine.

One module per concern; import from this package, not from the modules:

    _base            base classes, size limits
    enclave          project metadata for the audit log
    logprobs         log-probabilities in chat and completions responses
    generation       fields chat, completions and FIM share; usage
    tools            tool definitions, tool choice, earlier tool calls
    response_format  structured output
    chat             /v1/chat/completions
    completions      /v1/completions, /v1/fim/completions
    models           /v1/models
    service          error bodies, health
    auth             sign-in, sign-in methods, /v1/auth/me
"""

from __future__ import annotations

from shared.schemas._base import MAX_LOGPROBS, MAX_N, MAX_PROMPTS, MAX_STOP_SEQUENCES, MAX_TEXT_CHARS
from shared.schemas.auth import AuthMethod, AuthMethods, LoginRequest, LoginResponse, Me, MePolicy
from shared.schemas.chat import (
    ChatChoice,
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatDelta,
    ChatFinish,
    ChatMessageIn,
    ChatMessageOut,
    TextPart,
)
from shared.schemas.completions import (
    Completion,
    CompletionChoice,
    CompletionChunk,
    CompletionRequest,
    FimCompletionRequest,
)
from shared.schemas.enclave import ContextFile, EnclaveMetadata
from shared.schemas.generation import OpenAIFinish, StreamOptions, Usage
from shared.schemas.logprobs import ChatLogprobs, ChatTokenLogprob, CompletionLogprobs, TopLogprob
from shared.schemas.models import ModelCapabilities, ModelCard, ModelList
from shared.schemas.response_format import JsonSchemaFormat, ResponseFormat
from shared.schemas.service import ErrorBody, ErrorResponse, HealthStatus
from shared.schemas.thinking import CompletionTokensDetails, ReasoningEffortIn, ThinkingOption
from shared.schemas.tools import (
    FunctionCallDelta,
    FunctionCallIn,
    FunctionCallOut,
    FunctionDef,
    NamedFunction,
    NamedToolChoice,
    ToolCallDelta,
    ToolCallIn,
    ToolCallOut,
    ToolDef,
)

__all__ = [
    "MAX_LOGPROBS",
    "MAX_N",
    "MAX_PROMPTS",
    "MAX_STOP_SEQUENCES",
    "MAX_TEXT_CHARS",
    "AuthMethod",
    "AuthMethods",
    "ChatChoice",
    "ChatChunkChoice",
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatCompletionRequest",
    "ChatDelta",
    "ChatFinish",
    "ChatLogprobs",
    "ChatMessageIn",
    "ChatMessageOut",
    "ChatTokenLogprob",
    "Completion",
    "CompletionChoice",
    "CompletionChunk",
    "CompletionLogprobs",
    "CompletionRequest",
    "CompletionTokensDetails",
    "ContextFile",
    "EnclaveMetadata",
    "ErrorBody",
    "ErrorResponse",
    "FimCompletionRequest",
    "FunctionCallDelta",
    "FunctionCallIn",
    "FunctionCallOut",
    "FunctionDef",
    "HealthStatus",
    "JsonSchemaFormat",
    "LoginRequest",
    "LoginResponse",
    "Me",
    "MePolicy",
    "ModelCapabilities",
    "ModelCard",
    "ModelList",
    "NamedFunction",
    "NamedToolChoice",
    "OpenAIFinish",
    "ReasoningEffortIn",
    "ResponseFormat",
    "StreamOptions",
    "TextPart",
    "ThinkingOption",
    "ToolCallDelta",
    "ToolCallIn",
    "ToolCallOut",
    "ToolDef",
    "TopLogprob",
    "Usage",
]
