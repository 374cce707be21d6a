"""Identity settings are checked on load with errors a person can act on."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.config import load_settings
from shared.errors import ConfigError

_LDAP = {
    "ENCLAVE_LDAP_URL": "ldaps://dir.example",
    "ENCLAVE_LDAP_BIND_DN": "cn=enclave,dc=example",
    "ENCLAVE_LDAP_BIND_PASSWORD": "secret",
    "ENCLAVE_LDAP_USER_BASE": "ou=people,dc=example",
}


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"ENCLAVE_OIDC_ISSUER": "http://idp.example", "ENCLAVE_OIDC_CLIENT_ID": "x"}, "https://"),
        ({"ENCLAVE_OIDC_ISSUER": "https://idp.example"}, "oidc_client_id"),
        ({"ENCLAVE_OIDC_CLOCK_SKEW_S": "3600"}, "0..300"),
        ({"ENCLAVE_PASSWORD_LOGIN": "break_glass"}, "break_glass_admin"),
        ({"ENCLAVE_PASSWORD_LOGIN": "never"}, "'on' or 'break_glass'"),
        ({"ENCLAVE_LDAP_URL": "ldap://dir.example"}, "ldap_starttls"),
        ({"ENCLAVE_LDAP_URL": "http://dir.example"}, "ldaps://"),
        ({"ENCLAVE_LDAP_URL": "ldaps://dir.example", "ENCLAVE_LDAP_USER_BASE": "dc=x"}, "ldap_bind_dn"),
        ({**_LDAP, "ENCLAVE_LDAP_USER_FILTER": "(uid=alice)"}, "{username}"),
        ({**_LDAP, "ENCLAVE_LDAP_CA_FILE": "/nonexistent/ca.pem"}, "not a file"),
        ({**_LDAP, "ENCLAVE_LDAP_USER_BASE": ""}, "ldap_user_base"),
    ],
)
def test_bad_identity_settings_are_refused(tmp_path: Path, env: dict[str, str], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        load_settings(tmp_path, environ=env)


def test_https_issuer_is_accepted(tmp_path: Path) -> None:
    s = load_settings(tmp_path, environ={"ENCLAVE_OIDC_ISSUER": "https://idp.example", "ENCLAVE_OIDC_CLIENT_ID": "e"})
    assert s.oidc_issuer == "https://idp.example" and s.oidc_clock_skew_s == 60


def test_ldaps_directory_is_accepted(tmp_path: Path) -> None:
    s = load_settings(tmp_path, environ=_LDAP)
    assert s.ldap_url == "ldaps://dir.example" and "{username}" in s.ldap_user_filter
