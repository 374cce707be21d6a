"""Grammar constraints on what a sequence may generate (structured output, required tool calls).

A :class:`Constraint` is a grammar in llguidance's format, built from what the API was asked for:

    Constraint.json_object()                 any JSON object
    Constraint.json_schema(schema, strict)   JSON valid against ``schema``
    Constraint.tool_call(tools, name)        well-formed DSML calls of offered tools (or of the named one)
                                             whose arguments validate against their parameters schema
                                             (grammar in appliance.engine.tool_grammar)

The sampler keeps one matcher per constrained sequence: each step it computes the sequence's token
mask (batched with unconstrained rows, which are left alone), advances the matcher on the accepted
token, and allows EOS only where the grammar accepts.

llguidance rather than xgrammar (both measured on this CPU with the demo tokenizer, see
``bench/constrained.py``): it needs only numpy (xgrammar pulls torch and triton into the runtime),
and it computes masks lazily per step without an up-front vocabulary compile.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import llguidance
import numpy as np
import numpy.typing as npt

from appliance.engine.tokenizer import Tokenizer
from appliance.engine.tool_grammar import tool_call_lark
from shared.errors import InputError

if TYPE_CHECKING:
    from llguidance._lib import JsonCompileOptions

__all__ = ["Constraint", "GrammarTokenizer", "apply_masks"]


@dataclass(frozen=True)
class Constraint:
    """A grammar (llguidance's JSON grammar text) and a short description for error messages."""

    grammar: str
    description: str

    @classmethod
    def json_object(cls) -> Constraint:
        return cls.json_schema({"type": "object"}, strict=False, description="a JSON object")

    @classmethod
    def json_schema(
        cls, schema: Mapping[str, Any], *, strict: bool = True, description: str = "JSON matching the schema"
    ) -> Constraint:
        """``strict`` forbids properties the schema does not list (OpenAI's strict mode)."""
        # Compact JSON (no free whitespace): a random-weight model would otherwise pad forever.
        overrides: JsonCompileOptions = {"whitespace_flexible": False}
        body: Any = _closed(schema) if strict else dict(schema)
        try:
            grammar = llguidance.LLMatcher.grammar_from_json_schema(json.dumps(body), overrides=overrides)
        except (ValueError, TypeError) as exc:
            raise InputError(f"the JSON schema cannot be used: {exc}") from None
        problem = llguidance.LLMatcher.validate_grammar(grammar)
        if problem:
            raise InputError(f"the JSON schema cannot be used: {problem}")
        return cls(grammar, description)

    @classmethod
    def tool_call(
        cls, tools: Sequence[Mapping[str, Any]], name: str | None = None, *, parallel: bool = True
    ) -> Constraint:
        """One or more calls (exactly one unless ``parallel``) of ``tools``, or of ``name`` only."""
        lark = tool_call_lark(tools, _closed, name=name, parallel=parallel)
        try:
            grammar = llguidance.LLMatcher.grammar_from_lark(lark)
        except (ValueError, TypeError) as exc:
            raise InputError(f"the tool schemas cannot be used: {exc}") from None
        problem = llguidance.LLMatcher.validate_grammar(grammar)
        if problem:
            raise InputError(f"the tool schemas cannot be used: {problem}")
        return cls(grammar, f"a call of {name}" if name else "a tool call")


def _closed(schema: Any) -> Any:
    """``schema`` with ``additionalProperties: false`` on every object that does not say otherwise
    (strict mode: only the listed properties)."""
    if isinstance(schema, list):
        return [_closed(item) for item in schema]
    if not isinstance(schema, Mapping):
        return schema
    out = {
        key: (
            {name: _closed(sub) for name, sub in value.items()}  # a name -> schema map, not a schema
            if key in ("properties", "patternProperties", "$defs", "definitions")
            and isinstance(value, Mapping)
            else _closed(value)
        )
        for key, value in schema.items()
    }
    if out.get("type") == "object" or "properties" in out:
        out.setdefault("additionalProperties", False)
    return out


class GrammarTokenizer:
    """llguidance's view of one engine tokenizer (built once per engine: it indexes the vocabulary)."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        eos = tokenizer.eos_id
        self._inner = llguidance.LLTokenizer(tokenizer.to_json(), eos_token=eos)
        self.vocab_size = int(self._inner.vocab_size)

    def matcher(self, constraint: Constraint) -> llguidance.LLMatcher:
        matcher = llguidance.LLMatcher(self._inner, constraint.grammar, log_level=0)
        if matcher.is_error():
            raise InputError(f"cannot constrain to {constraint.description}: {matcher.get_error()}")
        return matcher


def apply_masks(
    logits: npt.NDArray[np.float32], matchers: Sequence[llguidance.LLMatcher | None], vocab_size: int
) -> npt.NDArray[np.float32]:
    """``logits`` with each constrained row's disallowed tokens at -inf (EOS is allowed only where the
    grammar accepts); unconstrained rows (None) untouched. A new array only if some row is constrained."""
    rows = [i for i, m in enumerate(matchers) if m is not None]
    if not rows:
        return logits
    out = np.array(logits, dtype=np.float32, copy=True)
    words = (vocab_size + 31) // 32
    bitmask = np.empty((len(rows), words), dtype=np.int32)
    for k, i in enumerate(rows):
        matcher = matchers[i]
        assert matcher is not None
        matcher.unsafe_compute_mask_ptr(bitmask[k].ctypes.data, bitmask[k].nbytes)
    allowed = np.unpackbits(bitmask.view(np.uint8), axis=1, bitorder="little").astype(bool)
    width = min(out.shape[1], vocab_size)
    block = out[rows]
    block[:, :width][~allowed[:, :width]] = -np.inf
    block[:, width:] = -np.inf  # ids the grammar's tokenizer does not know (padded vocabularies)
    out[rows] = block
    return out
