"""A real OpenID provider for the identity tests: npm ``oidc-provider`` run with Node.

The package is installed (once) into a cache folder this helper controls —
``$ENCLAVE_TEST_NPM_CACHE`` or ``~/.cache/enclave-tests/npm`` — and the provider runs from there,
so ESM resolution finds it. ``.ci/run`` installs Node's package the same way when it is missing.

:class:`OidcIdp` starts the provider on a free loopback port with signing keys the test made (so a
test can also mint ID tokens the provider never would: wrong audience, wrong issuer), and
:meth:`OidcIdp.sign_in` plays the browser: it follows the authorization URL through the
provider's login and consent pages and returns the redirect to the client's ``redirect_uri``.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
from joserfc import jwk, jwt

__all__ = ["OIDC_PROVIDER_VERSION", "OidcIdp", "ensure_oidc_provider", "new_signing_key"]

OIDC_PROVIDER_VERSION = "9.13.3"
_SCRIPT = Path(__file__).parent / "idp" / "oidc_provider.mjs"


def _cache_dir() -> Path:
    env = os.environ.get("ENCLAVE_TEST_NPM_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "enclave-tests" / "npm"


def ensure_oidc_provider() -> Path | None:
    """The folder holding ``node_modules/oidc-provider`` (installed if missing); None without Node."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        return None
    root = _cache_dir()
    marker = root / "node_modules" / "oidc-provider" / "package.json"
    if not marker.exists() or json.loads(marker.read_text())["version"] != OIDC_PROVIDER_VERSION:
        root.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                "npm",
                "install",
                "--no-audit",
                "--no-fund",
                "--prefix",
                str(root),
                f"oidc-provider@{OIDC_PROVIDER_VERSION}",
            ],
            check=True,
            capture_output=True,
            timeout=300,
        )
    shutil.copyfile(_SCRIPT, root / _SCRIPT.name)
    return root


def new_signing_key(kid: str) -> jwk.RSAKey:
    return jwk.RSAKey.generate_key(2048, parameters={"kid": kid, "use": "sig", "alg": "RS256"})


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OidcIdp:
    """One running provider. ``clients`` are oidc-provider client metadata; ``accounts`` map an
    account id (what the login form takes) to its claims."""

    def __init__(
        self,
        root: Path,
        work: Path,
        *,
        clients: list[dict[str, Any]],
        accounts: Mapping[str, Mapping[str, Any]],
        keys: list[jwk.RSAKey],
    ) -> None:
        self.port = _free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.keys = list(keys)
        self._config = work / "oidc-provider.json"
        self._doc: dict[str, Any] = {
            "port": self.port,
            "issuer": self.issuer,
            "clients": clients,
            "accounts": dict(accounts),
        }
        self._write()
        self._proc = subprocess.Popen(
            ["node", str(root / _SCRIPT.name), str(self._config)],
            cwd=root,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line.startswith("ready"):
            self.close()
            raise RuntimeError(f"oidc-provider did not start: {line!r}")

    def _write(self) -> None:
        self._doc["jwks"] = {"keys": [k.as_dict(private=True) for k in self.keys]}
        self._config.write_text(json.dumps(self._doc))

    def rotate(self, keys: list[jwk.RSAKey]) -> None:
        """Publish ``keys`` (the first signs from now on) and retire the others."""
        self.keys = list(keys)
        self._write()
        self._proc.send_signal(signal.SIGHUP)
        assert self._proc.stdout is not None
        assert self._proc.stdout.readline().strip() == "reloaded"

    def mint(self, claims: Mapping[str, Any], *, key: jwk.RSAKey | None = None) -> str:
        """An ID token signed with the provider's current key (or ``key``)."""
        signer = key or self.keys[0]
        header = {"alg": "RS256", "kid": signer.kid, "typ": "JWT"}
        return jwt.encode(header, dict(claims), signer)

    def sign_in(self, authorization_url: str, login: str) -> httpx.URL:
        """Play the browser: sign in as ``login``, consent, and return the final redirect."""
        with httpx.Client(timeout=10) as browser:
            url = httpx.URL(authorization_url)
            for _ in range(12):
                if not str(url).startswith(self.issuer):
                    return url
                response = browser.get(url)
                if response.is_redirect:
                    url = url.join(response.headers["location"])
                    continue
                action = re.search(r'<form[^>]*action="([^"]+)"', response.text)
                prompt = re.search(r'name="prompt" value="(\w+)"', response.text)
                if action is None or prompt is None:
                    raise RuntimeError(
                        f"unexpected provider page ({response.status_code}): {response.text[:300]}"
                    )
                form = {"prompt": prompt.group(1), "login": login, "password": "any"}
                posted = browser.post(url.join(html.unescape(action.group(1))), data=form)
                if not posted.is_redirect:
                    raise RuntimeError(
                        f"provider refused the form ({posted.status_code}): {posted.text[:300]}"
                    )
                url = url.join(posted.headers["location"])
        raise RuntimeError("the provider never redirected back to the client")

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()


def wait_until(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError
        time.sleep(0.02)
