from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import httpx
import pytest

from desktop.client.api import ApplianceClient, AuditQuery
from desktop.client.credentials import SERVICE, CredentialStore
from desktop.client.errors import CertificateMismatchError, UnreachableError
from desktop.client.profile import Profile, ProfileStore, normalize_url
from desktop.client.tls import ca_fingerprint
from shared.errors import (
    AuthError,
    ConfigError,
    InputError,
    IntegrityError,
    PermissionDeniedError,
    QuotaError,
)
from shared.schemas import ChatCompletionRequest, ChatMessageIn
from tests.helpers.desktop_keyring import MemoryKeyring
from tests.helpers.desktop_tls import https_server, make_ca


def test_credentials_live_in_the_keyring(memory_keyring: MemoryKeyring, tmp_path: Path) -> None:
    store = CredentialStore()  # the keyring selected by keyring.set_keyring
    store.save("https://a:1", "encl_secret")
    assert memory_keyring.secrets == {(SERVICE, "https://a:1"): "encl_secret"}
    assert store.load("https://a:1") == "encl_secret"
    store.delete("https://a:1")
    store.delete("https://a:1")  # twice is fine
    assert store.load("https://a:1") is None
    assert not any("encl_secret" in p.read_text(errors="ignore") for p in tmp_path.rglob("*") if p.is_file())


def test_profile_pins_the_ca_and_detects_a_swapped_file(tmp_path: Path) -> None:
    ca, other = make_ca("A"), make_ca("B")
    store = ProfileStore(tmp_path / "cfg")
    assert store.load() is None
    fp = ca_fingerprint(ca.pem)
    store.save(Profile("https://x:8443", fp, "ann"), ca.pem)
    assert store.load() == Profile("https://x:8443", fp, "ann")
    store.ca_file.write_bytes(other.pem)
    with pytest.raises(IntegrityError, match="replaced"):
        store.load()
    (tmp_path / "cfg" / "profile.json").write_text("{not json")
    with pytest.raises(ConfigError, match="damaged"):
        store.load()


def test_fingerprint_format_and_bad_input() -> None:
    ca = make_ca()
    fp = ca_fingerprint(ca.pem)
    assert len(fp.split(":")) == 32 and fp == fp.upper()
    with pytest.raises(InputError, match="PEM"):
        ca_fingerprint(b"hello")
    with pytest.raises(InputError, match="https"):
        normalize_url("http://plain:80")
    assert normalize_url(" https://h:1/ ") == "https://h:1"


def test_tls_is_checked_against_the_pinned_ca_only(tmp_path: Path) -> None:
    ca, impostor = make_ca("Appliance CA"), make_ca("Impostor CA")
    with https_server(ca, tmp_path) as url:
        good = ApplianceClient(url, ca_file=ca.write(tmp_path / "ca.pem"))
        assert good.health()["status"] == "ok"
        good.close()
        bad = ApplianceClient(url, ca_file=impostor.write(tmp_path / "other.pem"), ca_fingerprint="AB:CD")
        with pytest.raises(CertificateMismatchError, match="not issued by the pinned CA"):
            bad.health()
        bad.close()


def test_unreachable(tmp_path: Path) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    client = ApplianceClient(f"https://127.0.0.1:{port}", ca_file=make_ca().write(tmp_path / "ca.pem"))
    with pytest.raises(UnreachableError, match="cannot reach"):
        client.health()


def _sse(*payloads: object) -> bytes:
    return b"".join(b"data: " + json.dumps(p).encode() + b"\n\n" for p in payloads) + b"data: [DONE]\n\n"


def _chunk(text: str | None, finish: str | None = None) -> dict[str, object]:
    return {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]}


def test_streaming_chat_and_error_envelopes() -> None:
    seen: dict[str, object] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/chat/completions":
            seen["body"] = json.loads(request.content)
            seen["auth"] = request.headers.get("authorization")
            return httpx.Response(200, content=_sse(_chunk("Hel"), _chunk("lo"), _chunk(None, "stop")),
                                  headers={"content-type": "text/event-stream"})
        codes = {"/v1/models": (401, "invalid_api_key", "token expired"),
                 "/v1/admin/users": (403, "permission_denied", "needs admin"),
                 "/v1/audit/events": (429, "rate_limit_exceeded", "slow down")}
        status, code, message = codes[request.url.path]
        return httpx.Response(status, json={"error": {"message": message, "type": "x", "code": code}})

    client = ApplianceClient("https://fake", token="encl_t", transport=httpx.MockTransport(handler))
    req = ChatCompletionRequest(model="m", messages=[ChatMessageIn(role="user", content="hi")])
    events = list(client.stream_chat(req))
    assert "".join(e.text for e in events) == "Hello"
    assert events[-1].finish_reason == "stop"
    assert seen["auth"] == "Bearer encl_t"
    body = seen["body"]
    assert isinstance(body, dict) and body["stream"] is True and body["messages"][0]["content"] == "hi"
    with pytest.raises(AuthError, match="token expired"):
        client.models()
    with pytest.raises(PermissionDeniedError, match="needs admin"):
        client.users()
    with pytest.raises(QuotaError, match="slow down"):
        client.audit_events(AuditQuery(actor="ann"))


def test_cancelling_a_stream_stops_reading() -> None:
    cancel = threading.Event()

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=_sse(*[_chunk(str(i)) for i in range(50)]))

    client = ApplianceClient("https://fake", transport=httpx.MockTransport(handler))
    got = []
    for event in client.stream_chat(ChatCompletionRequest(model="m", messages=[ChatMessageIn(role="user", content="x")]), cancel):
        got.append(event.text)
        if len(got) == 3:
            cancel.set()
    assert got == ["0", "1", "2"]


def test_export_is_written_whole_or_not_at_all(tmp_path: Path) -> None:
    def ok(request: httpx.Request) -> httpx.Response:
        assert request.url.params["format"] == "cef"
        return httpx.Response(200, content=b"CEF:0|a\nCEF:0|b\n")

    def denied(request: httpx.Request) -> httpx.Response:
        return httpx.Response(403, json={"error": {"message": "auditors only", "type": "x", "code": "permission_denied"}})

    dest = tmp_path / "out.cef"
    assert ApplianceClient("https://f", transport=httpx.MockTransport(ok)).audit_export("cef", dest) == 2
    assert dest.read_bytes() == b"CEF:0|a\nCEF:0|b\n"
    dest2 = tmp_path / "denied.cef"
    with pytest.raises(PermissionDeniedError):
        ApplianceClient("https://f", transport=httpx.MockTransport(denied)).audit_export("cef", dest2)
    assert not dest2.exists() and not list(tmp_path.glob("*.part"))


def test_context_too_long_carries_the_numbers() -> None:
    from desktop.client.errors import ContextTooLongError

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"error": {
            "message": "This model's maximum context length is 4096 tokens; the prompt has 7930 tokens plus max_tokens 48.",
            "type": "invalid_request_error", "code": "context_length_exceeded"}})

    client = ApplianceClient("https://f", transport=httpx.MockTransport(handler))
    with pytest.raises(ContextTooLongError) as caught:
        list(client.stream_chat(ChatCompletionRequest(model="m", messages=[ChatMessageIn(role="user", content="x")])))
    assert (caught.value.limit, caught.value.prompt_tokens) == (4096, 7930)


def test_file_based_keyring_backends_are_refused() -> None:
    class PlaintextKeyring(MemoryKeyring):
        pass

    PlaintextKeyring.__module__ = "keyrings.alt.file"
    backend = PlaintextKeyring()
    store = CredentialStore(backend)
    with pytest.raises(ConfigError, match="stores secrets in a file"):
        store.save("https://a:1", "encl_x")
    assert backend.secrets == {}


def test_no_keyring_at_all_is_a_clear_error() -> None:
    from keyring.backends.fail import Keyring as NoKeyring

    store = CredentialStore(NoKeyring())
    assert store.problem is not None and "no system keyring is available" in store.problem
    with pytest.raises(ConfigError, match="cannot store the token: no system keyring"):
        store.save("https://a:1", "encl_x")
    assert store.load("https://a:1") is None  # nothing stored: "sign in", not an error


def test_session_only_keeps_the_token_in_memory(tmp_path: Path) -> None:
    from keyring.backends.fail import Keyring as NoKeyring

    store = CredentialStore(NoKeyring())
    store.use_session_only()
    store.save("https://a:1", "encl_secret")
    assert store.session_only and store.load("https://a:1") == "encl_secret"
    store.delete("https://a:1")
    assert store.load("https://a:1") is None
    assert CredentialStore(NoKeyring()).load("https://a:1") is None  # a new process has nothing


def test_a_certificate_for_another_name_is_explained(tmp_path: Path) -> None:
    ca = make_ca()
    with https_server(ca, tmp_path, ip_san=False) as url:  # valid for "localhost" only
        client = ApplianceClient(url, ca_file=ca.write(tmp_path / "ca.pem"))
        with pytest.raises(CertificateMismatchError, match=r"mismatch.*host name the appliance's certificate"):
            client.health()
        client.close()
