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
from appliance.engine.constrain import Constraint
from appliance.engine.types import Delta, GenerationService, SamplingParams
from shared.errors import EngineError, QuotaError
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
    completion_tokens: int = 0
    finish_reason: str | None = None
    # Thinking mode: the reasoning, and how many of completion_tokens it took.
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
    first_token_at: float | None = None

    async def deltas(self) -> AsyncGenerator[Delta, None]:
        """The engine's deltas. Always iterate to the end or close it (``aclose``).

        The closing audit record is written when the generator finishes, so a consumer that has
        already sent the last chunk (and ``[DONE]``) before closing it keeps that commit off the
        client's critical path. Which record it is depends on how far the engine got: a final
        delta with ``stop``/``length`` is a completion even if the consumer closes right after it.
        """
        error: str | None = None
        stream = self.engine.stream(self.prompt_ids, self.params, request_id=self.info.request_id)
        self.metrics.active_streams.add(1)
        pieces: list[str] = []
        thoughts: list[str] = []
        try:
            async for delta in stream:
                if self.first_token_at is None and delta.completion_tokens > 0:
                    self.first_token_at = self.clock.monotonic()
                    self.metrics.time_to_first_token.observe(self.first_token_at - self.started)
                pieces.append(delta.text)
                thoughts.append(delta.reasoning)
                self.outcome.reasoning_tokens = delta.reasoning_tokens
                self.outcome.prompt_tokens = delta.prompt_tokens
                self.outcome.completion_tokens = delta.completion_tokens
                if delta.finish_reason is not None:
                    self.outcome.finish_reason = delta.finish_reason
                yield delta
                if delta.finish_reason is not None:
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
                self.outcome.text = "".join(pieces)
                self.outcome.reasoning = "".join(thoughts)
                await self._finish(self._status(error), error)

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
        content = {"completion": out.text}
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
    constraint: Constraint | None = None,
) -> Generation:
    """Check limits, take a quota lease and durably audit the request; raise on any refusal.
    ``thinking``: the mode a chat asked for, checked here against policy and the model."""
    n_prompt = len(prompt_ids)
    try:
        plan = (thinking or ThinkingPlan()).check(engine, caller)
        max_tokens = resolve_max_tokens(engine, caller, n_prompt, requested_max_tokens)
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
        constraint=constraint,
    )
    details: dict[str, Any] = {
        "endpoint": endpoint,
        "model": engine.model_id,
        "stream": stream,
        "max_tokens": max_tokens,
        "prompt_tokens": n_prompt,
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
