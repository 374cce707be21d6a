"""OpenID Connect, the protocol half: discovery, the authorization URL (code flow + PKCE S256,
``state``, ``nonce``), the code exchange and ID-token verification against the provider's JWKS.

Nothing here touches the database (:mod:`appliance.auth.sso` does). JWTs are handled by joserfc
only: signature (RS/ES/PS algorithms; never ``none`` or HMAC with a public key), then issuer,
audience (and ``azp`` when there are several), ``exp``/``iat``/``nbf`` with a bounded clock skew and
the flow's ``nonce``. The JWKS is cached: a token whose ``kid`` is unknown triggers one refetch (key
rotation), at most once per :data:`_REFETCH_EVERY`; when the provider is unreachable the cached keys
keep verifying (a short IdP outage does not lock out users), up to ``jwks_max_age_s``.

The provider is the only host contacted. ``transport`` is the I/O seam (an ``httpx`` transport).
"""

from __future__ import annotations

import datetime as dt
import secrets
import threading
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc import jws, jwt
from joserfc.errors import (
    BadSignatureError,
    ClaimError,
    ExpiredTokenError,
    InvalidClaimError,
    JoseError,
    MissingClaimError,
)
from joserfc.jwk import KeySet

from shared.errors import AuthError, ConfigError

__all__ = ["AuthRequest", "IdTokenError", "OidcClient", "OidcError"]

_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")
_REFETCH_EVERY = dt.timedelta(seconds=30)
_TIMEOUT = httpx.Timeout(10.0)


class OidcError(AuthError):
    """The provider could not be reached or refused us (discovery, JWKS, token endpoint)."""

    def __init__(self, message: str, *, reason: str = "idp_error") -> None:
        super().__init__(message, reason=reason)


class IdTokenError(AuthError):
    """An ID token failed verification; ``reason`` names the check (``bad_signature``, ``expired``,
    ``wrong_audience``, ``wrong_issuer``, ``wrong_nonce``, ``malformed``, ``unknown_key``...)."""


@dataclass(frozen=True, kw_only=True)
class AuthRequest:
    """What :meth:`OidcClient.begin` made: send the user to ``url``; keep the rest server-side."""

    url: str
    state: str
    nonce: str
    code_verifier: str


class OidcClient:
    def __init__(
        self,
        *,
        issuer: str,
        client_id: str,
        client_secret: str,
        scopes: str = "openid profile email groups",
        clock_skew_s: int = 60,
        jwks_max_age_s: int = 24 * 3600,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not issuer or not client_id:
            raise ConfigError("OIDC needs oidc_issuer and oidc_client_id")
        self.issuer = issuer.rstrip("/")
        self.client_id = client_id
        self._secret = client_secret
        self.scopes = scopes
        self.clock_skew_s = clock_skew_s
        self._jwks_max_age = dt.timedelta(seconds=jwks_max_age_s)
        self._http = httpx.Client(transport=transport, timeout=_TIMEOUT, follow_redirects=False)
        self._lock = threading.Lock()
        self._metadata: dict[str, Any] | None = None
        self._keys: KeySet | None = None
        self._keys_at: dt.datetime | None = None
        self._tried_at: dt.datetime | None = None

    def close(self) -> None:
        self._http.close()

    # -- provider documents -------------------------------------------------------------------

    def _get_json(self, url: str, what: str) -> dict[str, Any]:
        try:
            response = self._http.get(url)
        except httpx.HTTPError as exc:
            raise OidcError(f"identity provider unreachable ({what}): {type(exc).__name__}") from None
        if response.status_code != 200:
            raise OidcError(f"identity provider answered {response.status_code} for its {what}")
        try:
            body = response.json()
        except ValueError:
            raise OidcError(f"identity provider's {what} is not JSON") from None
        if not isinstance(body, dict):
            raise OidcError(f"identity provider's {what} is not a JSON object")
        return body

    def metadata(self) -> dict[str, Any]:
        """The discovery document, fetched once and checked to be this issuer's."""
        with self._lock:
            if self._metadata is None:
                doc = self._get_json(f"{self.issuer}/.well-known/openid-configuration", "discovery document")
                if str(doc.get("issuer", "")).rstrip("/") != self.issuer:
                    raise OidcError(
                        f"discovery document names issuer {doc.get('issuer')!r}, not {self.issuer!r}"
                    )
                for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
                    if not isinstance(doc.get(key), str):
                        raise OidcError(f"discovery document lacks {key}")
                self._metadata = doc
            return self._metadata

    def _key_set(self, kid: str | None, now: dt.datetime) -> KeySet:
        """Cached keys; refetched when ``kid`` is unknown (rotation) or the cache is old."""
        jwks_uri = self.metadata()["jwks_uri"]
        with self._lock:
            known = self._keys is not None and (kid is None or _has_kid(self._keys, kid))
            fresh = self._keys_at is not None and now - self._keys_at < self._jwks_max_age
            may_try = self._tried_at is None or now - self._tried_at >= _REFETCH_EVERY
            if known and fresh:
                return self._keys  # type: ignore[return-value]
            if may_try or self._keys is None or not fresh:
                if self._keys is not None and fresh:
                    # An unknown kid: refetch, but not on every forged token.
                    self._tried_at = now
                try:
                    self._keys = KeySet.import_key_set(self._get_json(jwks_uri, "key set"))  # type: ignore[arg-type]
                    self._keys_at = now
                except OidcError:
                    if self._keys is None or not fresh:
                        raise
                    # Outage: keep verifying with the keys we hold.
                except JoseError as exc:
                    raise OidcError(f"identity provider's key set is unusable: {exc}") from None
            if self._keys is None or not (self._keys_at and now - self._keys_at < self._jwks_max_age):
                raise OidcError("identity provider's key set is unavailable")
            return self._keys

    # -- the flow ---------------------------------------------------------------------------

    def begin(self, redirect_uri: str) -> AuthRequest:
        meta = self.metadata()
        state = secrets.token_urlsafe(32)
        nonce = secrets.token_urlsafe(32)
        verifier = secrets.token_urlsafe(64)
        query = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": redirect_uri,
            "scope": self.scopes,
            "state": state,
            "nonce": nonce,
            "code_challenge": create_s256_code_challenge(verifier),
            "code_challenge_method": "S256",
        }
        endpoint = str(meta["authorization_endpoint"])
        glue = "&" if "?" in endpoint else "?"
        return AuthRequest(
            url=endpoint + glue + urllib.parse.urlencode(query),
            state=state,
            nonce=nonce,
            code_verifier=verifier,
        )

    def redeem(self, code: str, *, redirect_uri: str, code_verifier: str) -> str:
        """Exchange ``code`` at the token endpoint; returns the raw ID token."""
        meta = self.metadata()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": code_verifier,
        }
        try:
            if self._secret:
                response = self._http.post(
                    str(meta["token_endpoint"]), data=form, auth=(self.client_id, self._secret)
                )
            else:
                # A public client (PKCE alone proves it is the one that started the flow).
                form["client_id"] = self.client_id
                response = self._http.post(str(meta["token_endpoint"]), data=form)
        except httpx.HTTPError as exc:
            raise OidcError(f"identity provider unreachable (token endpoint): {type(exc).__name__}") from None
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.status_code != 200:
            error = body.get("error_description") or body.get("error") or f"HTTP {response.status_code}"
            raise OidcError(f"identity provider refused the code: {error}", reason="code_refused")
        id_token = body.get("id_token")
        if not isinstance(id_token, str) or not id_token:
            raise OidcError("identity provider returned no ID token", reason="no_id_token")
        return id_token

    def verify(self, id_token: str, *, nonce: str, now: dt.datetime) -> dict[str, Any]:
        """The ID token's claims once signature, issuer, audience, time and nonce all check out."""
        try:
            header = jws.extract_compact(id_token.encode()).protected
        except (JoseError, ValueError, AttributeError):
            raise IdTokenError("ID token is malformed", reason="malformed") from None
        if header.get("alg") not in _ALGORITHMS:
            raise IdTokenError(
                f"ID token algorithm {header.get('alg')!r} is not accepted", reason="bad_algorithm"
            )
        keys = self._key_set(header.get("kid"), now)
        if header.get("kid") is not None and not _has_kid(keys, header["kid"]):
            raise IdTokenError(
                "ID token is signed with a key the provider does not publish", reason="unknown_key"
            )
        try:
            token = jwt.decode(id_token, keys, algorithms=list(_ALGORITHMS))
        except BadSignatureError:
            raise IdTokenError(
                "ID token signature does not verify (tampered?)", reason="bad_signature"
            ) from None
        except JoseError:
            raise IdTokenError("ID token cannot be decoded", reason="malformed") from None
        claims = dict(token.claims)
        _check_claims(
            claims, issuer=self.issuer, client_id=self.client_id, nonce=nonce, now=now, skew=self.clock_skew_s
        )
        return claims


def _has_kid(keys: KeySet, kid: str) -> bool:
    return any(key.kid == kid for key in keys.keys)


def _check_claims(
    claims: Mapping[str, Any], *, issuer: str, client_id: str, nonce: str, now: dt.datetime, skew: int
) -> None:
    iss = claims.get("iss")
    if not isinstance(iss, str) or iss.rstrip("/") != issuer:
        raise IdTokenError(f"ID token issuer {iss!r} is not {issuer!r}", reason="wrong_issuer")
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if client_id not in audiences:
        raise IdTokenError(
            f"ID token audience {aud!r} does not include {client_id!r}", reason="wrong_audience"
        )
    if len(audiences) > 1 and claims.get("azp") != client_id:
        raise IdTokenError(
            "ID token has several audiences and azp is not this client", reason="wrong_audience"
        )
    registry = jwt.JWTClaimsRegistry(
        now=int(now.timestamp()),
        leeway=skew,
        sub={"essential": True},
        exp={"essential": True},
        iat={"essential": True},
        nonce={"essential": True, "value": nonce},
    )
    try:
        registry.validate(dict(claims))
    except ExpiredTokenError:
        raise IdTokenError("ID token has expired", reason="expired") from None
    except (MissingClaimError, InvalidClaimError) as exc:
        name = getattr(exc, "claim", "")
        if name == "nonce":
            raise IdTokenError(
                "ID token nonce does not match this sign-in (replayed?)", reason="wrong_nonce"
            ) from None
        if name in ("iat", "nbf"):
            raise IdTokenError(
                f"ID token {name} is in the future beyond the allowed clock skew", reason="not_yet_valid"
            ) from None
        raise IdTokenError(
            f"ID token claim {name or '?'} is missing or invalid", reason="bad_claims"
        ) from None
    except ClaimError as exc:
        raise IdTokenError(f"ID token claims invalid: {exc}", reason="bad_claims") from None
    iat = claims.get("iat")
    if isinstance(iat, (int, float)) and iat > now.timestamp() + skew:
        raise IdTokenError(
            "ID token iat is in the future beyond the allowed clock skew", reason="not_yet_valid"
        )
