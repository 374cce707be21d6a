"""Thinking mode over the API: which of V4's modes a chat request asks for, and whether it may.

V4 has three modes (DeepSeek's names): non-think, Think High and Think Max. A request picks one the
ways clients already do — DeepSeek's ``thinking`` switch and ``reasoning_effort``, OpenAI's
``reasoning_effort``, or a reasoner model id — mapped as DeepSeek's API maps them:

    thinking {"type": "disabled"}                       non-think
    thinking {"type": "enabled"}                        Think High (or the effort's mode)
    reasoning_effort none                               non-think
    reasoning_effort minimal | low | medium | high      Think High   (DeepSeek: low, medium -> high)
    reasoning_effort xhigh | max                        Think Max    (DeepSeek: xhigh -> max)
    model "<installed>-reasoner" / "<installed>-thinking"   Think High unless the fields say otherwise
    none of these                                       non-think (the appliance's default: a plain
                                                        request, FIM and the desktop stay as fast
                                                        and as cheap as they always were)

A contradiction (thinking disabled with an effort that thinks, or enabled with effort ``none``) is a
400 naming ``reasoning_effort``, never a silent choice. Think Max needs a context of at least
:data:`MAX_MODE_CONTEXT` tokens (DeepSeek's model card: 384K, so the reasoning is not cut off); on a
smaller installed context it is a 400, not a quietly shorter High. A team policy may forbid
thinking (403 naming the team) and cap the reasoning tokens per answer (the engine then closes the
think block itself; :mod:`appliance.engine.reasoning`).
"""

from __future__ import annotations

from dataclasses import dataclass

from appliance.api.auditing import Caller
from appliance.api.errors import ApiError
from appliance.engine.types import GenerationService, ReasoningEffort
from shared.schemas import ChatCompletionRequest

__all__ = ["MAX_MODE_CONTEXT", "REASONER_SUFFIXES", "ThinkingPlan", "plan_thinking", "served_model"]

# DeepSeek: "for the Think Max reasoning mode, set the context window to at least 384K tokens".
MAX_MODE_CONTEXT = 384 * 1024
# DeepSeek's API names its thinking model "deepseek-reasoner"; "-thinking" is what several
# OpenAI-compatible servers use. Either, after the installed model's id, asks for thinking.
REASONER_SUFFIXES = ("-reasoner", "-thinking")

_EFFORTS: dict[str, ReasoningEffort | None] = {
    "none": None,
    "minimal": "high",
    "low": "high",
    "medium": "high",
    "high": "high",
    "xhigh": "max",
    "max": "max",
}


@dataclass(frozen=True)
class ThinkingPlan:
    """What a chat request gets: thinking or not, at which effort, under which reasoning cap."""

    thinking: bool = False
    effort: ReasoningEffort | None = None  # "high" or "max" when thinking
    max_reasoning_tokens: int | None = None

    @property
    def mode(self) -> str:
        """DeepSeek's name of the mode, as the audit log records it."""
        if not self.thinking:
            return "non-think"
        return "think-max" if self.effort == "max" else "think-high"

    def check(self, engine: GenerationService, caller: Caller) -> ThinkingPlan:
        """This plan under the caller's policy and the installed model (ApiError if refused)."""
        if not self.thinking:
            return self
        policy = caller.principal.policy
        if not policy.allows_thinking:
            teams = ", ".join(repr(t) for t in policy.thinking_forbidden_by)
            raise ApiError(
                403,
                f"thinking mode is not allowed by the policy of team {teams}",
                type="permission_error",
                code="thinking_not_allowed",
                param="thinking",
            )
        if self.effort == "max" and engine.context_length < MAX_MODE_CONTEXT:
            raise ApiError(
                400,
                f"Think Max (reasoning_effort max or xhigh) needs a context of at least {MAX_MODE_CONTEXT} "
                f"tokens; this appliance serves {engine.model_id} with {engine.context_length}. "
                "Use reasoning_effort high.",
                code="context_too_small_for_think_max",
                param="reasoning_effort",
            )
        return ThinkingPlan(True, self.effort, policy.max_reasoning_tokens)


def served_model(requested: str, installed: str | None) -> tuple[str, bool]:
    """(the model id to serve, whether the id itself asks for thinking): a reasoner alias of the
    installed model serves that model in thinking mode; any other id is looked up as it is."""
    if installed is not None:
        for suffix in REASONER_SUFFIXES:
            if requested == installed + suffix:
                return installed, True
    return requested, False


def plan_thinking(body: ChatCompletionRequest, *, by_model: bool) -> ThinkingPlan:
    """The mode ``body`` asks for (before policy): see the table in the module docstring."""
    effort_in = body.reasoning_effort
    effort = _EFFORTS[effort_in] if effort_in is not None else None
    if body.thinking is not None:
        thinking = body.thinking.type == "enabled"
        if effort_in is not None and thinking != (effort is not None):
            state = "on" if effort is not None else "off"
            raise ApiError(
                400,
                f"reasoning_effort {effort_in!r} turns thinking {state}, but thinking.type is "
                f"{body.thinking.type!r}; send one or make them agree",
                code="conflicting_thinking",
                param="reasoning_effort",
            )
    elif effort_in is not None:
        thinking = effort is not None
    else:
        thinking = by_model
    if not thinking:
        return ThinkingPlan()
    return ThinkingPlan(True, effort or "high")
