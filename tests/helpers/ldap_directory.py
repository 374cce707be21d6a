"""A real OpenLDAP directory for the identity tests: a throwaway ``slapd`` (Debian package ``slapd``,
with ``ldap-utils``) with its own config, database folder, ports and TLS certificate.

:class:`Slapd` writes a ``slapd.conf`` (mdb backend, the ``memberof`` overlay so users carry
``memberOf``, anonymous binds disallowed, nothing readable without binding), starts slapd in the
foreground on a free loopback port for LDAPS and another for plain LDAP + StartTLS, and seeds it
with ``ldapadd`` as the directory manager — so the overlay sees every group and fills ``memberOf``
as a real directory would. ``.ci/run`` installs the packages when they are missing.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.helpers.desktop_tls import make_ca

__all__ = ["BASE_DN", "SERVICE_DN", "SERVICE_PASSWORD", "Slapd", "find_slapd"]

BASE_DN = "dc=example,dc=test"
ROOT_DN = f"cn=manager,{BASE_DN}"
ROOT_PASSWORD = "manager-secret-for-tests"
SERVICE_DN = f"cn=enclave,ou=services,{BASE_DN}"
SERVICE_PASSWORD = "service-account-secret-2026"
_SCHEMAS = ("core", "cosine", "inetorgperson", "nis")


def find_slapd() -> Path | None:
    """slapd's path when the slapd and ldap-utils packages are installed, else None."""
    slapd = shutil.which("slapd") or ("/usr/sbin/slapd" if Path("/usr/sbin/slapd").exists() else None)
    if slapd is None or shutil.which("ldapadd") is None or shutil.which("slappasswd") is None:
        return None
    return Path(slapd)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _hash(password: str) -> str:
    done = subprocess.run(["slappasswd", "-s", password], capture_output=True, text=True, check=True)
    return done.stdout.strip()


class Slapd:
    """One running directory. ``users`` map a uid to its password; ``groups`` map a group cn to
    the uids in it (groupOfNames under ``ou=groups``)."""

    def __init__(
        self,
        slapd: Path,
        work: Path,
        *,
        users: Mapping[str, str],
        groups: Mapping[str, Sequence[str]],
    ) -> None:
        self.work = work
        self.ldaps_port = _free_port()
        self.ldap_port = _free_port()
        ca = make_ca("Test directory CA")
        self.ca_file = ca.write(work / "ca.pem")
        cert, key = ca.server_files(work)
        data = work / "db"
        data.mkdir()
        includes = "\n".join(f"include /etc/ldap/schema/{s}.schema" for s in _SCHEMAS)
        (work / "slapd.conf").write_text(
            f"""{includes}
pidfile {work}/slapd.pid
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload memberof
disallow bind_anon
require authc
TLSCACertificateFile {self.ca_file}
TLSCertificateFile {cert}
TLSCertificateKeyFile {key}
database mdb
suffix "{BASE_DN}"
rootdn "{ROOT_DN}"
rootpw {_hash(ROOT_PASSWORD)}
directory {data}
overlay memberof
access to attrs=userPassword by self =w by anonymous auth by * none
access to * by users read by * none
""",
            encoding="utf-8",
        )
        self.ldaps_url = f"ldaps://127.0.0.1:{self.ldaps_port}"
        self.ldap_url = f"ldap://127.0.0.1:{self.ldap_port}"
        self._proc = subprocess.Popen(
            [str(slapd), "-d", "0", "-f", str(work / "slapd.conf"), "-h", f"{self.ldap_url}/ {self.ldaps_url}/"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            self._wait_ready()
            self.add(self._seed(users, groups))
        except BaseException:
            self.close()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read() if self._proc.stderr else ""
                raise RuntimeError(f"slapd exited at start: {err.strip()[-500:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.ldap_port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("slapd did not start listening")

    def _seed(self, users: Mapping[str, str], groups: Mapping[str, Sequence[str]]) -> str:
        entries = [
            f"dn: {BASE_DN}\nobjectClass: dcObject\nobjectClass: organization\no: Example\ndc: example",
            f"dn: ou=people,{BASE_DN}\nobjectClass: organizationalUnit\nou: people",
            f"dn: ou=groups,{BASE_DN}\nobjectClass: organizationalUnit\nou: groups",
            f"dn: ou=services,{BASE_DN}\nobjectClass: organizationalUnit\nou: services",
            f"dn: {SERVICE_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\n"
            f"cn: enclave\nuserPassword: {_hash(SERVICE_PASSWORD)}",
        ]
        for uid, password in users.items():
            entries.append(
                f"dn: {self.user_dn(uid)}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid.title()}\n"
                f"sn: {uid.title()}\nmail: {uid}@example.test\nuserPassword: {_hash(password)}"
            )
        for cn, members in groups.items():
            lines = [f"dn: {self.group_dn(cn)}", "objectClass: groupOfNames", f"cn: {cn}"]
            # groupOfNames needs a member: every group also holds the directory manager, so a
            # test may take its last user out.
            lines += [f"member: {ROOT_DN}"] + [f"member: {self.user_dn(m)}" for m in members]
            entries.append("\n".join(lines))
        return "\n\n".join(entries) + "\n"

    @staticmethod
    def user_dn(uid: str) -> str:
        return f"uid={uid},ou=people,{BASE_DN}"

    @staticmethod
    def group_dn(cn: str) -> str:
        return f"cn={cn},ou=groups,{BASE_DN}"

    def _tool(self, tool: str, ldif: str) -> None:
        done = subprocess.run(
            [tool, "-x", "-H", self.ldap_url, "-D", ROOT_DN, "-w", ROOT_PASSWORD],
            input=ldif,
            capture_output=True,
            text=True,
            timeout=30,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed: {done.stderr.strip()}")

    def add(self, ldif: str) -> None:
        self._tool("ldapadd", ldif)

    def modify(self, ldif: str) -> None:
        self._tool("ldapmodify", ldif)

    def remove_member(self, group: str, uid: str) -> None:
        self.modify(f"dn: {self.group_dn(group)}\nchangetype: modify\ndelete: member\nmember: {self.user_dn(uid)}\n")

    def add_member(self, group: str, uid: str) -> None:
        self.modify(f"dn: {self.group_dn(group)}\nchangetype: modify\nadd: member\nmember: {self.user_dn(uid)}\n")

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._proc.stderr is not None:
            self._proc.stderr.close()
