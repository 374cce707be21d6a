"""One audited generation, from admission to its last audit record.

    admit()                       model allowed? prompt within context and policy? quota?
      -> audit generation.requested, durably       (fails closed: AuditUnavailableError -> 503,
                                                     and the engine is never asked for a token)
      -> Generation.deltas()      the engine's stream, timed for metrics
           finally: audit generation.completed | cancelled | failed, release the quota lease

Streaming and non-streaming routes both consume :meth:`Generation.deltas`; a client disconnect
cancels the task iterating it, which closes the engine stream (freeing its slot) and leaves the
finally clause to record ``cancelled``. The closing audit record is written under a shielded cancel
scope so a cancellation cannot skip it.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio

from appliance.api.auditing import Auditor, Caller, RequestInfo
from appliance.api.clock import Clock
from appliance.api.errors import ApiError
from appliance.api.metrics import Metrics
from appliance.api.quotas import QuotaLease, QuotaTracker
from appliance.api.reasoning import ThinkingPlan
from appliance.api.sampling import Extras
from appliance.engine.types import Delta, GenerationService, SamplingParams
from shared.errors import EngineError, InputError, QuotaError
from shared.schemas import EnclaveMetadata

__all__ = ["Generation", "GenerationOutcome", "admit", "check_model", "resolve_max_tokens"]

# max_tokens when the request names none and the policy sets no cap.
DEFAULT_MAX_TOKENS = 1024


# Seconds a client is told to wait: a full queue drains in about a generation's time; a model that is
# still loading takes longer.
QUEUE_FULL_RETRY_S = 2
NOT_LOADED_RETRY_S = 10


def check_model(
    engine: GenerationService | None, caller: Caller, model: str, *, max_waiting: int | None = None
) -> GenerationService:
    """The engine serving ``model``, or 404 (unknown or not allowed to this caller) / 503 (no model)
    / 429 (``max_waiting`` requests already queued) — decided here, before any response starts,
    so a stream never answers 200 and then says the engine is busy."""
    if engine is None:
        raise ApiError(
            503,
            "no model is loaded yet",
            type="service_unavailable",
            code="model_not_loaded",
            headers={"Retry-After": str(NOT_LOADED_RETRY_S)},
        )
    if model != engine.model_id or not caller.allows_model(model):
        raise ApiError(
            404,
            f"The model `{model}` does not exist or you do not have access to it.",
            code="model_not_found",
            param="model",
        )
    if max_waiting is not None:
        stats = engine.stats()
        if stats.free_slots <= 0 and stats.waiting >= max_waiting:
            raise ApiError(
                429,
                f"the engine is busy: {stats.waiting} requests already waiting; retry shortly",
                type="rate_limit_error",
                code="engine_busy",
                headers={"Retry-After": str(QUEUE_FULL_RETRY_S)},
            )
    return engine


@dataclass
class GenerationOutcome:
    text: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0  # all choices together
    finish_reason: str | None = None  # "stop"/"length" once every choice has one; else the first other
    texts: list[str] = field(default_factory=list)  # one per choice (n > 1)
    # Thinking mode: the reasoning (of choice 0), and how many of completion_tokens it took (all).
    reasoning: str = ""
    reasoning_tokens: int = 0


@dataclass
class Generation:
    """An admitted generation whose ``requested`` event is durably committed."""

    engine: GenerationService
    auditor: Auditor
    metrics: Metrics
    clock: Clock
    caller: Caller
    info: RequestInfo
    endpoint: str
    prompt_ids: list[int]
    params: SamplingParams
    details: dict[str, Any]
    prompt_content: Any
    lease: QuotaLease
    started: float
    thinking: ThinkingPlan = field(default_factory=ThinkingPlan)
    outcome: GenerationOutcome = field(default_factory=GenerationOutcome)
    # The engine's id for this generation when the request has several (a prompt list): each prompt
    # is its own engine request; None = the HTTP request id.
    stream_id: str | None = None
    first_token_at: float | None = None

    async def deltas(self) -> AsyncGenerator[Delta, None]:
        """The engine's deltas. Always iterate to the end or close it (``aclose``).

        The closing audit record is written when the generator finishes, so a consumer that has
        already sent the last chunk (and ``[DONE]``) before closing it keeps that commit off the
        client's critical path. Which record it is depends on how far the engine got: a final
        delta with ``stop``/``length`` is a completion even if the consumer closes right after it.
        """
        error: str | None = None
        stream = self.engine.stream(
            self.prompt_ids, self.params, request_id=self.stream_id or self.info.request_id
        )
        self.metrics.active_streams.add(1)
        n = self.params.n
        pieces: list[list[str]] = [[] for _ in range(n)]
        produced = [0] * n
        finishes: list[str | None] = [None] * n
        thoughts: list[list[str]] = [[] for _ in range(n)]
        reasoned = [0] * n
        try:
            async for delta in stream:
                if self.first_token_at is None and delta.completion_tokens > 0:
                    self.first_token_at = self.clock.monotonic()
                    self.metrics.time_to_first_token.observe(self.first_token_at - self.started)
                pieces[delta.index].append(delta.text)
                produced[delta.index] = delta.completion_tokens
                thoughts[delta.index].append(delta.reasoning)
                reasoned[delta.index] = delta.reasoning_tokens
                self.outcome.reasoning_tokens = sum(reasoned)
                self.outcome.prompt_tokens = delta.prompt_tokens
                self.outcome.completion_tokens = sum(produced)
                if delta.finish_reason is not None:
                    finishes[delta.index] = delta.finish_reason
                    abnormal = [f for f in finishes if f not in (None, "stop", "length")]
                    if abnormal or None not in finishes:
                        self.outcome.finish_reason = abnormal[0] if abnormal else delta.finish_reason
                yield delta
                if self.outcome.finish_reason is not None:
                    break
            else:
                error = "engine stream ended without a finish reason"
        except EngineError as exc:
            error = str(exc)
            raise
        finally:
            self.metrics.active_streams.add(-1)
            with anyio.CancelScope(shield=True):
                aclose = getattr(stream, "aclose", None)
                if aclose is not None:
                    await aclose()
                self.outcome.texts = ["".join(p) for p in pieces]
                self.outcome.text = self.outcome.texts[0]
                self.outcome.reasoning = "".join(thoughts[0])
                await self._finish(self._status(error), error)

    async def abandon(self) -> None:
        """Close an admitted generation that will not be run (a later prompt of the same request was
        refused): its quota lease is returned and its audit trail ends with ``cancelled``."""
        await self._finish("cancelled", None)

    def _status(self, error: str | None) -> str:
        reason = self.outcome.finish_reason
        if reason in ("stop", "length"):
            return "completed"
        if error is not None or reason == "error":
            return "failed"
        return "cancelled"

    async def _finish(self, status: str, error: str | None) -> None:
        out = self.outcome
        self.lease.finish(out.completion_tokens)
        end = self.clock.monotonic()
        self.metrics.generations.inc(endpoint=self.endpoint, outcome=status)
        self.metrics.tokens.inc(out.prompt_tokens or len(self.prompt_ids), kind="prompt")
        self.metrics.tokens.inc(out.completion_tokens, kind="completion")
        self.metrics.request_latency.observe(end - self.started)
        details = dict(self.details)
        details.update(
            prompt_tokens=out.prompt_tokens or len(self.prompt_ids),
            completion_tokens=out.completion_tokens,
            finish_reason=out.finish_reason if status != "cancelled" else "cancelled",
            latency_ms=round((end - self.started) * 1000),
            time_to_first_token_ms=(
                round((self.first_token_at - self.started) * 1000)
                if self.first_token_at is not None
                else None
            ),
        )
        if error is not None:
            details["error"] = error
        # The prompt went with the "requested" record; this one carries only what came back —
        # the reasoning as a field of its own, under the same capture mode and redaction.
        content: dict[str, Any] = (
            {"completion": out.text} if self.params.n == 1 else {"completions": out.texts}
        )
        if self.thinking.thinking:
            details["reasoning_tokens"] = out.reasoning_tokens
            content["reasoning"] = out.reasoning
        # The request already has its durable "requested" record; a failure to write the closing one
        # is logged by the auditor and must not turn a delivered answer into an error.
        await self.auditor.record_quietly(
            self.caller,
            self.info,
            action=f"generation.{status}",
            target=f"model:{self.engine.model_id}",
            outcome="success" if status == "completed" else status,
            details=details,
            content=content,
        )


def resolve_max_tokens(
    engine: GenerationService, caller: Caller, n_prompt: int, requested: int | None
) -> int:
    room = engine.context_length - n_prompt
    if room <= 0 or (requested is not None and requested > room):
        wanted = f" plus max_tokens {requested}" if requested is not None else ""
        raise ApiError(
            400,
            f"This model's maximum context length is {engine.context_length} tokens; the prompt has "
            f"{n_prompt} tokens{wanted}.",
            code="context_length_exceeded",
            param="messages" if requested is None else "max_tokens",
        )
    if requested is not None:
        return requested
    cap = caller.limits.max_output_tokens
    return min(room, cap if cap is not None else DEFAULT_MAX_TOKENS)


def check_constraint_room(engine: GenerationService, extras: Extras, max_tokens: int) -> None:
    """A structured output must fit: refuse a max_tokens below the shortest complete output, rather
    than return JSON that stops halfway."""
    assert extras.constraint is not None
    try:
        shortest = engine.shortest_output(extras.constraint)
    except InputError as exc:
        raise ApiError(400, str(exc), param="response_format") from None
    if shortest is not None and max_tokens < shortest:
        raise ApiError(
            400,
            f"max_tokens {max_tokens} is too small for response_format: the shortest "
            f"{extras.constraint.description} takes {shortest} tokens",
            code="max_tokens_too_small",
            param="max_tokens",
        )


async def admit(
    *,
    engine: GenerationService,
    auditor: Auditor,
    quotas: QuotaTracker,
    metrics: Metrics,
    clock: Clock,
    caller: Caller,
    info: RequestInfo,
    endpoint: str,
    prompt_ids: Sequence[int],
    requested_max_tokens: int | None,
    temperature: float,
    top_p: float,
    top_k: int = 0,
    seed: int | None,
    stop: tuple[str, ...],
    stream: bool,
    metadata: EnclaveMetadata | None,
    end_user: str | None = None,
    prompt_content: Any,
    started: float,
    thinking: ThinkingPlan | None = None,
    extras: Extras | None = None,
) -> Generation:
    """Check limits, take a quota lease and durably audit the request; raise on any refusal.
    ``thinking``: the mode a chat asked for, checked here against policy and the model."""
    extras = extras or Extras()
    n_prompt = len(prompt_ids)
    try:
        plan = (thinking or ThinkingPlan()).check(engine, caller)
        max_tokens = resolve_max_tokens(engine, caller, n_prompt, requested_max_tokens)
        if extras.constraint is not None:
            check_constraint_room(engine, extras, max_tokens)
        # The policy's max_output_tokens bounds each choice; the tokens all n produce are counted
        # when the lease finishes.
        lease = quotas.admit(
            caller.quota_key, caller.limits, prompt_tokens=n_prompt, max_output_tokens=max_tokens
        )
    except (QuotaError, ApiError) as exc:
        # A policy refusal is part of what the caller did: it goes in the log like a denial.
        await auditor.record_quietly(
            caller,
            info,
            action="generation.refused",
            target=f"model:{engine.model_id}",
            outcome="denied",
            details={"endpoint": endpoint, "reason": str(exc), "prompt_tokens": n_prompt},
        )
        raise
    params = SamplingParams(
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        seed=seed,
        stop=stop,
        thinking=plan.thinking,
        max_reasoning_tokens=plan.max_reasoning_tokens,
        presence_penalty=extras.presence_penalty,
        frequency_penalty=extras.frequency_penalty,
        logit_bias=extras.logit_bias,
        logprobs=extras.logprobs,
        constraint=extras.constraint,
        n=extras.n,
    )
    details: dict[str, Any] = {
        "endpoint": endpoint,
        "model": engine.model_id,
        "stream": stream,
        "max_tokens": max_tokens,
        "prompt_tokens": n_prompt,
        "n": extras.n,
        "constrained": extras.constraint.description if extras.constraint else None,
        "project_id": metadata.project_id if metadata else None,
        "context_files": [f.model_dump() for f in metadata.context_files] if metadata else [],
        # OpenAI's `user`: the calling tool's own end-user id, kept for the auditor as given.
        "end_user": end_user,
    }
    if thinking is not None:
        details["thinking"] = plan.mode
    try:
        await auditor.record(
            caller,
            info,
            action="generation.requested",
            target=f"model:{engine.model_id}",
            outcome="success",
            details=details,
            content={"prompt": prompt_content},
        )
    except BaseException:
        lease.finish(0)
        raise
    return Generation(
        engine=engine,
        auditor=auditor,
        metrics=metrics,
        clock=clock,
        caller=caller,
        info=info,
        endpoint=endpoint,
        prompt_ids=list(prompt_ids),
        params=params,
        details=details,
        prompt_content=prompt_content,
        lease=lease,
        started=started,
        thinking=plan,
    )
