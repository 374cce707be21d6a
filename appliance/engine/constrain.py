"""Grammar constraints on what a sequence may generate (structured output, required tool calls).

A :class:`Constraint` is a grammar in llguidance's format, built from what the API was asked for:

    Constraint.json_object()                 any JSON object
    Constraint.json_schema(schema, strict)   JSON valid against ``schema``
    Constraint.tool_call(tools, name)        well-formed DSML calls of offered tools (or of the named one)
                                             whose arguments validate against their parameters schema
                                             (grammar in appliance.engine.tool_grammar)

The sampler keeps one matcher per constrained sequence: each step it computes the sequence's token
mask (batched with unconstrained rows, which are left alone), advances the matcher on the accepted
token, and allows EOS only where the grammar accepts. The masks of a step are computed by
llguidance's thread pool while ONNX Runtime runs the model (:class:`MaskComputer`): the mask for
the next token depends only on tokens already chosen, not on the logits being computed.

Running out of tokens must not leave half a JSON document, so the engine keeps a *closing plan*
(:meth:`GrammarTokenizer.closing_plan`): the shortest way it knows from the current grammar state to
a complete output — end the open string, close the open containers, give each missing required
property its smallest value. Near the end of the budget, a sampled token is kept only if a plan
from after it still fits in what is left; otherwise the plan's next token is forced. A request whose
``max_tokens`` cannot hold even the plan from the start is refused (:meth:`GrammarTokenizer.shortest`)
— a serious API refuses what it cannot honour rather than returning text that does not parse.

llguidance rather than xgrammar (both measured on this CPU with the demo tokenizer, see
``bench/constrained.py``): it needs only numpy (xgrammar pulls torch and triton into the runtime),
and it computes masks lazily per step without an up-front vocabulary compile.
"""

from __future__ import annotations

import concurrent.futures
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import llguidance
import llguidance.numpy
import numpy as np
import numpy.typing as npt

from appliance.engine.tokenizer import Tokenizer
from appliance.engine.tool_grammar import tool_call_lark
from shared.errors import InputError

if TYPE_CHECKING:
    from llguidance._lib import JsonCompileOptions

__all__ = ["Constraint", "GrammarTokenizer", "MaskComputer", "apply_masks"]

# A plan longer than this is not looked for: the grammar is then too demanding to close quickly.
MAX_PLAN = 512
# Token texts a closing plan prefers, best first: end strings and containers; separate; the smallest
# value of each JSON type; then anything else, shortest first (enums, key names, minLength strings).
_CLOSERS = frozenset('"}]')
_VALUES = ("0", '""', "[]", "{}", "null", "false", "true", "-", "1", "[", "{", "n", "f", "t")


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
        self._words = (self.vocab_size + 31) // 32
        self._plan_order = _plan_order(tokenizer, self.vocab_size)

    def matcher(self, constraint: Constraint) -> llguidance.LLMatcher:
        matcher = llguidance.LLMatcher(self._inner, constraint.grammar, log_level=0)
        if matcher.is_error():
            raise InputError(f"cannot constrain to {constraint.description}: {matcher.get_error()}")
        return matcher

    def closing_plan(self, matcher: llguidance.LLMatcher, limit: int = MAX_PLAN) -> list[int] | None:
        """Tokens that take ``matcher``'s state to an accepting one (EOS not included), at most
        ``limit``; None if none is found within it. ``matcher`` itself is not advanced."""
        probe = matcher.deep_copy()
        plan: list[int] = []
        bitmask = np.empty(self._words, dtype=np.int32)
        while not probe.is_accepting():
            if len(plan) >= limit or probe.is_stopped() or probe.is_error():
                return None
            probe.unsafe_compute_mask_ptr(bitmask.ctypes.data, bitmask.nbytes)
            allowed = np.unpackbits(bitmask.view(np.uint8), bitorder="little")[: self.vocab_size]
            hits = np.flatnonzero(allowed[self._plan_order])
            if not len(hits):
                return None
            token = int(self._plan_order[hits[0]])
            if not probe.consume_token(token):
                return None
            plan.append(token)
        return plan

    def shortest(self, constraint: Constraint) -> int | None:
        """Tokens the shortest output the engine can close to takes, EOS included; None when no
        plan is found (a grammar the closing heuristics do not fit: no guard, and no refusal)."""
        plan = self.closing_plan(self.matcher(constraint))
        return None if plan is None else len(plan) + 1


def _plan_order(tokenizer: Tokenizer, vocab_size: int) -> npt.NDArray[np.intp]:
    """Every token id, in the order a closing plan prefers them (see _CLOSERS, _VALUES)."""
    ranks: list[tuple[int, int, int]] = []
    values = {text: i for i, text in enumerate(_VALUES)}
    known = tokenizer.vocab_size
    for token in range(vocab_size):
        special = token >= known or tokenizer.is_special(token)
        text = "" if special else tokenizer.token_bytes(token).decode("utf-8", errors="replace")
        if text and set(text) <= _CLOSERS:
            ranks.append((0, -len(text), token))
        elif text == ",":
            ranks.append((1, 0, token))
        elif text in values:
            ranks.append((2, values[text], token))
        else:
            ranks.append((3, len(text) or 1_000_000, token))
    ranks.sort()
    return np.fromiter((t for _, _, t in ranks), dtype=np.intp, count=len(ranks))


class MaskComputer:
    """The token masks of one step's constrained rows, computed on llguidance's own threads.

    ``start()`` hands the work to a worker thread (llguidance's parallel fill releases the GIL) and
    returns at once, so the engine starts the model run meanwhile; ``result()`` waits for the masks.
    """

    def __init__(self, vocab_size: int) -> None:
        self.vocab_size = vocab_size
        self._executor = llguidance.LLExecutor()
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="enclave-mask")

    def start(
        self, matchers: Sequence[llguidance.LLMatcher | None]
    ) -> concurrent.futures.Future[npt.NDArray[np.int32]] | None:
        rows = [(m, k) for k, m in enumerate(m for m in matchers if m is not None)]
        if not rows:
            return None
        bitmask = llguidance.numpy.allocate_token_bitmask(len(rows), self.vocab_size)

        def fill() -> npt.NDArray[np.int32]:
            llguidance.numpy.fill_next_token_bitmask_par(self._executor, rows, bitmask)
            return bitmask

        return self._thread.submit(fill)

    def close(self) -> None:
        self._thread.shutdown(wait=False)


def apply_masks(
    logits: npt.NDArray[np.float32],
    matchers: Sequence[llguidance.LLMatcher | None],
    vocab_size: int,
    bitmask: npt.NDArray[np.int32] | None = None,
) -> npt.NDArray[np.float32]:
    """``logits`` with each constrained row's disallowed tokens at -inf (EOS is allowed only where the
    grammar accepts); unconstrained rows (None) untouched. A new array only if some row is constrained.
    ``bitmask``: the constrained rows' masks, in order, if already computed (:class:`MaskComputer`)."""
    rows = [i for i, m in enumerate(matchers) if m is not None]
    if not rows:
        return logits
    out = np.array(logits, dtype=np.float32, copy=True)
    if bitmask is None:
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
