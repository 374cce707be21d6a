"""``enclave generate``: run a model bundle offline, without the server (an admin's smoke test).

    enclave generate --bundle B (--prompt TEXT | --chat FILE | --prefix P --suffix S)
                     [--max-tokens N] [--greedy | --temperature T [--seed S]] [--top-p P] [--top-k K]
                     [--stop STR ...] [--thinking] [--ids] [--key PUB ... | --data DIR]

The bundle is verified first, like everything the appliance loads: its manifest signature against the
public keys given with ``--key``, else the keys pinned in the data directory.

Text is printed as it is generated; with ``--ids`` the generated token ids are printed instead.
``--chat FILE`` is a JSON list of ``{"role": ..., "content": ...}`` objects. With ``--thinking`` the
reasoning goes to stderr as it is generated and the answer to stdout, as the API keeps them apart. A failed model run
(ONNX Runtime's error) ends with that error and exit status 1, after what was generated before it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from appliance.config import default_data_dir
from appliance.engine import ChatMessage, LLMEngine, PromptEncoder, SamplingParams
from shared.errors import EngineError, InputError

__all__ = ["register"]


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bundle", required=True, type=Path, help="model bundle directory")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompt", help="plain completion prompt")
    source.add_argument("--chat", type=Path, help="JSON file: a list of {role, content} messages")
    source.add_argument("--prefix", help="fill-in-the-middle: the code before the hole (with --suffix)")
    parser.add_argument("--suffix", help="fill-in-the-middle: the code after the hole")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--greedy", action="store_true", help="always the most likely token (default)")
    parser.add_argument("--temperature", type=float, help="sample at this temperature instead")
    parser.add_argument("--seed", type=int, help="seed for sampling: same seed, same output")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=0)
    parser.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    parser.add_argument("--thinking", action="store_true", help="chat in thinking mode")
    parser.add_argument("--ids", action="store_true", help="print generated token ids, not text")
    parser.add_argument("--key", type=Path, action="append", help="trusted model-signing public key (PEM)")
    parser.add_argument("--data", type=Path, help="data directory whose pinned keys to trust")
    parser.add_argument("--provider", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--device-ids", default="0", help="GPU ids for the pipeline stages, e.g. 0,1")
    parser.add_argument("--max-context", type=int, default=4096, help="cache capacity in tokens")
    parser.set_defaults(func=run)


def _params(args: argparse.Namespace) -> SamplingParams:
    if args.greedy and args.temperature is not None:
        raise InputError("--greedy and --temperature exclude each other")
    if args.seed is not None and args.temperature is None:
        raise InputError("--seed needs --temperature (greedy decoding uses no randomness)")
    if (args.prefix is None) != (args.suffix is None):
        raise InputError("--prefix and --suffix go together (fill-in-the-middle)")
    return SamplingParams(
        max_tokens=args.max_tokens,
        temperature=0.0 if args.temperature is None else args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        seed=args.seed,
        stop=tuple(args.stop),
    )


def _read_chat(path: Path) -> list[ChatMessage]:
    try:
        raw: Any = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{path}: cannot read the chat file: {exc}") from None
    if not isinstance(raw, list):
        raise InputError(f"{path}: expected a JSON list of {{role, content}} objects")
    messages = []
    for i, item in enumerate(raw):
        if (
            not isinstance(item, dict)
            or item.get("role") not in ("system", "user", "assistant")
            or not isinstance(item.get("content"), str)
        ):
            raise InputError(f"{path}: message {i} needs a role (system/user/assistant) and a string content")
        reasoning = item.get("reasoning_content")
        messages.append(
            ChatMessage(item["role"], item["content"], reasoning if isinstance(reasoning, str) else None)
        )
    return messages


def run(args: argparse.Namespace) -> int:
    params = _params(args)
    chat = _read_chat(args.chat) if args.chat is not None else None
    if args.thinking and chat is None:
        raise InputError("--thinking applies to --chat only")
    if args.thinking:
        params = dataclasses.replace(params, thinking=True)
    try:
        device_ids = tuple(int(p) for p in str(args.device_ids).split(",") if p.strip())
    except ValueError:
        raise InputError(f"--device-ids must be comma-separated integers, got {args.device_ids!r}") from None
    from appliance.model.bundle import load_bundle
    from appliance.model.signing import load_public_key, trusted_keys

    if args.key:
        keys = [load_public_key(path) for path in args.key]
    else:
        keys = trusted_keys(args.data or default_data_dir())
    engine = LLMEngine.from_bundle(
        load_bundle(args.bundle, trusted_keys=keys),
        provider=args.provider,
        device_ids=device_ids,
        num_slots=1,
        max_context=args.max_context,
    )
    encoder = PromptEncoder(engine.tokenizer)
    if chat is not None:
        prompt_ids = encoder.chat(chat, thinking=args.thinking)
    elif args.prefix is not None:
        prompt_ids = encoder.completion(args.prefix, args.suffix)
    else:
        prompt_ids = encoder.completion(args.prompt)
    engine.add_request("generate", prompt_ids, params)
    ids: list[int] = []
    error: str | None = None
    while engine.has_work:
        for output in engine.step():
            ids.extend(output.delta.token_ids)
            if output.delta.finish_reason == "error":
                error = output.error or "unknown error"
            if not args.ids:
                if output.delta.reasoning:
                    sys.stderr.write(output.delta.reasoning)
                    sys.stderr.flush()
                sys.stdout.write(output.delta.text)
                sys.stdout.flush()
    sys.stdout.write(" ".join(str(i) for i in ids) + "\n" if args.ids else "\n")
    if error is not None:
        raise EngineError(f"the model run failed after {len(ids)} generated token(s): {error}")
    return 0
