"""The engine: ``LLMEngine.step()`` = schedule -> run -> postprocess. ``AsyncEngine``, which drives
it from a background thread for asyncio callers, is in :mod:`appliance.engine.serving` (re-exported
here).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from collections.abc import Sequence as Seq
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np
import numpy.typing as npt

from appliance.engine.constrain import Constraint, GrammarTokenizer, MaskComputer, apply_masks
from appliance.engine.memory import DEFAULT_PREFILL_MEMORY, prefill_chunk_for_bundle
from appliance.engine.prompt import THINK_END
from appliance.engine.reasoning import ReasoningState
from appliance.engine.sampler import process_logits, sample, token_logprobs
from appliance.engine.scheduler import Scheduler
from appliance.engine.sequence import Sequence
from appliance.engine.tokenizer import IncrementalDetokenizer, Tokenizer
from appliance.engine.types import (
    MAX_LOGPROBS,
    Delta,
    FinishReason,
    SamplingParams,
    TokenLogprob,
)
from shared.errors import EngineError, InputError

if TYPE_CHECKING:
    from appliance.model.bundle import Bundle

__all__ = ["DEFAULT_MAX_CONTEXT", "AsyncEngine", "LLMEngine", "Runner", "StepOutput"]

# Cache capacity per slot when the caller does not choose one: every slot preallocates state for
# this many positions, so it is a memory decision, not the model's limit.
DEFAULT_MAX_CONTEXT = 4096

# A constrained sequence's closing plan is checked every _PLAN_EVERY tokens once its budget is within
# _PLAN_HORIZON tokens of the plan's length, and at every token within _PLAN_GUARD (constrain.py).
_PLAN_HORIZON = 256
_PLAN_EVERY = 16
_PLAN_GUARD = 32

log = logging.getLogger(__name__)


class Runner(Protocol):
    """What the engine needs from whatever computes logits (``runner.OrtRunner``; a fake in tests).

    ``run`` feeds each sequence's ``pending_ids`` into the cache slot ``seq.slot`` at positions from
    ``seq.num_cached`` and returns the logits after each sequence's last id, ``[len(seqs), vocab]``.
    A prefill starts a slot afresh (``num_cached == 0``); a decode feeds exactly one id per sequence.
    ``fork`` copies one slot's cache into another (``n`` choices share their prompt's prefill).
    """

    @property
    def num_slots(self) -> int: ...

    @property
    def max_context(self) -> int: ...

    def run(self, kind: Literal["prefill", "decode"], seqs: Seq[Sequence]) -> npt.NDArray[np.float32]: ...

    def fork(self, source_slot: int, target_slot: int) -> None: ...


@dataclass(frozen=True)
class StepOutput:
    request_id: str
    delta: Delta
    error: str | None = None  # why, when delta.finish_reason is "error"


def validate_params(params: SamplingParams, vocab_size: int) -> None:
    if params.max_tokens < 1:
        raise InputError(f"max_tokens must be at least 1, got {params.max_tokens}")
    if params.n < 1:
        raise InputError(f"n must be at least 1, got {params.n}")
    if not params.temperature >= 0.0:
        raise InputError(f"temperature must be >= 0, got {params.temperature}")
    if not 0.0 < params.top_p <= 1.0:
        raise InputError(f"top_p must be in (0, 1], got {params.top_p}")
    if params.top_k < 0:
        raise InputError(f"top_k must be >= 0, got {params.top_k}")
    for name in ("presence_penalty", "frequency_penalty"):
        value = getattr(params, name)
        if not -2.0 <= value <= 2.0:
            raise InputError(f"{name} must be in [-2, 2], got {value}")
    for token, bias in params.logit_bias:
        if not 0 <= token < vocab_size:
            raise InputError(f"logit_bias names token {token}, outside the vocabulary (0..{vocab_size - 1})")
        if not -100.0 <= bias <= 100.0:
            raise InputError(f"logit_bias for token {token} must be in [-100, 100], got {bias}")
    if params.logprobs is not None and not 0 <= params.logprobs <= MAX_LOGPROBS:
        raise InputError(f"logprobs must be in [0, {MAX_LOGPROBS}], got {params.logprobs}")
    if params.max_reasoning_tokens is not None and params.max_reasoning_tokens < 0:
        raise InputError(f"max_reasoning_tokens must be >= 0, got {params.max_reasoning_tokens}")
    if params.thinking and params.constraint is not None:
        # A grammar would have to hold for the reasoning too, which no schema describes.
        raise InputError("a constrained generation (response format, required tool call) cannot think")


class LLMEngine:
    """Synchronous engine; not thread-safe (``AsyncEngine`` calls it from one thread only)."""

    def __init__(
        self,
        runner: Runner,
        tokenizer: Tokenizer,
        *,
        max_waiting: int = 256,
        max_prefill_tokens: int = 8192,
        preempt_after: int | None = None,
        model_id: str = "model",
        stop_ids: Iterable[int] = (),
    ) -> None:
        self.runner = runner
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.scheduler = Scheduler(
            num_slots=runner.num_slots,
            max_context=runner.max_context,
            max_waiting=max_waiting,
            max_prefill_tokens=max_prefill_tokens,
            preempt_after=preempt_after,
        )
        # Generation ends at the tokenizer's EOS and at the model config's EOS ids.
        eos = tokenizer.eos_id
        self._default_stop_ids = frozenset((*stop_ids, *(() if eos is None else (eos,))))
        self._seqs: dict[str, Sequence] = {}
        self._groups: dict[str, list[Sequence]] = {}  # request id -> its n choices
        self._detok: dict[str, IncrementalDetokenizer] = {}
        self._reasoning: dict[str, ReasoningState] = {}
        self._grammar: GrammarTokenizer | None = None
        self._grammar_lock = threading.Lock()
        self._masks: MaskComputer | None = None

    @classmethod
    def from_bundle(
        cls,
        bundle: Bundle,
        *,
        provider: Literal["cpu", "cuda"] = "cpu",
        device_ids: Seq[int] = (0,),
        num_slots: int = 8,
        max_context: int = DEFAULT_MAX_CONTEXT,
        intra_op_threads: int = 0,
        max_waiting: int = 256,
        prefill_chunk: int | None = None,
        prefill_memory: int = DEFAULT_PREFILL_MEMORY,
        preempt_after: int | None = None,
    ) -> LLMEngine:
        """An engine on ONNX Runtime over a bundle that ``appliance.model.bundle.load_bundle`` verified.

        A prompt is prefilled in calls of ``prefill_chunk`` tokens; by default, of the most tokens
        whose activations fit ``prefill_memory`` bytes (``appliance/engine/memory.py``)."""
        from appliance.engine.runner import OrtRunner  # the one module that imports onnxruntime

        context = min(max_context, bundle.config.max_position_embeddings)
        if prefill_chunk is None:
            prefill_chunk = prefill_chunk_for_bundle(
                bundle.info, bundle.config, budget=prefill_memory, context=context
            )
            log.info(
                "prefill chunk %d tokens (activations within %d MiB)", prefill_chunk, prefill_memory >> 20
            )
        runner = OrtRunner(
            bundle.path,
            bundle.io,
            num_slots=num_slots,
            max_context=context,
            provider=provider,
            device_ids=device_ids,
            intra_op_threads=intra_op_threads,
            prefill_chunk=prefill_chunk,
        )
        return cls(
            runner,
            Tokenizer.from_file(bundle.tokenizer_path),
            max_waiting=max_waiting,
            preempt_after=preempt_after,
            model_id=bundle.name,
            stop_ids=bundle.config.eos_token_id,
        )

    @property
    def has_work(self) -> bool:
        return self.scheduler.has_work

    def add_request(self, request_id: str, prompt_ids: Seq[int], params: SamplingParams) -> Sequence:
        """Queue ``params.n`` choices of one prompt under ``request_id``; the first one is returned."""
        if request_id in self._groups:
            raise InputError(f"request id {request_id!r} is already in use")
        validate_params(params, self.tokenizer.vocab_size)
        seqs = [
            Sequence(
                request_id if i == 0 else f"{request_id}#{i}",
                list(prompt_ids),
                params,
                group=request_id,
                index=i,
            )
            for i in range(params.n)
        ]
        end_id: int | None = None
        if params.thinking:
            end_id = self.tokenizer.token_id(THINK_END)
            if end_id is None:
                raise InputError(f"this model cannot think: its tokenizer has no {THINK_END} token")
        if params.constraint is not None:
            grammar = self._grammar_tokenizer()
            shortest = grammar.shortest(params.constraint)
            if shortest is not None and params.max_tokens < shortest:
                raise InputError(
                    f"max_tokens {params.max_tokens} is too small: the shortest output that is "
                    f"{params.constraint.description} takes {shortest} tokens"
                )
            for seq in seqs:
                seq.matcher = grammar.matcher(params.constraint)
                # No plan known: the guard then only ever looks when the budget is nearly spent.
                seq.plan_len = shortest - 1 if shortest is not None else 0
        if len(self.scheduler.waiting) + len(seqs) > self.scheduler.max_waiting:
            raise EngineError(f"the engine is busy: {len(self.scheduler.waiting)} requests already waiting")
        for seq in seqs:
            seq.fork_of = seqs[0] if seq.index else None
            self.scheduler.add(seq)
            self._seqs[seq.request_id] = seq
            self._detok[seq.request_id] = IncrementalDetokenizer(
                self.tokenizer, stop=params.stop, context=seq.prompt_ids
            )
            if end_id is not None:
                self._reasoning[seq.request_id] = ReasoningState(
                    self.tokenizer, end_id=end_id, budget=params.max_reasoning_tokens, context=prompt_ids
                )
        self._groups[request_id] = seqs
        return seqs[0]

    def abort(self, request_id: str) -> bool:
        """Cancel a request (all its choices); its slots are free when this returns. False if it is
        not (or no longer) here."""
        group = self._groups.get(request_id)
        if group is None:
            return False
        for seq in group:
            if not seq.is_finished:
                self._end(seq, "cancelled")
        return True

    def shortest_output(self, constraint: Constraint) -> int | None:
        return self._grammar_tokenizer().shortest(constraint)

    def step(self) -> list[StepOutput]:
        batch = self.scheduler.schedule()
        if batch is None:
            return []
        # Copies of a prefill (n > 1) join its rows: same logits, their own matcher and generator.
        seqs = batch.seqs + [copy for _, copy in batch.forks]
        matchers = [s.matcher for s in seqs]
        # The grammar masks need only the tokens already chosen: computed while the model runs.
        masks = self._mask_computer().start(matchers) if any(m is not None for m in matchers) else None
        try:
            logits = self.runner.run(batch.kind, batch.seqs)
            for source, copy in batch.forks:
                assert source.slot is not None and copy.slot is not None
                self.runner.fork(source.slot, copy.slot)
        except EngineError as exc:
            if masks is not None:
                masks.result()  # the matchers are not to be touched while llguidance reads them
            log.error("model run failed; ending %d request(s): %s", len(seqs), exc)
            return [self._error_output(seq, str(exc)) for seq in seqs]
        for seq in seqs:
            seq.num_cached = len(seq.token_ids)
        if batch.forks:
            row_of = {id(seq): i for i, seq in enumerate(batch.seqs)}
            logits = np.concatenate([logits, logits[[row_of[id(source)] for source, _ in batch.forks]]])
        logits = process_logits(logits, seqs)
        if masks is not None:
            logits = apply_masks(logits, matchers, self._grammar_tokenizer().vocab_size, masks.result())
        tokens = sample(logits, seqs)
        for row, seq in enumerate(seqs):
            state = self._reasoning.get(seq.request_id)
            forced = state.forced_token() if state is not None else None
            if forced is not None:
                tokens[row] = forced
        return [
            self._postprocess(seq, token, self._logprobs(logits[row], seq, token))
            for row, (seq, token) in enumerate(
                zip(seqs, (self._closable(s, t) for s, t in zip(seqs, tokens, strict=True)), strict=True)
            )
        ]

    def _closable(self, seq: Sequence, token: int) -> int:
        """``token``, or the next token of ``seq``'s closing plan where after ``token`` the output
        could no longer be completed within the budget (see constrain.py)."""
        matcher = seq.matcher
        if matcher is None or matcher.is_stopped():
            return token
        budget = min(seq.remaining, self.runner.max_context - len(seq.token_ids))  # this token included
        near = budget <= seq.plan_len + _PLAN_GUARD
        if not near and not (
            budget <= seq.plan_len + _PLAN_HORIZON and seq.num_completion_tokens % _PLAN_EVERY == 0
        ):
            return token
        if seq.closing and token == seq.closing[0]:
            seq.closing.pop(0)
            seq.plan_len = len(seq.closing)
            return token
        grammar = self._grammar_tokenizer()
        after = matcher.deep_copy()
        if after.consume_token(token):
            # Room for the plan after this token and then EOS; with none left, a complete output.
            plan = grammar.closing_plan(after, limit=max(budget - 2, 0))
            if plan is not None:
                seq.closing, seq.plan_len = plan, len(plan)
                return token
        if not near:
            return token
        if not seq.closing:
            seq.closing = grammar.closing_plan(matcher, limit=max(budget - 1, 0)) or []
        if not seq.closing:
            return token
        seq.plan_len = len(seq.closing) - 1
        return seq.closing.pop(0)

    def _grammar_tokenizer(self) -> GrammarTokenizer:
        # Built on first use: it indexes the whole vocabulary, which unconstrained serving never needs.
        # The API thread asks too (shortest_output), hence the lock.
        with self._grammar_lock:
            if self._grammar is None:
                self._grammar = GrammarTokenizer(self.tokenizer)
            return self._grammar

    def _mask_computer(self) -> MaskComputer:
        if self._masks is None:
            self._masks = MaskComputer(self._grammar_tokenizer().vocab_size)
        return self._masks

    @staticmethod
    def _logprobs(row: npt.NDArray[np.float32], seq: Sequence, token: int) -> tuple[TokenLogprob, ...]:
        k = seq.params.logprobs
        return () if k is None else (token_logprobs(row, token, k),)

    def generate(self, prompts: Iterable[Seq[int]], params: SamplingParams) -> list[list[int]]:
        """Offline: run the prompts to completion together; the generated ids of each (of its first
        choice), in order."""
        seqs = [self.add_request(f"generate-{i}", p, params) for i, p in enumerate(prompts)]
        while self.has_work:
            self.step()
        return [s.completion_ids for s in seqs]

    def _postprocess(self, seq: Sequence, token: int, logprobs: tuple[TokenLogprob, ...] = ()) -> StepOutput:
        seq.append(token)
        params = seq.params
        state = self._reasoning.get(seq.request_id)
        ends = token in params.stop_token_ids or (not params.ignore_eos and token in self._default_stop_ids)
        reasoning, text = "", ""
        reason: FinishReason | None = None
        if state is not None and state.open:
            if ends:
                reasoning, reason = state.close(), "stop"
            else:
                reasoning = state.push(token)
                if not state.open:
                    # The answer's text starts after </think>, with it as left context.
                    self._detok[seq.request_id] = IncrementalDetokenizer(
                        self.tokenizer, stop=params.stop, context=seq.token_ids
                    )
                elif self._out_of_room(seq):
                    reasoning, reason = reasoning + state.close(), "length"
        else:
            text, reason = self._answer_text(seq, token, ends)
        delta = Delta(
            text=text,
            token_ids=(token,),
            prompt_tokens=seq.num_prompt_tokens,
            completion_tokens=seq.num_completion_tokens,
            finish_reason=reason,
            logprobs=logprobs,
            reasoning=reasoning,
            reasoning_tokens=state.tokens if state is not None else 0,
            index=seq.index,
        )
        if reason is not None:
            self._end(seq, reason)
        return StepOutput(seq.group, delta)

    def _out_of_room(self, seq: Sequence) -> bool:
        return (
            seq.num_completion_tokens >= seq.params.max_tokens
            or len(seq.token_ids) >= self.runner.max_context
        )

    def _answer_text(self, seq: Sequence, token: int, ends: bool) -> tuple[str, FinishReason | None]:
        detok = self._detok[seq.request_id]
        if ends:
            return detok.flush(), "stop"
        text = detok.push(token)
        if detok.stopped:
            return text, "stop"
        if self._out_of_room(seq):
            return text + detok.flush(), "length"
        return text, None

    def _error_output(self, seq: Sequence, error: str) -> StepOutput:
        self._end(seq, "error")
        delta = Delta("", (), seq.num_prompt_tokens, seq.num_completion_tokens, "error", index=seq.index)
        return StepOutput(seq.group, delta, error)

    def _end(self, seq: Sequence, reason: FinishReason) -> None:
        self.scheduler.finish(seq, reason)
        del self._seqs[seq.request_id]
        del self._detok[seq.request_id]
        self._reasoning.pop(seq.request_id, None)
        group = self._groups.get(seq.group, [])
        if all(member.is_finished for member in group):
            self._groups.pop(seq.group, None)


# The asyncio side lives in its own module; it imports LLMEngine from here, hence the late import.
from appliance.engine.serving import AsyncEngine  # noqa: E402
