"""The generation engine: continuous batching over ONNX Runtime (see docs/architecture.md).

LLMEngine     synchronous: add_request / step / abort / generate; ``LLMEngine.from_bundle(dir)``
AsyncEngine   the API's GenerationService over an LLMEngine driven by a background thread
PromptEncoder DeepSeek V4 chat and fill-in-the-middle prompts -> token ids
"""

from appliance.engine.engine import AsyncEngine, LLMEngine
from appliance.engine.prompt import PromptEncoder
from appliance.engine.types import ChatMessage, Delta, EngineStats, GenerationService, SamplingParams

__all__ = [
    "AsyncEngine",
    "ChatMessage",
    "Delta",
    "EngineStats",
    "GenerationService",
    "LLMEngine",
    "PromptEncoder",
    "SamplingParams",
]
