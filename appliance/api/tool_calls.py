"""Tool calls on ``/v1/chat/completions``: what a request's tools mean for the prompt, the decoding
and the answer.

    plan_tools(body)          tool_choice -> ToolPlan (None: no tools in play)
      auto                    tools in the prompt; the output is parsed (appliance.engine.dsml)
      required / named        tools in the prompt; decoding constrained to a valid call
                              (Constraint.tool_call), so even random weights produce one
      none                    tools left out of the prompt, the output is plain content
    chat_messages(body)       messages -> engine turns (assistant tool_calls, tool results)
    ToolStream                generated text -> OpenAI deltas: content, then per call a first delta
                              with index/id/type/name and ``arguments`` deltas; finish "tool_calls"

A call goes out once its DSML ``invoke`` has closed and parsed, so a malformed call, or one of a
tool that was not offered, is returned as content rather than as half a call. The decision to hold a
call until it is whole is what makes "an invalid call is content" true in a stream too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from appliance.engine.constrain import Constraint
from appliance.engine.dsml import CallEvent, DsmlParser, ParsedCall, TextEvent, call_arguments
from appliance.engine.types import ChatMessage, ToolCall
from shared.schemas import ChatCompletionRequest, NamedToolChoice

__all__ = ["ToolPlan", "ToolStream", "chat_messages", "plan_tools", "tool_calls_out"]


@dataclass(frozen=True)
class ToolPlan:
    tools: list[dict[str, Any]]  # OpenAI tool definitions, as the prompt renders them
    required: bool
    name: str | None  # the function tool_choice names
    parallel: bool

    def constraint(self) -> Constraint | None:
        """The grammar for required and named choices (InputError if a schema cannot be used)."""
        if not self.required:
            return None
        return Constraint.tool_call(self.tools, self.name, parallel=self.parallel)

    def parser(self) -> DsmlParser:
        names = [t["function"]["name"] for t in self.tools]
        return DsmlParser(names, max_calls=None if self.parallel else 1)


def plan_tools(body: ChatCompletionRequest) -> ToolPlan | None:
    """What the request's tools ask for (their consistency is checked by the schema)."""
    choice = body.tool_choice or "auto"
    if not body.tools or choice == "none":
        return None
    tools = [t.model_dump(exclude_unset=True) for t in body.tools]
    named = choice.function.name if isinstance(choice, NamedToolChoice) else None
    parallel = body.parallel_tool_calls is not False
    return ToolPlan(tools, required=choice == "required" or named is not None, name=named, parallel=parallel)


def chat_messages(body: ChatCompletionRequest) -> list[ChatMessage]:
    """The request's turns as the engine's (``developer`` is OpenAI's newer ``system``)."""
    out: list[ChatMessage] = []
    for m in body.messages:
        if m.role == "tool":
            # The encoder joins a tool result's text parts with a blank line.
            parts = m.content if isinstance(m.content, list) else None
            text = "\n\n".join(p.text for p in parts) if parts is not None else m.text()
            out.append(ChatMessage("tool", text, tool_call_id=m.tool_call_id))
            continue
        calls = tuple(ToolCall(c.id, c.function.name, c.function.arguments) for c in m.tool_calls or ())
        for call in calls:
            call_arguments(call)  # the prompt renders them as parameters: a JSON object or a 400
        role = "system" if m.role == "developer" else m.role
        out.append(ChatMessage(role, m.text(), m.reasoning_content, tool_calls=calls))
    return out


def tool_calls_out(calls: Sequence[ParsedCall]) -> list[dict[str, Any]]:
    return [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
        for c in calls
    ]


@dataclass
class ToolStream:
    """One stream's generated text through the DSML parser, as chat-chunk ``delta`` objects."""

    parser: DsmlParser
    content: list[str] = field(default_factory=list)

    def feed(self, text: str) -> list[dict[str, Any]]:
        return self._deltas(self.parser.feed(text)) if text else []

    def finish(self) -> list[dict[str, Any]]:
        return self._deltas(self.parser.finish())

    def finish_reason(self, finish: str) -> str:
        return "tool_calls" if finish == "stop" and self.parser.calls else finish

    def _deltas(self, events: Sequence[TextEvent | CallEvent]) -> list[dict[str, Any]]:
        deltas: list[dict[str, Any]] = []
        for event in events:
            if isinstance(event, TextEvent):
                self.content.append(event.text)
                deltas.append({"content": event.text})
                continue
            call = event.call
            deltas.append(
                {
                    "tool_calls": [
                        {
                            "index": call.index,
                            "id": call.id,
                            "type": "function",
                            "function": {"name": call.name, "arguments": ""},
                        }
                    ]
                }
            )
            deltas += [
                {"tool_calls": [{"index": call.index, "function": {"arguments": piece}}]}
                for piece in call.pieces
            ]
        return deltas
