"""The demo model's data: corpus split, and the FIM/chat samples in the product's own formats."""

from __future__ import annotations

import ast
import random

from appliance.engine.prompt import FIM_BEGIN, FIM_END, FIM_HOLE
from appliance.engine.tokenizer import BOS_TOKEN, EOS_TOKEN
from appliance.model import demo_data

SOURCE = '''
class Box:
    def area(self, scale: int = 1) -> int:
        """The area, scaled.

        More text.
        """
        width = self.width * scale
        return width * self.height


def top(x):
    """Top level."""
    return x
'''


def test_held_out_files_exist_and_are_never_training_files() -> None:
    every = demo_data.stdlib_files()
    assert set(demo_data.HELD_OUT_FILES) <= set(every)
    assert not set(demo_data.HELD_OUT_FILES) & set(demo_data.training_files())
    assert not any(f.startswith(("test/", "encodings/")) for f in every)


def test_chat_samples_are_signature_docstring_then_a_body_that_completes_it() -> None:
    samples = sorted(demo_data.chat_samples(SOURCE), key=lambda s: SOURCE.index(s.prompt.splitlines()[0]))
    assert [s.prompt.splitlines()[0] for s in samples] == ["def area(self, scale: int = 1) -> int:", "def top(x):"]
    method = samples[0]
    assert method.prompt.endswith('\n    More text.\n    """')  # dedented with its def
    assert method.answer == "    width = self.width * scale\n    return width * self.height\n"
    for sample in samples:
        ast.parse(sample.prompt + "\n" + sample.answer)
    text = demo_data.chat_text(method)
    assert text.startswith(BOS_TOKEN + "<｜User｜>def area") and text.endswith(method.answer + EOS_TOKEN)


def test_fim_lines_mask_one_code_line_inside_a_function() -> None:
    lines = list(demo_data.fim_lines("x.py", SOURCE))
    assert [c.middle.strip() for c in lines] == ["width = self.width * scale", "return width * self.height", "return x"]
    for c in lines:
        assert c.prefix + c.middle + c.suffix in SOURCE


def test_fim_split_is_at_line_boundaries_and_renders_deepseeks_format() -> None:
    lines = SOURCE.splitlines(keepends=True)
    rng = random.Random(0)
    for _ in range(50):
        prefix, middle, suffix = demo_data.sample_fim_split(lines, rng)
        assert prefix + middle + suffix == SOURCE and middle.endswith("\n") and middle.strip()
        assert prefix == "" or prefix.endswith("\n")
    text = demo_data.fim_text("a\n", "b\n", "c\n")
    assert text == f"{BOS_TOKEN}{FIM_BEGIN}a\n{FIM_HOLE}c\n{FIM_END}b\n{EOS_TOKEN}"
