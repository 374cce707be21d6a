"""A small byte-level BPE tokenizer with DeepSeek V4's special tokens, trained in a blink.

Characters missing from the training text (emoji, CJK, most accented letters) come out as one token
per UTF-8 byte, which is exactly what the detokenizer tests need.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from appliance.engine.tokenizer import Tokenizer

SPECIAL_TOKENS = [
    "<｜begin▁of▁sentence｜>",
    "<｜end▁of▁sentence｜>",
    "<｜User｜>",
    "<｜Assistant｜>",
    "<think>",
    "</think>",
]
FIM_TOKENS = ["<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"]

_CORPUS = [
    "def hello(name):\n    return f'Hello, {name}!'\n",
    "The quick brown fox jumps over the lazy dog. STOP and think about it.",
    "import numpy as np\nx = np.zeros(3)\nprint(x)\n",
    "hello world, this is a small tokenizer for tests of the engine",
] * 20


def build_hf_tokenizer(*, fim: bool = True, vocab_size: int = 400) -> HFTokenizer:
    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS + (FIM_TOKENS if fim else []),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS, trainer=trainer)
    return tok


def build_tokenizer(*, fim: bool = True) -> Tokenizer:
    return Tokenizer(build_hf_tokenizer(fim=fim))


def write_tokenizer(path: Path, *, fim: bool = True) -> Path:
    build_hf_tokenizer(fim=fim).save(str(path))
    return path
