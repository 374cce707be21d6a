"""``enclave generate`` on the real demo bundle through the CLI entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from appliance.cli import main
from appliance.engine import ChatMessage, LLMEngine, PromptEncoder, SamplingParams
from tests.helpers.engine_demo import Demo, build_demo_model


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    return build_demo_model(tmp_path_factory.mktemp("gen"))


@pytest.fixture(scope="module")
def bundle(demo: Demo) -> Path:
    return demo.bundle_dir


@pytest.fixture(autouse=True)
def _trust(demo: Demo, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Commands read trusted keys from the data directory: pin the demo's signer in a fresh one.
    from appliance.model.signing import pin_public_key

    pin_public_key(tmp_path / "data", demo.key.public_key(), "demo")
    monkeypatch.setenv("ENCLAVE_DATA", str(tmp_path / "data"))


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["generate", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_ids_match_the_engine(demo: Demo, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, "--bundle", str(demo.bundle_dir), "--prompt", "def f", "--max-tokens", "6", "--ids"
    )
    engine = LLMEngine.from_bundle(demo.bundle())
    prompt = PromptEncoder(engine.tokenizer).completion("def f")
    expected = engine.generate([prompt], SamplingParams(temperature=0.0, max_tokens=6))[0]
    assert code == 0 and out.split() == [str(i) for i in expected]


def test_text_chat_and_fim(bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    chat = tmp_path / "chat.json"
    chat.write_text(json.dumps([{"role": "system", "content": "S"}, {"role": "user", "content": "hi"}]))
    code, out, _ = run(
        capsys, "--bundle", str(bundle), "--chat", str(chat), "--max-tokens", "5", "--thinking"
    )
    assert code == 0 and out.endswith("\n")
    code, fim_ids, _ = run(
        capsys, "--bundle", str(bundle), "--prefix", "a", "--suffix", "b", "--max-tokens", "5", "--ids"
    )
    assert code == 0 and len(fim_ids.split()) == 5


def test_thinking_puts_the_reasoning_on_stderr_and_the_answer_on_stdout(
    demo: Demo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    chat = tmp_path / "chat.json"
    chat.write_text(json.dumps([{"role": "user", "content": "def add(a, b):"}]))
    code, out, err = run(
        capsys, "--bundle", str(demo.bundle_dir), "--chat", str(chat), "--max-tokens", "8", "--thinking", "--greedy"
    )
    engine = LLMEngine.from_bundle(demo.bundle())
    prompt = PromptEncoder(engine.tokenizer).chat([ChatMessage("user", "def add(a, b):")], thinking=True)
    engine.add_request("r", prompt, SamplingParams(temperature=0.0, max_tokens=8, thinking=True))
    deltas = [o.delta for _ in range(8) for o in engine.step()]
    reasoning = "".join(d.reasoning for d in deltas)
    assert code == 0 and reasoning and reasoning in err
    assert out == "".join(d.text for d in deltas) + "\n"


def test_seeded_sampling_repeats(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--bundle", str(bundle), "--prompt", "x", "--temperature", "1.5", "--max-tokens", "8", "--ids"]
    first = run(capsys, *args, "--seed", "5")[1]
    assert run(capsys, *args, "--seed", "5")[1] == first
    assert run(capsys, *args, "--seed", "6")[1] != first


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--prefix", "a"], "--prefix and --suffix go together"),
        (["--prompt", "a", "--greedy", "--temperature", "1"], "exclude each other"),
        (["--prompt", "a", "--seed", "1"], "--seed needs --temperature"),
        (["--prompt", "a", "--max-tokens", "0"], "max_tokens must be at least 1"),
        (["--chat", "/nonexistent/chat.json"], "cannot read the chat file"),
        (["--prompt", "a", "--thinking"], "--thinking applies to --chat only"),
        (["--prompt", "a", "--device-ids", "x"], "--device-ids must be comma-separated integers"),
    ],
)
def test_bad_input_is_one_line(
    bundle: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    code, _, err = run(capsys, "--bundle", str(bundle), *extra)
    assert code == 1 and err.startswith("enclave: error:") and message in err
    assert err.count("\n") == 1


def test_missing_or_untrusted_bundle(demo: Demo, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "--bundle", str(tmp_path / "none"), "--prompt", "a")
    assert code == 1 and "not a bundle directory" in err and "Traceback" not in err
    stranger = tmp_path / "stranger.pub"
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from appliance.model.signing import public_pem

    stranger.write_bytes(public_pem(Ed25519PrivateKey.generate().public_key()))
    code, _, err = run(capsys, "--bundle", str(demo.bundle_dir), "--prompt", "a", "--key", str(stranger))
    assert code == 1 and "not a trusted model-signing key" in err
    code, out, _ = run(
        capsys, "--bundle", str(demo.bundle_dir), "--prompt", "a", "--key", str(demo.public_key), "--ids"
    )
    assert code == 0 and out.strip()


def test_a_failed_model_run_exits_non_zero(
    bundle: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first decode step fails in ONNX Runtime (as an allocation failure does on a real bundle):
    # the runner turns it into an EngineError and the engine ends the request with "error".
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

    from appliance.engine.runner import OrtRunner

    def fail(self: OrtRunner, seqs: object) -> None:
        raise ort_state.RuntimeException(
            "Failed to allocate memory for requested buffer of size 119789322240"
        )

    monkeypatch.setattr(OrtRunner, "_decode", fail)
    code, out, err = run(capsys, "--bundle", str(bundle), "--prompt", "def f", "--max-tokens", "6", "--ids")
    assert code == 1 and "Traceback" not in err
    assert len(out.split()) == 1  # the token the prefill produced, then the failure
    assert err == (
        "enclave: error: the model run failed after 1 generated token(s): ONNX Runtime failed during decode: "
        "Failed to allocate memory for requested buffer of size 119789322240\n"
    )
