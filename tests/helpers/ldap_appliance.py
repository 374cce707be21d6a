"""A real appliance (``enclave demo``, :mod:`tests.helpers.desktop_real_appliance`) that signs people in
against a real throwaway OpenLDAP directory (:mod:`tests.helpers.ldap_directory`, over LDAPS with
its own CA), its ``eng`` group mapped to the ``default`` team as developers — what the desktop's and
the language server's directory sign-ins are tested against."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.desktop_real_appliance import RealAppliance, enclave, real_appliance
from tests.helpers.ldap_directory import BASE_DN, SERVICE_DN, SERVICE_PASSWORD, Slapd, find_slapd

__all__ = ["DIRECTORY_USERS", "LdapSite", "ldap_appliance"]

# alice is in the mapped group; bob is in the directory but in no mapped group.
DIRECTORY_USERS = {"alice": "alice-directory-pw-1", "bob": "bob-directory-pw-2"}
_GROUPS = {"eng": ["alice"], "staff": ["alice", "bob"]}


@dataclass(frozen=True)
class LdapSite:
    appliance: RealAppliance
    directory: Slapd


@contextmanager
def ldap_appliance(work: Path) -> Iterator[LdapSite]:
    """Skips the test when OpenLDAP is not installed (``apt-get install slapd ldap-utils``)."""
    slapd = find_slapd()
    if slapd is None:
        pytest.skip("OpenLDAP is needed: apt-get install slapd ldap-utils (.ci/run does)")
    (work / "slapd").mkdir(parents=True)
    directory = Slapd(slapd, work / "slapd", users=DIRECTORY_USERS, groups=_GROUPS)
    settings = {
        "ENCLAVE_LDAP_URL": directory.ldaps_url,
        "ENCLAVE_LDAP_CA_FILE": str(directory.ca_file),
        "ENCLAVE_LDAP_BIND_DN": SERVICE_DN,
        "ENCLAVE_LDAP_BIND_PASSWORD": SERVICE_PASSWORD,
        "ENCLAVE_LDAP_USER_BASE": f"ou=people,{BASE_DN}",
        "ENCLAVE_LDAP_USER_FILTER": "(&(objectClass=inetOrgPerson)(uid={username}))",
    }
    try:
        with real_appliance(work / "data", settings) as running:
            enclave(
                "group-map",
                "add",
                "ldap",
                "eng",
                "default",
                "--role",
                "developer",
                "--data",
                str(running.data_dir),
            )
            yield LdapSite(running, directory)
    finally:
        directory.close()
