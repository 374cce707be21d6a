"""Appliance settings: one frozen dataclass, loaded from ``<data>/enclave.toml`` plus ``ENCLAVE_*``.

Precedence, lowest first: defaults, the settings file, environment variables. Every field can be
set in the file by its name (``port = 8443``) and in the environment as ``ENCLAVE_<NAME>``
(``ENCLAVE_PORT=8443``). Unknown keys and values of the wrong type are errors a person can act on.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

from shared.errors import ConfigError

__all__ = ["SETTINGS_FILE", "Settings", "default_data_dir", "load_settings"]

SETTINGS_FILE = "enclave.toml"


def default_data_dir() -> Path:
    """``$ENCLAVE_DATA`` if set, else the platform's per-user data directory."""
    env = os.environ.get("ENCLAVE_DATA")
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_data_dir("enclave", appauthor=False))


@dataclass(frozen=True, kw_only=True)
class Settings:
    data_dir: Path
    # SQLAlchemy URL; empty means the embedded default, SQLite at <data>/enclave.db.
    database_url: str = ""
    host: str = "127.0.0.1"
    port: int = 8443
    # Plain HTTP is allowed only on loopback and only when asked for (see api.server).
    insecure_http: bool = False
    # Largest accepted request body, bytes.
    max_body_bytes: int = 4 * 1024 * 1024
    # One HTTP connection (appliance/api/conn_guard.py): request head size and how long a head and a
    # body may take to arrive, and open connections per client address.
    http_max_header_bytes: int = 64 * 1024
    http_header_timeout_s: float = 10.0
    http_body_timeout_s: float = 60.0
    http_max_connections_per_address: int = 64
    # Largest prompt text (UTF-8 bytes, all messages together) a generation request may carry: it
    # bounds the tokenizer's work per request before any is done (refused with 400, audited).
    max_prompt_bytes: int = 2 * 1024 * 1024
    # Reverse proxies (comma-separated addresses or CIDRs, e.g. "127.0.0.1,10.0.0.0/8") whose
    # X-Forwarded-For is believed: the client address is then the nearest hop not among them.
    # Empty: the TCP peer is the client, and X-Forwarded-For is ignored.
    trusted_proxies: str = ""
    # Session tokens from /v1/auth/login live this long, seconds.
    session_ttl_s: int = 8 * 3600
    # Below this much free space on the data directory, new generations are refused (503) and
    # /readyz, /metrics raise the alarm: the append-only audit log must never meet a full disk.
    disk_min_free_bytes: int = 512 * 1024 * 1024
    # Unauthenticated failures (unknown or malformed tokens, throttled logins): per interval, each
    # source's first N are recorded one by one, at most M in all; the rest are counted into one
    # summary record per interval (appliance/api/flood.py).
    audit_unauth_interval_s: float = 60.0
    audit_unauth_per_source: int = 10
    audit_unauth_per_interval: int = 600
    # Audit: a signed checkpoint every N events or T seconds, whichever comes first.
    audit_checkpoint_every: int = 1000
    audit_checkpoint_interval_s: float = 300.0
    # Optional RFC 5424 syslog forwarding over TCP, "host:port"; empty disables it.
    audit_syslog: str = ""
    # Sealed audit content older than this many days is crypto-shredded; 0 keeps it forever.
    audit_sealed_retention_days: int = 0
    # How many auditors a read of sealed content takes: 1 (any auditor reads) or 2 (another auditor
    # must approve the reader's request first; the read's record names both).
    sealed_read_approvals: int = 1
    # Engine.
    execution_provider: str = "cpu"  # "cpu" or "cuda"
    device_ids: tuple[int, ...] = (0,)
    max_batch: int = 16
    max_waiting: int = 256
    # Most choices one request may ask for (`n`); they share one prefill but each holds a cache slot.
    max_n: int = 8
    intra_op_threads: int = 0  # 0 = let ONNX Runtime decide
    # A prompt is prefilled in calls of prefill_chunk tokens; 0 = the most whose activations fit
    # prefill_memory_mb (estimated from the model's dimensions: appliance/engine/memory.py).
    prefill_chunk: int = 0
    prefill_memory_mb: int = 4096
    # Browser origins allowed to call the API cross-origin (CORS), comma-separated, exact
    # ("https://ide.example.com"); empty = CORS off, which is the default.
    cors_origins: str = ""
    # Which installed model to serve; empty = the newest installed.
    model: str = ""
    # OpenID Connect single sign-on; an empty issuer turns it off. The issuer must be https
    # (plain http only on loopback, for tests). The secret is better given as ENCLAVE_OIDC_CLIENT_SECRET.
    oidc_issuer: str = ""
    oidc_client_id: str = ""
    oidc_client_secret: str = ""
    oidc_scopes: str = "openid profile email groups"
    oidc_username_claim: str = "preferred_username"
    oidc_groups_claim: str = "groups"
    # Allowed difference between our clock and the provider's, seconds (at most 300).
    oidc_clock_skew_s: int = 60
    # Cached signing keys keep verifying through a provider outage this long, seconds.
    oidc_jwks_max_age_s: int = 24 * 3600
    # Redirect URIs besides RFC 8252 loopback ones, comma-separated (e.g. a web front end's).
    oidc_redirect_uris: str = ""
    # LDAP / Active Directory sign-in (POST /v1/auth/ldap/login); an empty URL turns it off. Only
    # over TLS: ldaps://host[:636], or ldap://host[:389] with ldap_starttls = true. The directory's
    # certificate is checked against ldap_ca_file (the site CA, PEM; empty: the system's CAs).
    ldap_url: str = ""
    ldap_starttls: bool = False
    ldap_ca_file: str = ""
    # The service account that searches for users (never an anonymous bind). The password is
    # better given as ENCLAVE_LDAP_BIND_PASSWORD.
    ldap_bind_dn: str = ""
    ldap_bind_password: str = ""
    ldap_user_base: str = ""
    # {username} is replaced by the typed name, escaped (RFC 4515). AD: (sAMAccountName={username}).
    ldap_user_filter: str = "(&(objectClass=person)(uid={username}))"
    # Empty: groups are the user entry's memberOf. Else groups under this base matching
    # ldap_group_filter ({dn}: the user's DN, {username}: the typed name).
    ldap_group_base: str = ""
    ldap_group_filter: str = "(&(objectClass=groupOfNames)(member={dn}))"
    ldap_timeout_s: float = 5.0
    # "on": everyone may sign in with a password; "break_glass": only break_glass_admin may.
    password_login: str = "on"
    break_glass_admin: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def trusted_proxy_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return _networks(self.trusted_proxies)

    @property
    def cors_origin_list(self) -> tuple[str, ...]:
        return tuple(o.strip() for o in self.cors_origins.split(",") if o.strip())

    @property
    def settings_file(self) -> Path:
        return self.data_dir / SETTINGS_FILE

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'enclave.db'}"

    @property
    def keys_dir(self) -> Path:
        return self.data_dir / "keys"

    @property
    def tls_dir(self) -> Path:
        return self.data_dir / "tls"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"


_FIELDS = {f.name: f for f in dataclasses.fields(Settings) if f.name not in ("data_dir", "extra")}


def _coerce(name: str, raw: Any, source: str) -> Any:
    default = getattr(Settings(data_dir=Path(".")), name)
    try:
        if isinstance(default, bool):
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if isinstance(default, int):
            if isinstance(raw, bool):
                raise ValueError(raw)
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, tuple):
            items = raw if isinstance(raw, list) else [p for p in str(raw).split(",") if p.strip()]
            return tuple(int(p) for p in items)
        if isinstance(raw, (dict, list)):
            raise ValueError(raw)
        return str(raw)
    except (TypeError, ValueError):
        kind = type(default).__name__
        raise ConfigError(f"{source}: {name} must be a {kind}, got {raw!r}") from None


def load_settings(
    data_dir: Path | str | None = None, *, environ: Mapping[str, str] | None = None
) -> Settings:
    """Read settings for ``data_dir`` (default: :func:`default_data_dir`).

    A missing settings file is fine (defaults apply); an unreadable or invalid one is a ConfigError.
    """
    env = os.environ if environ is None else environ
    base = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    if base.exists() and not base.is_dir():
        raise ConfigError(f"data directory {base} is not a directory")
    values: dict[str, Any] = {}
    path = base / SETTINGS_FILE
    if path.exists():
        try:
            document = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read settings: {exc}") from None
        for key, raw in document.items():
            if key not in _FIELDS:
                raise ConfigError(f"{path}: unknown setting {key!r}")
            values[key] = _coerce(key, raw, str(path))
    for name in _FIELDS:
        env_key = f"ENCLAVE_{name.upper()}"
        if env_key in env:
            values[name] = _coerce(name, env[env_key], env_key)
    settings = Settings(data_dir=base, **values)
    _validate(settings)
    return settings


def _validate(s: Settings) -> None:
    for origin in s.cors_origin_list:
        if origin == "*" or "://" not in origin or origin.endswith("/"):
            raise ConfigError(
                f"cors_origins: {origin!r} is not an origin (scheme://host[:port], no wildcard, no path)"
            )
    if not 0 < s.port < 65536:
        raise ConfigError(f"port must be 1..65535, got {s.port}")
    if s.execution_provider not in ("cpu", "cuda"):
        raise ConfigError(f"execution_provider must be 'cpu' or 'cuda', got {s.execution_provider!r}")
    if s.max_batch < 1 or s.max_waiting < 0:
        raise ConfigError("max_batch must be >= 1 and max_waiting >= 0")
    if s.prefill_chunk < 0 or s.prefill_memory_mb < 1:
        raise ConfigError("prefill_chunk must be >= 0 (0: sized from prefill_memory_mb), prefill_memory_mb >= 1")
    if not 1 <= s.max_n <= 128:
        raise ConfigError(f"max_n must be in 1..128 (choices per request), got {s.max_n}")
    if s.audit_checkpoint_every < 1 or s.audit_checkpoint_interval_s <= 0:
        raise ConfigError("audit_checkpoint_every must be >= 1 and audit_checkpoint_interval_s > 0")
    if s.audit_sealed_retention_days < 0:
        raise ConfigError("audit_sealed_retention_days must be >= 0 (0 keeps sealed content forever)")
    if s.sealed_read_approvals not in (1, 2):
        raise ConfigError(
            f"sealed_read_approvals must be 1 (one auditor reads) or 2 (a second auditor approves), got {s.sealed_read_approvals}"
        )
    if (
        s.http_max_header_bytes < 1024
        or s.http_header_timeout_s <= 0
        or s.http_body_timeout_s <= 0
        or s.http_max_connections_per_address < 1
    ):
        raise ConfigError(
            "http_max_header_bytes must be >= 1024, http_*_timeout_s > 0, http_max_connections_per_address >= 1"
        )
    if s.disk_min_free_bytes < 0:
        raise ConfigError("disk_min_free_bytes must be >= 0")
    if s.audit_unauth_interval_s <= 0 or s.audit_unauth_per_source < 0 or s.audit_unauth_per_interval < 0:
        raise ConfigError(
            "audit_unauth_interval_s must be > 0, audit_unauth_per_source and audit_unauth_per_interval >= 0"
        )
    if s.max_prompt_bytes < 1:
        raise ConfigError("max_prompt_bytes must be >= 1")
    _networks(s.trusted_proxies)
    _validate_identity(s)
    if s.session_ttl_s < 60:
        raise ConfigError("session_ttl_s must be at least 60 seconds")


def _networks(spec: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    try:
        return tuple(ipaddress.ip_network(p.strip(), strict=False) for p in spec.split(",") if p.strip())
    except ValueError as exc:
        raise ConfigError(f"trusted_proxies: {exc}") from None


def _validate_identity(s: Settings) -> None:
    if s.oidc_issuer:
        parts = urllib.parse.urlsplit(s.oidc_issuer)
        loopback = parts.hostname in ("127.0.0.1", "::1", "localhost")
        if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
            raise ConfigError(f"oidc_issuer must be an https:// URL, got {s.oidc_issuer!r}")
        if not s.oidc_client_id:
            raise ConfigError("oidc_issuer is set but oidc_client_id is empty")
    if not 0 <= s.oidc_clock_skew_s <= 300:
        raise ConfigError("oidc_clock_skew_s must be 0..300 seconds")
    if s.oidc_jwks_max_age_s < 60:
        raise ConfigError("oidc_jwks_max_age_s must be at least 60 seconds")
    _validate_ldap(s)
    if s.password_login not in ("on", "break_glass"):
        raise ConfigError(f"password_login must be 'on' or 'break_glass', got {s.password_login!r}")
    if s.password_login == "break_glass" and not s.break_glass_admin:
        raise ConfigError(
            "password_login = 'break_glass' needs break_glass_admin (the one local admin allowed)"
        )


def _validate_ldap(s: Settings) -> None:
    if not s.ldap_url:
        return
    parts = urllib.parse.urlsplit(s.ldap_url)
    if parts.scheme not in ("ldap", "ldaps") or not parts.hostname or parts.path not in ("", "/"):
        raise ConfigError(f"ldap_url must be ldaps://host[:port] or ldap://host[:port], got {s.ldap_url!r}")
    if parts.scheme == "ldap" and not s.ldap_starttls:
        raise ConfigError("ldap_url is plain ldap://: set ldap_starttls = true or use ldaps:// (passwords never travel in clear)")
    if parts.scheme == "ldaps" and s.ldap_starttls:
        raise ConfigError("ldap_starttls is for ldap:// URLs; ldaps:// is TLS already")
    if s.ldap_ca_file and not Path(s.ldap_ca_file).is_file():
        raise ConfigError(f"ldap_ca_file {s.ldap_ca_file!r} is not a file")
    if not s.ldap_bind_dn:
        # The password may come from the environment of `enclave serve` alone; an empty one is
        # refused at sign-in (appliance.auth.ldap), never used for an unauthenticated bind.
        raise ConfigError("ldap_url is set but ldap_bind_dn is empty (anonymous binds are not used)")
    if not s.ldap_user_base:
        raise ConfigError("ldap_url is set but ldap_user_base is empty")
    if "{username}" not in s.ldap_user_filter:
        raise ConfigError("ldap_user_filter must contain {username}")
    if s.ldap_group_base and "{dn}" not in s.ldap_group_filter and "{username}" not in s.ldap_group_filter:
        raise ConfigError("ldap_group_filter must contain {dn} or {username}")
    if not 0 < s.ldap_timeout_s <= 60:
        raise ConfigError("ldap_timeout_s must be more than 0 and at most 60 seconds")
