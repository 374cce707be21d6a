"""What chat, completions and FIM requests share: the sampling fields, stop sequences, usage.

Request models refuse fields they do not know (400 naming the field), so a client never believes a
knob it sent had an effect. A few fields clients always send are accepted although they change
nothing here, each said in its description; a parameter whose non-default value Enclave cannot honour
yet is accepted at its default and refused otherwise, again naming it.

What needs the model to check (``logit_bias`` ids in the vocabulary, ``n`` against the appliance's
``max_n``) is checked by the route, again as a 400 naming the parameter.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
)

from shared.schemas._base import MAX_LOGIT_BIAS, MAX_N, MAX_STOP_SEQUENCES, Request, Response
from shared.schemas.enclave import EnclaveMetadata
from shared.schemas.thinking import CompletionTokensDetails


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool | None = Field(
        default=False,
        description="a last chunk with empty `choices` carries `usage` (and no other chunk does)",
    )


def _normalize_stop(value: str | list[str] | None) -> list[str] | None:
    if value is None:
        return None
    stops = [value] if isinstance(value, str) else list(value)
    if len(stops) > MAX_STOP_SEQUENCES:
        raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences")
    if any(not s for s in stops):
        raise ValueError("stop sequences must not be empty")
    if any(len(s) > 1024 for s in stops):
        raise ValueError("a stop sequence is at most 1024 characters")
    return stops


Penalty = Annotated[float | None, Field(default=None, ge=-2.0, le=2.0)]


class GenerationRequest(Request):
    model: str = Field(min_length=1, max_length=255)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=1_048_576)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0, description="default 1")
    top_p: float | None = Field(default=None, gt=0.0, le=1.0, description="default 1")
    top_k: int | None = Field(default=None, ge=0, le=1_000_000, description="vLLM's extension; 0 = no cut")
    stop: str | list[str] | None = Field(default=None, description=f"at most {MAX_STOP_SEQUENCES} strings")
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    n: int | None = Field(
        default=1,
        ge=1,
        le=MAX_N,
        description="choices per prompt, sharing one prefill of the prompt; at most the appliance's "
        "`max_n` setting (default 8)",
    )
    presence_penalty: Penalty = Field(
        default=None, description="-2..2, subtracted once from each token already generated (OpenAI's rule)"
    )
    frequency_penalty: Penalty = Field(
        default=None, description="-2..2, subtracted per occurrence of each token already generated"
    )
    logit_bias: dict[str, float] | None = Field(
        default=None,
        max_length=MAX_LOGIT_BIAS,
        description="token id (as a string) -> bias in -100..100 added to its logit; ids outside the "
        "model's vocabulary are refused",
    )
    user: str | None = Field(default=None, max_length=255, description="recorded in the audit log as given")
    enclave: EnclaveMetadata | None = None

    @field_validator("stop")
    @classmethod
    def _stop(cls, value: str | list[str] | None) -> list[str] | None:
        return _normalize_stop(value)

    @field_validator("logit_bias")
    @classmethod
    def _bias(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for key, bias in (value or {}).items():
            if not key.isdigit() or len(key) > 9:
                raise ValueError(f"logit_bias keys are token ids (decimal strings), got {key!r}")
            if not -100.0 <= bias <= 100.0:
                raise ValueError(f"logit_bias for token {key} must be in [-100, 100], got {bias}")
        return value

    def bias_pairs(self) -> tuple[tuple[int, float], ...]:
        return tuple((int(k), float(v)) for k, v in (self.logit_bias or {}).items())

    @property
    def choices_per_prompt(self) -> int:
        return self.n or 1

    @property
    def penalties(self) -> tuple[float, float]:
        """(presence, frequency), 0 where not given."""
        return (self.presence_penalty or 0.0, self.frequency_penalty or 0.0)

    def stop_list(self) -> tuple[str, ...]:
        stop = self.stop
        if stop is None:
            return ()
        return (stop,) if isinstance(stop, str) else tuple(stop)

    @property
    def streaming(self) -> bool:
        return bool(self.stream)

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and bool(self.stream_options.include_usage)

    @property
    def sampling_temperature(self) -> float:
        return 1.0 if self.temperature is None else self.temperature

    @property
    def sampling_top_p(self) -> float:
        return 1.0 if self.top_p is None else self.top_p


OpenAIFinish = Literal["stop", "length"]


class Usage(Response):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    completion_tokens_details: CompletionTokensDetails | None = Field(
        default=None, description="thinking mode only: how many completion tokens were reasoning"
    )

    @model_serializer(mode="wrap")
    def _omit_absent_details(self, handler: SerializerFunctionWrapHandler):  # type: ignore[no-untyped-def]
        # Outside thinking mode the object stays exactly as it was: no null details field.
        out: dict[str, Any] = handler(self)
        if out.get("completion_tokens_details") is None:
            out.pop("completion_tokens_details", None)
        return out
