"""The grammar of a required tool call: DSML markup (:mod:`appliance.engine.dsml`) in llguidance's
Lark dialect, the arguments checked against each tool's JSON schema by llguidance's own ``%json``.

    start     "\\n\\n<｜DSML｜tool_calls>\\n" invoke ("\\n" invoke)* "\\n</｜DSML｜tool_calls>"   (one invoke
              without parallel calls)
    invoke    one alternative per tool: its header, then each parameter followed by "\\n", in the
              order the schema lists them; required ones always, optional ones maybe; "</｜DSML｜invoke>"
    value     string="false" + compact JSON valid against the property's schema; for a plain string
              (no length, pattern, enum...) also string="true" + raw text up to the closing tag, the
              form the model was trained to write

Objects inside values are closed (only the properties they list, as OpenAI's strict mode), which
narrows what validates but never admits what does not. A raw string's only bound is max_tokens; a
schema that bounds a string gets JSON instead, so the bound holds even on random weights.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from appliance.engine.dsml import BLOCK_CLOSE, BLOCK_OPEN, DSML, INVOKE_CLOSE, PARAM_CLOSE
from shared.errors import InputError

__all__ = ["tool_call_lark"]

# A plain string: nothing but these keys, so any text is a valid value.
_PLAIN_STRING_KEYS = frozenset({"type", "description", "title", "default", "examples", "$comment"})
_SAFE_NAME = re.compile(r'^[^"<>\r\n]+$')
_COMPACT = {"whitespace_flexible": False}  # a random-weight model would otherwise pad forever


def _lit(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def tool_call_lark(
    tools: Sequence[Mapping[str, Any]], closed: Any, *, name: str | None = None, parallel: bool = True
) -> str:
    """Lark text for a call of one of ``tools`` (OpenAI tool or function definitions), or of
    ``name`` only. ``closed`` maps a schema to its strict form (``constrain._closed``)."""
    functions = [dict(t.get("function", t)) for t in tools]
    if name is not None:
        functions = [f for f in functions if f.get("name") == name]
        if not functions:
            raise InputError(f"tool_choice names {name!r}, which is not among the tools")
    if not functions:
        raise InputError("a required tool call needs at least one tool")
    rules: list[str] = []
    invokes: list[str] = []
    for k, function in enumerate(functions):
        invokes.append(f"invoke_{k}")
        rules += _invoke_rules(k, function, closed)
    more = ' ("\\n" invoke)*' if parallel else ""
    head = [
        f"start: {_lit(chr(10) * 2 + BLOCK_OPEN + chr(10))} invoke{more} {_lit(chr(10) + BLOCK_CLOSE)}",
        "invoke: " + " | ".join(invokes),
        f"raw[lazy]: /(?s:.*){re.escape(PARAM_CLOSE).replace('/', chr(92) + '/')}/",
    ]
    return "\n".join(head + rules) + "\n"


def _invoke_rules(k: int, function: Mapping[str, Any], closed: Any) -> list[str]:
    fname = function.get("name")
    if not isinstance(fname, str) or not _SAFE_NAME.match(fname):
        raise InputError(f"tool name {fname!r} cannot be written in a call")
    schema = function.get("parameters") or {}
    if not isinstance(schema, Mapping):
        raise InputError(f"the parameters of tool {fname!r} must be a JSON schema object")
    properties = schema.get("properties") or {}
    required = set(schema.get("required") or ())
    unknown = required - set(properties)
    if unknown:
        raise InputError(f"tool {fname!r} requires {sorted(unknown)[0]!r}, which its schema does not define")
    defs = {key: schema[key] for key in ("$defs", "definitions") if key in schema}
    items: list[str] = []
    rules: list[str] = []
    for j, (key, sub) in enumerate(properties.items()):
        if not _SAFE_NAME.match(key):
            raise InputError(f"parameter {key!r} of tool {fname!r} cannot be written in a call")
        rule = f"p_{k}_{j}"
        rules.append(f"{rule}: {_param_body(key, sub, defs, closed)}")
        items.append(f'({rule} "\\n")' + ("" if key in required else "?"))
    header = _lit(f'<{DSML}invoke name="{fname}">\n')
    body = " ".join(items)
    if not required:
        # No parameter at all renders as header + "\n" + "" + "\n" (the encoder's join).
        body = f'("\\n" | {body})' if body else '"\\n"'
    rules.insert(0, f"invoke_{k}: {header} {body} {_lit(INVOKE_CLOSE)}")
    return rules


def _param_body(key: str, schema: Any, defs: Mapping[str, Any], closed: Any) -> str:
    if not isinstance(schema, Mapping):
        schema = {} if schema is True else {"not": {}}
    embedded = {**defs, **closed(dict(schema)), "x-guidance": _COMPACT}
    head = f'<{DSML}parameter name="{key}" string="'
    as_json = f'"false\\">" %json {json.dumps(embedded, ensure_ascii=False)} {_lit(PARAM_CLOSE)}'
    plain = schema.get("type") == "string" and set(schema) <= _PLAIN_STRING_KEYS
    if plain:
        return f'{_lit(head)} ("true\\">" raw | {as_json})'
    return f"{_lit(head)} {as_json}"
