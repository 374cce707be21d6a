"""``enclave-lsp``'s password sign-in for a directory (LDAP / Active Directory) user, end to end: a
real appliance (``enclave demo``) configured with a real throwaway OpenLDAP ``slapd``, the server
driven over stdio by pytest-lsp. Without an ``account`` the server asks the appliance, which offers
the directory; the editor's ``account`` setting (or the command's argument) picks a local account;
``enclave-lsp sign-in --account ldap`` does the same from a shell. The choice is kept in the
connection profile the desktop client shares."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pygls.exceptions import JsonRpcException

from desktop.client.profile import ProfileStore
from desktop.lsp.settings import Settings
from shared.errors import InputError
from tests.desktop.lsp.test_server_e2e import command, lsp
from tests.helpers.ldap_appliance import DIRECTORY_USERS, LdapSite, ldap_appliance
from tests.helpers.lsp_session import LspHome, lsp_command


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LdapSite]:
    with ldap_appliance(tmp_path_factory.mktemp("ldap-site")) as running:
        yield running


def _connected(site: LdapSite, path: Path) -> LspHome:
    home = LspHome(path)
    appliance = site.appliance
    done = lsp_command(
        home, "connect", appliance.url, str(appliance.ca_file), "--fingerprint", appliance.fingerprint
    )
    assert done.returncode == 0, done.stderr
    return home


def _profile_account(home: LspHome) -> str:
    profile = ProfileStore(home.path / "config" / "enclave-desktop").load()
    assert profile is not None
    return profile.account


@pytest.mark.asyncio
async def test_directory_user_signs_in_from_the_editor(site: LdapSite, project: Path, tmp_path: Path) -> None:
    home = _connected(site, tmp_path / "home")
    async with lsp(home, project) as client:
        with pytest.raises(JsonRpcException, match="sign-in refused: invalid username or password"):
            await command(client, "enclave.signIn", {"username": "alice", "password": "not-alices-password"})
        # The appliance offers the directory: no account named, the password is the directory's.
        signed = await command(
            client, "enclave.signIn", {"username": "alice", "password": DIRECTORY_USERS["alice"]}
        )
        assert signed["username"] == "alice" and signed["model"]
        status = await command(client, "enclave.status")
        assert status["username"] == "alice"
    assert any(token.startswith("encl_") for token in home.secrets().values())
    assert _profile_account(home) == "ldap"


@pytest.mark.asyncio
async def test_account_setting_picks_a_local_account(site: LdapSite, project: Path, tmp_path: Path) -> None:
    home = _connected(site, tmp_path / "home")
    appliance = site.appliance
    async with lsp(home, project, {"enclave": {"account": "local"}}) as client:
        # A directory password as a local account: refused (no such local password).
        with pytest.raises(JsonRpcException, match="sign-in refused: invalid username or password"):
            await command(
                client, "enclave.signIn", {"username": "alice", "password": DIRECTORY_USERS["alice"]}
            )
        signed = await command(
            client, "enclave.signIn", {"username": appliance.username, "password": appliance.password}
        )
        assert signed["username"] == appliance.username
        # The command's own argument wins over the setting.
        again = await command(
            client,
            "enclave.signIn",
            {"username": "alice", "password": DIRECTORY_USERS["alice"], "account": "ldap"},
        )
        assert again["username"] == "alice"
    assert _profile_account(home) == "ldap"


def test_sign_in_from_a_shell_with_account(site: LdapSite, tmp_path: Path) -> None:
    home = _connected(site, tmp_path / "home")
    done = lsp_command(
        home, "sign-in", "--username", "alice", "--account", "ldap", stdin=DIRECTORY_USERS["alice"] + "\n"
    )
    assert done.returncode == 0, done.stderr
    assert "signed in to" in done.stdout and "as alice" in done.stdout
    # In the directory but in no mapped group: refused, in one line.
    done = lsp_command(
        home, "sign-in", "--username", "bob", "--account", "ldap", stdin=DIRECTORY_USERS["bob"] + "\n"
    )
    assert (
        done.returncode == 1
        and done.stderr.startswith("enclave-lsp: error: ")
        and done.stderr.count("\n") == 1
    )


def test_account_setting_is_checked() -> None:
    assert Settings().updated({"enclave": {"account": "ldap"}}).account == "ldap"
    assert Settings().updated({"account": "local"}).account == "local"
    with pytest.raises(InputError, match='account must be "ldap" or "local"'):
        Settings().updated({"account": "ad"})
