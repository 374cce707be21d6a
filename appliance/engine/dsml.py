"""DeepSeek V4's tool-call markup (DSML): tools and calls rendered into prompts, calls parsed back.

The strings are those of DeepSeek's own encoder (``encoding_dsv4.py``), character for character:

    tools block    system content + "\\n\\n" + TOOLS_TEMPLATE (each function's JSON on its own line)
    assistant      content + "\\n\\n<｜DSML｜tool_calls>\\n" + invokes joined by "\\n" + "\\n</｜DSML｜tool_calls>"
    invoke         <｜DSML｜invoke name="NAME">\\n + parameters joined by "\\n" + \\n</｜DSML｜invoke>
    parameter      <｜DSML｜parameter name="KEY" string="true">raw text</｜DSML｜parameter>       (a string)
                   <｜DSML｜parameter name="KEY" string="false">JSON</｜DSML｜parameter>         (anything else)
    tool result    <tool_result>content</tool_result>   (inside a user turn, see appliance.engine.prompt)

``｜DSML｜`` is ordinary text in V4's vocabulary (not a control token), so the markup is encoded as
text like the content around it.

:class:`DsmlParser` reads generated text incrementally. Text outside a ``tool_calls`` block is
content; a call is emitted once its ``invoke`` element has closed and parsed — so a malformed call,
or a call of a tool that was not offered, is still returned as content (never half a call). The
"\\n\\n" (any whitespace) before a block is the block's separator, not content.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from appliance.engine.types import ToolCall
from shared.errors import InputError

__all__ = [
    "DSML",
    "CallEvent",
    "DsmlParser",
    "ParsedCall",
    "TextEvent",
    "call_arguments",
    "new_call_id",
    "parse_completion",
    "render_tool_calls",
    "render_tool_result",
    "render_tools",
    "tools_parts",
]

DSML = "｜DSML｜"
BLOCK_OPEN = f"<{DSML}tool_calls>"
BLOCK_CLOSE = f"</{DSML}tool_calls>"
INVOKE_OPEN = f"<{DSML}invoke"
INVOKE_CLOSE = f"</{DSML}invoke>"
PARAM_OPEN = f"<{DSML}parameter"
PARAM_CLOSE = f"</{DSML}parameter>"
TOOL_RESULT_OPEN = "<tool_result>"
TOOL_RESULT_CLOSE = "</tool_result>"

_THINK_START, _THINK_END = "<think>", "</think>"

TOOLS_TEMPLATE = """## Tools

You have access to a set of tools to help answer the user's question. You can invoke tools by writing a \
"<{dsml}tool_calls>" block like the following:

<{dsml}tool_calls>
<{dsml}invoke name="$TOOL_NAME">
<{dsml}parameter name="$PARAMETER_NAME" string="true|false">$PARAMETER_VALUE</{dsml}parameter>
...
</{dsml}invoke>
<{dsml}invoke name="$TOOL_NAME2">
...
</{dsml}invoke>
</{dsml}tool_calls>

String parameters should be specified as is and set `string="true"`. For all other types (numbers, \
booleans, arrays, objects), pass the value in JSON format and set `string="false"`.

If thinking_mode is enabled (triggered by {think_start}), you MUST output your complete reasoning inside \
{think_start}...{think_end} BEFORE any tool calls or final response.

Otherwise, output directly after {think_end} with tool calls or final response.

### Available Tool Schemas

{schemas}

You MUST strictly follow the above defined tool name and parameter schemas to invoke tool calls.
"""


def _to_json(value: Any) -> str:
    # The encoder's to_json: json.dumps with its default separators, non-ASCII kept as is.
    return json.dumps(value, ensure_ascii=False)


def render_tools(functions: Sequence[Mapping[str, Any]]) -> str:
    """The tools section for OpenAI function definitions (``tools[i].function``), in order."""
    return "".join(text for text, _ in tools_parts(functions))


def tools_parts(functions: Sequence[Mapping[str, Any]]) -> list[tuple[str, bool]]:
    """:func:`render_tools` as (text, is_control) pieces: the template's own ``<think>`` and
    ``</think>`` are control tokens (the encoder's prompt is tokenized with special tokens on), the
    schemas — the client's text — are not."""
    schemas = "\n".join(_to_json(dict(f)) for f in functions)
    parts: list[tuple[str, bool]] = []
    for piece in re.split(r"(\{think_start\}|\{think_end\})", TOOLS_TEMPLATE):
        if piece == "{think_start}":
            parts.append((_THINK_START, True))
        elif piece == "{think_end}":
            parts.append((_THINK_END, True))
        elif piece:
            parts.append((piece.format(dsml=DSML, schemas=schemas), False))
    return parts


def call_arguments(call: ToolCall) -> dict[str, Any]:
    """The arguments object of an earlier call (InputError if its JSON text is not an object)."""
    try:
        value = json.loads(call.arguments) if call.arguments.strip() else {}
    except ValueError as exc:
        raise InputError(f"the arguments of tool call {call.id!r} are not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InputError(f"the arguments of tool call {call.id!r} must be a JSON object")
    return value


def _render_invoke(call: ToolCall) -> str:
    params = [
        f'<{DSML}parameter name="{key}" string="{"true" if isinstance(value, str) else "false"}">'
        f"{value if isinstance(value, str) else _to_json(value)}{PARAM_CLOSE}"
        for key, value in call_arguments(call).items()
    ]
    return f'<{DSML}invoke name="{call.name}">\n' + "\n".join(params) + f"\n{INVOKE_CLOSE}"


def render_tool_calls(calls: Sequence[ToolCall]) -> str:
    """What follows an assistant turn's content when it made ``calls`` ("" for none)."""
    if not calls:
        return ""
    return f"\n\n{BLOCK_OPEN}\n" + "\n".join(_render_invoke(c) for c in calls) + f"\n{BLOCK_CLOSE}"


def render_tool_result(content: str) -> str:
    return f"{TOOL_RESULT_OPEN}{content}{TOOL_RESULT_CLOSE}"


# --- Parsing ---------------------------------------------------------------------------------------


def new_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


@dataclass(frozen=True)
class ParsedCall:
    """One complete, well-formed call. ``pieces`` concatenate to ``arguments`` (the JSON text of the
    arguments object): one piece per parameter, for streaming as OpenAI does."""

    index: int
    id: str
    name: str
    arguments: str
    pieces: tuple[str, ...]


@dataclass(frozen=True)
class TextEvent:
    text: str


@dataclass(frozen=True)
class CallEvent:
    call: ParsedCall


Event = TextEvent | CallEvent

_INVOKE_HEAD = re.compile(r'<｜DSML｜invoke\s+name="([^"<>\n]+)"\s*>')
_PARAM_HEAD = re.compile(r'<｜DSML｜parameter\s+name="([^"<>\n]+)"\s+string="(true|false)"\s*>')
_SPACE = re.compile(r"\s*")


class _Bad(Exception):
    """The markup at the cursor is not a well-formed call."""


def _strict_json(text: str) -> Any:
    def no_constant(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=no_constant)


def _could_begin(buffer: str, start: int, token: str) -> bool:
    """``buffer[start:]`` is a (possibly empty) proper prefix of ``token``: more text may complete it."""
    rest = buffer[start:]
    return len(rest) < len(token) and token.startswith(rest)


class DsmlParser:
    """Generated text in, :class:`TextEvent` / :class:`CallEvent` out, chunk by chunk.

    ``tools``: the names a call may use (None: any name). ``max_calls``: calls beyond it are
    returned as content (``parallel_tool_calls: false`` allows one)."""

    def __init__(
        self,
        tools: Iterable[str] | None = None,
        *,
        max_calls: int | None = None,
        call_id: Callable[[], str] = new_call_id,
    ) -> None:
        self._tools = None if tools is None else frozenset(tools)
        self._max_calls = max_calls
        self._call_id = call_id
        self._buf = ""
        self._in_block = False
        self._opener = ""  # the separator + block opener: content if the block is not all calls
        self._block_calls = 0
        self._as_text = False
        self.calls: list[ParsedCall] = []

    def feed(self, text: str) -> list[Event]:
        self._buf += text
        return self._drain(final=False)

    def finish(self) -> list[Event]:
        """The text ended: whatever is held back is content (an unfinished call too)."""
        events = self._drain(final=True)
        rest = self._buf
        self._buf = ""
        if self._in_block:
            # Only whitespace is left here (anything else went out as content in _drain).
            self._in_block = False
            rest = self._text(rest) if self._as_text or not self._block_calls else ""
        if rest:
            events.append(TextEvent(rest))
        return _merged(events)

    # --- states ---

    def _drain(self, *, final: bool) -> list[Event]:
        events: list[Event] = []
        while True:
            step = self._block_step(final) if self._in_block else self._text_step(final)
            if step is None:
                return _merged(events)
            events += step

    def _text_step(self, final: bool) -> list[Event] | None:
        buf = self._buf
        at = buf.find(BLOCK_OPEN)
        if at >= 0:
            content = buf[:at]
            stripped = content.rstrip()
            self._opener = content[len(stripped) :] + BLOCK_OPEN
            self._buf = buf[at + len(BLOCK_OPEN) :]
            self._in_block = True
            self._block_calls = 0
            self._as_text = False
            return [TextEvent(stripped)] if stripped else []
        if final:
            return None
        # Hold back what could still become a block opener, and the whitespace before it.
        hold = next(
            (k for k in range(min(len(buf), len(BLOCK_OPEN) - 1), 0, -1) if BLOCK_OPEN.startswith(buf[-k:])),
            0,
        )
        keep = len(buf) - hold
        keep = len(buf[:keep].rstrip())
        if keep == 0:
            return None
        self._buf = buf[keep:]
        return [TextEvent(buf[:keep])]

    def _block_step(self, final: bool) -> list[Event] | None:
        buf = self._buf
        i = _SPACE.match(buf).end()  # type: ignore[union-attr]
        if buf.startswith(BLOCK_CLOSE, i):
            end = i + len(BLOCK_CLOSE)
            self._buf = buf[end:]
            self._in_block = False
            return [TextEvent(self._text(buf[:end]))] if self._as_text else []
        if buf.startswith(INVOKE_OPEN, i):
            try:
                end, name, args = _scan_invoke(buf, i)
            except _Bad:
                return self._junk(buf, i, final)
            if end is None:
                return None if not final else self._junk(buf, i, final)
            self._buf = buf[end:]
            if (self._tools is not None and name not in self._tools) or (
                self._max_calls is not None and len(self.calls) >= self._max_calls
            ):
                return [TextEvent(self._text(buf[:end]))]
            return [CallEvent(self._add(name, args))]
        if i == len(buf) or (
            not final and (_could_begin(buf, i, BLOCK_CLOSE) or _could_begin(buf, i, INVOKE_OPEN))
        ):
            return None
        return self._junk(buf, i, final)

    def _junk(self, buf: str, i: int, final: bool) -> list[Event] | None:
        """Text in a block that is not a call: content, up to the next DSML tag. Before the text
        has ended, a tail that could begin a tag waits (so the result never depends on chunking)."""
        found = [p for p in (buf.find(f"<{DSML}", i + 1), buf.find(f"</{DSML}", i + 1)) if p >= 0]
        if found:
            cut = min(found)
        elif final:
            cut = len(buf)
        else:
            cut = len(buf) - _tag_prefix_len(buf)
            if cut <= i:
                return None
        self._buf = buf[cut:]
        return [TextEvent(self._text(buf[:cut]))]

    def _text(self, text: str) -> str:
        """Block markup that goes out as content: the block's opener comes first if nothing of the
        block went out yet, and from then on its whitespace and closer are content too."""
        if not self._as_text and self._block_calls == 0:
            text = self._opener + text
        self._as_text = True
        return text

    def _add(self, name: str, args: list[tuple[str, Any]]) -> ParsedCall:
        pieces = [
            ("{" if k == 0 else ", ") + f"{_to_json(key)}: {_to_json(value)}"
            for k, (key, value) in enumerate(args)
        ]
        pieces.append("}" if args else "{}")
        call = ParsedCall(len(self.calls), self._call_id(), name, "".join(pieces), tuple(pieces))
        self.calls.append(call)
        self._block_calls += 1
        return call


def _scan_invoke(buf: str, i: int) -> tuple[int | None, str, list[tuple[str, Any]]]:
    """Parse the invoke at ``buf[i]``: (end or None if it has not closed yet, name, arguments).
    Raises _Bad where the markup cannot become a well-formed invoke."""
    head = _INVOKE_HEAD.match(buf, i)
    if head is None:
        gt = buf.find(">", i)
        if gt < 0 and "\n" not in buf[i:] and len(buf) - i < 256:
            return None, "", []
        raise _Bad
    name = head.group(1)
    args: list[tuple[str, Any]] = []
    at = head.end()
    while True:
        at = _SPACE.match(buf, at).end()  # type: ignore[union-attr]
        if buf.startswith(INVOKE_CLOSE, at):
            return at + len(INVOKE_CLOSE), name, args
        if _could_begin(buf, at, INVOKE_CLOSE) or _could_begin(buf, at, PARAM_OPEN):
            return None, name, args
        if not buf.startswith(PARAM_OPEN, at):
            raise _Bad
        param = _PARAM_HEAD.match(buf, at)
        if param is None:
            gt = buf.find(">", at)
            if gt < 0 and "\n" not in buf[at:] and len(buf) - at < 512:
                return None, name, args
            raise _Bad
        close = buf.find(PARAM_CLOSE, param.end())
        if close < 0:
            return None, name, args
        key, is_string, raw = param.group(1), param.group(2) == "true", buf[param.end() : close]
        if any(key == k for k, _ in args):
            raise _Bad
        if is_string:
            value: Any = raw
        else:
            try:
                value = _strict_json(raw)
            except ValueError:
                raise _Bad from None
        args.append((key, value))
        at = close + len(PARAM_CLOSE)


def _tag_prefix_len(buf: str) -> int:
    """Length of the longest tail of ``buf`` that could begin a DSML tag."""
    for tag in (f"</{DSML}", f"<{DSML}"):
        for k in range(min(len(tag) - 1, len(buf)), 0, -1):
            if tag.startswith(buf[-k:]):
                return k
    return 0


def _merged(events: list[Event]) -> list[Event]:
    out: list[Event] = []
    for event in events:
        if isinstance(event, TextEvent):
            if not event.text:
                continue
            if out and isinstance(out[-1], TextEvent):
                out[-1] = TextEvent(out[-1].text + event.text)
                continue
        out.append(event)
    return out


def parse_completion(
    text: str, tools: Iterable[str] | None = None, *, max_calls: int | None = None
) -> tuple[str, list[ParsedCall]]:
    """A whole completion: (content, calls)."""
    parser = DsmlParser(tools, max_calls=max_calls)
    events = parser.feed(text) + parser.finish()
    content = "".join(e.text for e in events if isinstance(e, TextEvent))
    return content, parser.calls
