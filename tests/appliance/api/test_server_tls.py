"""A real uvicorn server over TLS on loopback, driven by the real ``openai`` client pinned to our CA."""

from __future__ import annotations

import datetime as dt
import hashlib
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from appliance.api.server import bind, run_in_thread
from appliance.api.tls import ca_fingerprint, create_tls, tls_files
from shared.errors import ConfigError
from tests.appliance.api.conftest import Appliance, build_appliance
from tests.helpers.fake_engine import FakeEngine


@dataclass
class Served:
    appliance: Appliance
    url: str
    ca: Path

    def client(self, who: str = "dev") -> openai.OpenAI:
        http = openai.DefaultHttpxClient(verify=ssl.create_default_context(cafile=str(self.ca)))
        return openai.OpenAI(
            base_url=f"{self.url}/v1", api_key=self.appliance.tokens[who], http_client=http, max_retries=0
        )


@pytest.fixture
def served(tmp_path: Path, sqlite_url: str) -> Iterator[Served]:
    a = build_appliance(tmp_path, sqlite_url, engine=FakeEngine(reply="Hello, world!"))
    files = create_tls(tmp_path / "tls", now=dt.datetime.now(dt.UTC))
    listener = bind("127.0.0.1", 0, tls=files, insecure_http=False)
    try:
        with run_in_thread(a.app, listener) as url:
            yield Served(a, url, files.ca_cert)
    finally:
        a.close()


def test_streamed_chat_with_openai_client(served: Served) -> None:
    stream = served.client().chat.completions.create(
        model="fake-model",
        messages=[{"role": "user", "content": "say hello"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello, world!"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens == len("Hello, world!")
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_completions_with_suffix_streamed_and_not(served: Served) -> None:
    client = served.client()
    whole = client.completions.create(
        model="fake-model", prompt="def add(a, b):\n", suffix="\n", max_tokens=5
    )
    assert whole.object == "text_completion"
    assert whole.choices[0].text == "Hello"
    assert whole.choices[0].finish_reason == "length"
    assert whole.usage is not None and whole.usage.completion_tokens == 5
    parts = list(
        client.completions.create(model="fake-model", prompt="x = ", suffix="\n", stream=True, stop=["world"])
    )
    assert "".join(p.choices[0].text for p in parts) == "Hello, "
    assert parts[-1].choices[0].finish_reason == "stop"
    assert served.appliance.engine.requests[-1].prompt_ids[0] == 256  # FIM encoding reached the engine


def test_openai_client_sees_openai_errors(served: Served) -> None:
    with pytest.raises(openai.NotFoundError):
        served.client().chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError):
        served.client().chat.completions.create(
            model="fake-model", messages=[{"role": "user", "content": "x"}], n=99
        )
    with pytest.raises(openai.PermissionDeniedError):
        served.client("aud").chat.completions.create(
            model="fake-model", messages=[{"role": "user", "content": "x"}]
        )
    bad = openai.OpenAI(
        base_url=f"{served.url}/v1",
        api_key="encl_wrong",
        max_retries=0,
        http_client=openai.DefaultHttpxClient(verify=ssl.create_default_context(cafile=str(served.ca))),
    )
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    assert [m.id for m in served.client().models.list()] == ["fake-model"]


def test_unpinned_client_is_refused(served: Served) -> None:
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{served.url}/healthz", verify=True)
    assert (
        httpx.get(
            f"{served.url}/healthz", verify=ssl.create_default_context(cafile=str(served.ca))
        ).status_code
        == 200
    )


def test_client_disconnect_cancels_generation_and_is_audited(tmp_path: Path, sqlite_url: str) -> None:
    engine = FakeEngine(words=100_000, token_delay_s=0.01)
    a = build_appliance(tmp_path, sqlite_url, engine=engine)
    files = create_tls(tmp_path / "tls", now=dt.datetime.now(dt.UTC))
    try:
        with run_in_thread(a.app, bind("127.0.0.1", 0, tls=files, insecure_http=False)) as url:
            client = openai.OpenAI(
                base_url=f"{url}/v1",
                api_key=a.tokens["dev"],
                max_retries=0,
                http_client=openai.DefaultHttpxClient(
                    verify=ssl.create_default_context(cafile=str(files.ca_cert))
                ),
            )
            stream = client.chat.completions.create(
                model="fake-model", messages=[{"role": "user", "content": "go on"}], stream=True
            )
            for i, _ in enumerate(stream):
                if i == 3:
                    break
            stream.close()
            deadline = time.monotonic() + 30
            while not a.records("generation.cancelled") and time.monotonic() < deadline:
                time.sleep(0.05)
        assert engine.requests[-1].outcome == "cancelled"
        cancelled = a.records("generation.cancelled")
        assert len(cancelled) == 1 and cancelled[0]["outcome"] == "cancelled"
        assert cancelled[0]["details"]["finish_reason"] == "cancelled"  # type: ignore[index]
        assert a.records("generation.completed") == []
    finally:
        a.close()


def test_tls_material_and_fingerprint(tmp_path: Path) -> None:
    files = create_tls(tmp_path / "tls", now=dt.datetime.now(dt.UTC), hosts=["enclave.example.internal"])
    ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
    assert server.issuer == ca.subject
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "enclave.example.internal" in sans.get_values_for_type(x509.DNSName)
    assert files.server_key.stat().st_mode & 0o777 == 0o600
    assert files.ca_key.stat().st_mode & 0o777 == 0o600
    expected = hashlib.sha256(ca.public_bytes(serialization.Encoding.DER)).hexdigest().upper()
    assert ca_fingerprint(files.ca_cert).replace(":", "") == expected
    with pytest.raises(ConfigError, match="already holds"):
        create_tls(tmp_path / "tls", now=dt.datetime.now(dt.UTC))


def test_plain_http_only_on_loopback_and_only_when_asked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="insecure-http"):
        bind("127.0.0.1", 0, tls=None, insecure_http=False)
    with pytest.raises(ConfigError, match="only on loopback"):
        bind("0.0.0.0", 0, tls=None, insecure_http=True)
    with pytest.raises(ConfigError, match="TLS files missing"):
        bind("127.0.0.1", 0, tls=tls_files(tmp_path), insecure_http=False)
    listener = bind("127.0.0.1", 0, tls=None, insecure_http=True)
    try:
        assert listener.url.startswith("http://127.0.0.1:")
        with pytest.raises(ConfigError, match="cannot listen"):
            bind("127.0.0.1", listener.port, tls=None, insecure_http=True)
    finally:
        listener.sock.close()
