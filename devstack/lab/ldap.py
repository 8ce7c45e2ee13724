"""A real OpenLDAP directory for identity tests and the lab: Debian's slapd on loopback.

:class:`LabDirectory` creates a CA and a server certificate (openssl), a cn=config with
the memberof, refint and ppolicy overlays, starts ``slapd`` in the foreground on LDAP
(StartTLS), LDAPS and LDAPI, and loads a tree through the running server (``ldapadd``:
memberOf is only written for changes the server sees), users before groups:

* people: ``alice`` (in ``platform-admins``, itself a member of ``rackpilot-admins``:
  nested), ``bob`` (``rackpilot-operators``), ``carol`` (``rackpilot-viewers``), ``dave``
  (only in ``unrelated``), ``erin`` (``rackpilot-admins`` directly, for the sync),
  ``mallory`` (an operator whose account is locked by ppolicy), and ``sync`` under
  ``ou=services``, the bind account that reads group membership;
* a default password policy with lockout.

Every password is random per directory (:attr:`LabDirectory.passwords`). The server is a
child of this process (devstack.proc.spawn): it dies with it. See docs/identity.md and
the OpenLDAP section of the lab notes this follows.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from devstack import proc
from devstack.identity_policy import load_identity

SLAPD = "/usr/sbin/slapd"  # Debian's slapd package
SLAPADD = "/usr/sbin/slapadd"
LDAPADD = "ldapadd"
LDAPMODIFY = "ldapmodify"
OPENSSL = "openssl"
MODULE_DIR = "/usr/lib/ldap"
SCHEMA_DIR = "/etc/ldap/schema"
START_TIMEOUT_S = 15.0  # seconds slapd gets to listen
BASE_DN = "dc=rackpilot,dc=test"
ADMIN_DN = f"cn=admin,{BASE_DN}"
GROUPS = {
    "admins": f"cn=rackpilot-admins,ou=groups,{BASE_DN}",
    "approvers": f"cn=rackpilot-approvers,ou=groups,{BASE_DN}",
    "operators": f"cn=rackpilot-operators,ou=groups,{BASE_DN}",
    "viewers": f"cn=rackpilot-viewers,ou=groups,{BASE_DN}",
    "platform": f"cn=platform-admins,ou=groups,{BASE_DN}",
    "unrelated": f"cn=unrelated,ou=groups,{BASE_DN}",
}
USERS = ("alice", "bob", "carol", "dave", "erin", "mallory")


class LabDirectoryError(RuntimeError):
    """The lab directory could not be created or started."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def user_dn(uid: str) -> str:
    return f"uid={uid},ou=people,{BASE_DN}"


def default_group_roles(preset: str, suffix: str) -> list[dict[str, str]]:
    """A preset's default group -> role mapping (policies/identity.yaml) for ``suffix``, as
    rows of directory_group_roles: what idm_seed_group_roles gives a site. The lab
    directories name their groups as the defaults do, so the tests sign in through them."""
    return [{"group": r.dn(suffix), "role": r.role} for r in load_identity() if r.preset == preset]


def group_roles() -> list[dict[str, str]]:
    """The group -> role mapping of the lab directory (rows of directory_group_roles)."""
    return default_group_roles("openldap", BASE_DN)


@dataclass
class LabDirectory:
    root: Path
    ldap_port: int = 0
    ldaps_port: int = 0
    passwords: dict[str, str] = field(default_factory=dict)
    admin_password: str = ""
    process: subprocess.Popen | None = None

    # the directory's shape; FreeIPALabDirectory and ADLabDirectory below change these
    preset = "openldap"  # of executor/data/directory_presets.yaml and policies/identity.yaml
    suffix = BASE_DN
    modules = ("back_mdb", "memberof", "refint", "ppolicy")
    accounts = (*USERS, "sync")

    @property
    def admin_dn(self) -> str:
        return f"cn=admin,{self.suffix}"

    def group_roles(self) -> list[dict[str, str]]:
        """This directory's mapping: its preset's defaults for its suffix."""
        return default_group_roles(self.preset, self.suffix)

    def _schema_ldif(self) -> str:
        """Schema beyond core, cosine, nis and inetorgperson (cn=schema,cn=config children)."""
        return ""

    def _overlays_ldif(self) -> str:
        return f"""dn: olcOverlay={{0}}memberof,olcDatabase={{1}}mdb,cn=config
objectClass: olcOverlayConfig
objectClass: olcMemberOf
olcOverlay: {{0}}memberof
olcMemberOfRefInt: TRUE
olcMemberOfGroupOC: groupOfNames
olcMemberOfMemberAD: member
olcMemberOfMemberOfAD: memberOf

dn: olcOverlay={{1}}refint,olcDatabase={{1}}mdb,cn=config
objectClass: olcOverlayConfig
objectClass: olcRefintConfig
olcOverlay: {{1}}refint
olcRefintAttribute: member memberOf

dn: olcOverlay={{2}}ppolicy,olcDatabase={{1}}mdb,cn=config
objectClass: olcOverlayConfig
objectClass: olcPPolicyConfig
olcOverlay: {{2}}ppolicy
olcPPolicyDefault: cn=default,ou=policies,{BASE_DN}
olcPPolicyUseLockout: TRUE
"""

    @property
    def ca_file(self) -> Path:
        return self.root / "ca.pem"

    @property
    def ca_pem(self) -> str:
        return self.ca_file.read_text()

    @property
    def ldaps_uri(self) -> str:
        return f"ldaps://127.0.0.1:{self.ldaps_port}"

    @property
    def ldap_uri(self) -> str:
        return f"ldap://127.0.0.1:{self.ldap_port}"

    @property
    def ldapi_uri(self) -> str:
        return "ldapi://" + quote(str(self.root / "ldapi"), safe="")

    # --- set-up ---------------------------------------------------------------------------
    def _run(self, argv: list[str], stdin: str | None = None) -> None:
        res = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=60, check=False)
        if res.returncode != 0:
            raise LabDirectoryError(f"{argv[0]} failed ({res.returncode}): {res.stderr.strip()[-500:]}")

    def _certificates(self) -> None:
        r = self.root
        self._run(
            [
                OPENSSL,
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                str(r / "ca.key"),
                "-out",
                str(r / "ca.pem"),
                "-days",
                "7",
                "-subj",
                "/CN=rackpilot lab CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ]
        )
        self._run(
            [
                OPENSSL,
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                str(r / "server.key"),
                "-out",
                str(r / "server.csr"),
                "-subj",
                "/CN=localhost",
            ]
        )
        (r / "ext.cnf").write_text(
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
            "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
        )
        self._run(
            [
                OPENSSL,
                "x509",
                "-req",
                "-in",
                str(r / "server.csr"),
                "-CA",
                str(r / "ca.pem"),
                "-CAkey",
                str(r / "ca.key"),
                "-CAcreateserial",
                "-out",
                str(r / "server.pem"),
                "-days",
                "7",
                "-extfile",
                str(r / "ext.cnf"),
            ]
        )
        os.chmod(r / "server.key", 0o600)

    def _config_ldif(self) -> str:
        r = self.root
        peer = f"gidNumber={os.getgid()}+uidNumber={os.getuid()},cn=peercred,cn=external,cn=auth"
        schemas = "".join(
            f"include: file://{SCHEMA_DIR}/{s}.ldif\n\n" for s in ("core", "cosine", "nis", "inetorgperson")
        )
        modules = "".join(f"olcModuleLoad: {m}\n" for m in self.modules)
        return f"""dn: cn=config
objectClass: olcGlobal
cn: config
olcPidFile: {r}/slapd.pid
olcArgsFile: {r}/slapd.args
olcTLSCACertificateFile: {r}/ca.pem
olcTLSCertificateFile: {r}/server.pem
olcTLSCertificateKeyFile: {r}/server.key
olcLogLevel: none

dn: cn=module{{0}},cn=config
objectClass: olcModuleList
cn: module{{0}}
olcModulePath: {MODULE_DIR}
{modules}
dn: cn=schema,cn=config
objectClass: olcSchemaConfig
cn: schema

{schemas}{self._schema_ldif()}dn: olcDatabase={{0}}config,cn=config
objectClass: olcDatabaseConfig
olcDatabase: {{0}}config
olcAccess: to * by dn.exact={peer} manage by * none

dn: olcDatabase={{1}}mdb,cn=config
objectClass: olcDatabaseConfig
objectClass: olcMdbConfig
olcDatabase: {{1}}mdb
olcSuffix: {self.suffix}
olcDbDirectory: {r}/data
olcRootDN: {self.admin_dn}
olcRootPW: {self.admin_password}
olcDbMaxSize: 67108864
olcAccess: to attrs=userPassword by self write by anonymous auth by * none
olcAccess: to * by users read by * none

{self._overlays_ldif()}"""

    def _tree_ldif(self) -> str:
        out = [
            f"dn: {BASE_DN}\nobjectClass: dcObject\nobjectClass: organization\ndc: rackpilot\no: rackpilot lab\n"
        ]
        for ou in ("people", "groups", "services", "policies"):
            out.append(f"dn: ou={ou},{BASE_DN}\nobjectClass: organizationalUnit\nou: {ou}\n")
        out.append(
            f"dn: cn=default,ou=policies,{BASE_DN}\nobjectClass: pwdPolicy\nobjectClass: device\n"
            f"cn: default\npwdAttribute: userPassword\npwdLockout: TRUE\npwdMaxFailure: 5\n"
            f"pwdLockoutDuration: 0\n"
        )
        for uid in USERS:
            locked = "pwdAccountLockedTime: 000001010000Z\n" if uid == "mallory" else ""
            out.append(
                f"dn: {user_dn(uid)}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid.title()} Lab\n"
                f"sn: Lab\nmail: {uid}@lab.rackpilot.test\nuserPassword: {self.passwords[uid]}\n{locked}"
            )
        out.append(
            f"dn: uid=sync,ou=services,{BASE_DN}\nobjectClass: inetOrgPerson\nuid: sync\ncn: rackpilot sync\n"
            f"sn: sync\nuserPassword: {self.passwords['sync']}\n"
        )
        members = {
            "platform": [user_dn("alice")],
            "admins": [GROUPS["platform"], user_dn("erin")],
            "approvers": [f"uid=sync,ou=services,{BASE_DN}"],
            "operators": [user_dn("bob"), user_dn("mallory")],
            "viewers": [user_dn("carol")],
            "unrelated": [user_dn("dave")],
        }
        for key in (
            "platform",
            "admins",
            "approvers",
            "operators",
            "viewers",
            "unrelated",
        ):  # nested group first
            cn = GROUPS[key].split(",")[0][3:]
            out.append(
                f"dn: {GROUPS[key]}\nobjectClass: groupOfNames\ncn: {cn}\n"
                + "".join(f"member: {m}\n" for m in members[key])
            )
        return "\n".join(out)

    # --- lifecycle --------------------------------------------------------------------------
    def start(self) -> LabDirectory:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "data").mkdir(exist_ok=True)
        (self.root / "slapd.d").mkdir(exist_ok=True)
        self.admin_password = secrets.token_urlsafe(18)
        self.passwords = {u: f"{u}-{secrets.token_urlsafe(12)}" for u in self.accounts}
        self._certificates()
        (self.root / "config.ldif").write_text(self._config_ldif())
        self._run([SLAPADD, "-n0", "-F", str(self.root / "slapd.d"), "-l", str(self.root / "config.ldif")])
        self.ldap_port, self.ldaps_port = _free_port(), _free_port()
        urls = f"{self.ldap_uri}/ {self.ldaps_uri}/ {self.ldapi_uri}"
        log = (self.root / "slapd.log").open("ab")
        self.process = proc.spawn(
            [SLAPD, "-F", str(self.root / "slapd.d"), "-h", urls, "-d", "0"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.process.poll() is not None:
                raise LabDirectoryError(
                    f"slapd exited ({self.process.returncode}); see {self.root / 'slapd.log'}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.ldaps_port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise LabDirectoryError(f"slapd did not listen within {START_TIMEOUT_S} s") from None
                time.sleep(0.02)
        self._run(
            [LDAPADD, "-x", "-H", self.ldapi_uri, "-D", self.admin_dn, "-w", self.admin_password],
            stdin=self._tree_ldif(),
        )
        return self

    def modify(self, ldif: str) -> None:
        """Apply an LDIF change as the directory's manager (tests: membership changes)."""
        self._run(
            [LDAPMODIFY, "-x", "-H", self.ldapi_uri, "-D", self.admin_dn, "-w", self.admin_password],
            stdin=ldif,
        )

    def remove_member(self, group: str, member_dn: str) -> None:
        self.modify(f"dn: {GROUPS[group]}\nchangetype: modify\ndelete: member\nmember: {member_dn}\n")

    def delete_entry(self, dn: str) -> None:
        """Remove an entry (refint takes it out of the groups that list it)."""
        self.modify(f"dn: {dn}\nchangetype: delete\n")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            proc.terminate([self.process.pid], timeout=5.0)
        self.process = None

    def __enter__(self) -> LabDirectory:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- other directory shapes ---------------------------------------------------------------
# What a slapd can serve of FreeIPA's and Active Directory's layouts, for the presets of
# executor/data/directory_presets.yaml. Each class says what is simulated.
LAB_OID = "1.3.6.1.4.1.4203.666.11.99"  # OpenLDAP's experimental arc: lab-only schema


class FreeIPALabDirectory(LabDirectory):
    """FreeIPA's layout on slapd: users under ``cn=users,cn=accounts``, groups
    (groupOfNames) under ``cn=groups,cn=accounts``, the sync's system account under
    ``cn=sysaccounts,cn=etc``, and ``memberOf`` listing nested groups too, as FreeIPA's
    (389 Directory Server's) memberOf plugin keeps it - here dynlist computes it.

    Simulated: ``nsAccountLock`` carries 389's OID, but the auxiliary class that allows it is
    the lab's own (FreeIPA's schema is not loaded), the containers are organizationalRole
    entries (FreeIPA's are nsContainer), and slapd still lets a locked account bind (389
    refuses it): the preset's ``disabled_filter`` is what refuses it here.

    People: ``alice`` (in ``platform``, itself a member of ``admins``), ``bob``
    (``operators``), ``erin`` (``admins``), ``frank`` (``operators``, nsAccountLock TRUE),
    ``gina`` (``operators``, deleted by the tests).
    """

    preset = "freeipa"
    suffix = "dc=ipa,dc=test"
    modules = ("back_mdb", "dynlist", "refint")
    accounts = ("alice", "bob", "erin", "frank", "gina", "sync")
    groups = {
        "admins": "cn=rackpilot-admins,cn=groups,cn=accounts,dc=ipa,dc=test",
        "operators": "cn=rackpilot-operators,cn=groups,cn=accounts,dc=ipa,dc=test",
        "approvers": "cn=rackpilot-approvers,cn=groups,cn=accounts,dc=ipa,dc=test",
        "viewers": "cn=rackpilot-viewers,cn=groups,cn=accounts,dc=ipa,dc=test",
        "platform": "cn=platform-admins,cn=groups,cn=accounts,dc=ipa,dc=test",
    }
    sync_dn = "uid=sync,cn=sysaccounts,cn=etc,dc=ipa,dc=test"

    def user_dn(self, uid: str) -> str:
        return f"uid={uid},cn=users,cn=accounts,{self.suffix}"

    def _schema_ldif(self) -> str:
        # dyngroup: groupOfURLs, which dynlist's configuration names
        return f"""include: file://{SCHEMA_DIR}/dyngroup.ldif

dn: cn=ipalab,cn=schema,cn=config
objectClass: olcSchemaConfig
cn: ipalab
olcAttributeTypes: ( 2.16.840.1.113730.3.1.610 NAME 'nsAccountLock' EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
olcObjectClasses: ( {LAB_OID}.1 NAME 'ipaLabLockable' AUXILIARY MAY nsAccountLock )

"""

    def _overlays_ldif(self) -> str:
        return """dn: olcOverlay={0}dynlist,olcDatabase={1}mdb,cn=config
objectClass: olcOverlayConfig
objectClass: olcDynListConfig
olcOverlay: {0}dynlist
olcDynListAttrSet: groupOfURLs memberURL member+memberOf@groupOfNames*

dn: olcOverlay={1}refint,olcDatabase={1}mdb,cn=config
objectClass: olcOverlayConfig
objectClass: olcRefintConfig
olcOverlay: {1}refint
olcRefintAttribute: member
"""

    def _tree_ldif(self) -> str:
        sfx = self.suffix
        out = [f"dn: {sfx}\nobjectClass: dcObject\nobjectClass: organization\ndc: ipa\no: IPA.TEST\n"]
        for dn in (
            f"cn=accounts,{sfx}",
            f"cn=users,cn=accounts,{sfx}",
            f"cn=groups,cn=accounts,{sfx}",
            f"cn=etc,{sfx}",
            f"cn=sysaccounts,cn=etc,{sfx}",
        ):
            out.append(f"dn: {dn}\nobjectClass: organizationalRole\ncn: {dn.split(',')[0][3:]}\n")
        for uid in self.accounts[:-1]:
            lock = "TRUE" if uid == "frank" else "FALSE"
            out.append(
                f"dn: {self.user_dn(uid)}\nobjectClass: inetOrgPerson\nobjectClass: ipaLabLockable\n"
                f"uid: {uid}\ncn: {uid.title()} IPA\nsn: IPA\ndisplayName: {uid.title()} IPA\n"
                f"mail: {uid}@ipa.test\nnsAccountLock: {lock}\nuserPassword: {self.passwords[uid]}\n"
            )
        out.append(
            f"dn: {self.sync_dn}\nobjectClass: account\nobjectClass: simpleSecurityObject\nuid: sync\n"
            f"userPassword: {self.passwords['sync']}\n"
        )
        members = {
            "platform": [self.user_dn("alice")],
            "admins": [self.groups["platform"], self.user_dn("erin")],
            "operators": [self.user_dn(u) for u in ("bob", "frank", "gina")],
            # every group of the preset's default mapping exists (the sync refuses a mapped
            # group it cannot read); alice's admin role is the highest of hers
            "approvers": [self.user_dn("alice")],
            "viewers": [self.user_dn("alice")],
        }
        for key in ("platform", "admins", "operators", "approvers", "viewers"):
            cn = self.groups[key].split(",")[0][3:]
            out.append(
                f"dn: {self.groups[key]}\nobjectClass: groupOfNames\ncn: {cn}\n"
                + "".join(f"member: {m}\n" for m in members[key])
            )
        return "\n".join(out)


class ADLabDirectory(LabDirectory):
    """Active Directory's shape on slapd: ``CN=Users,DC=corp,DC=test``, users of class
    ``user`` with ``sAMAccountName``, ``userPrincipalName`` and ``userAccountControl``,
    groups of class ``group`` (``member``), ``memberOf`` with direct membership only (as AD
    keeps it; the memberof overlay writes it), nested groups, and a disabled account
    (userAccountControl 514 = NORMAL_ACCOUNT | ACCOUNTDISABLE), matched by AD's bitwise-AND
    rule 1.2.840.113556.1.4.803, which slapd implements. The accounts have no mailbox (no
    ``mail``): their address is the ``userPrincipalName``.

    Simulated: the AD attribute types and the ``user``/``group`` classes carry AD's OIDs
    but are declared here (a small subset of AD's schema); the containers are
    organizationalRole entries. slapd cannot bind with a UPN (``alice@corp.test``) and does
    not implement the in-chain rule 1.2.840.113556.1.4.1941, so tests bind with the DN
    template ``CN={username},CN=Users,...`` (each CN here is the sAMAccountName) and follow
    nesting with ``member=`` searches (``nesting = search``, which works against AD too).

    People: ``alice`` (in ``platform``, itself in ``admins``), ``bob`` (``operators``),
    ``erin`` (``admins``), ``frank`` (``operators``, disabled), ``gina`` (``operators``,
    deleted by the tests).
    """

    preset = "ad"
    suffix = "DC=corp,DC=test"
    modules = ("back_mdb", "memberof", "refint")
    accounts = ("alice", "bob", "erin", "frank", "gina", "sync")
    groups = {
        "admins": "CN=RackpilotAdmins,CN=Users,DC=corp,DC=test",
        "operators": "CN=RackpilotOperators,CN=Users,DC=corp,DC=test",
        "approvers": "CN=RackpilotApprovers,CN=Users,DC=corp,DC=test",
        "viewers": "CN=RackpilotViewers,CN=Users,DC=corp,DC=test",
        "platform": "CN=PlatformAdmins,CN=Users,DC=corp,DC=test",
    }
    sync_dn = "CN=svc-rackpilot,CN=Users,DC=corp,DC=test"

    def user_dn(self, sam: str) -> str:
        return f"CN={sam},CN=Users,{self.suffix}"

    def _schema_ldif(self) -> str:
        ds = "1.3.6.1.4.1.1466.115.121.1.15"
        return f"""dn: cn=adlab,cn=schema,cn=config
objectClass: olcSchemaConfig
cn: adlab
olcAttributeTypes: ( 1.2.840.113556.1.4.221 NAME 'sAMAccountName' EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch SYNTAX {ds} SINGLE-VALUE )
olcAttributeTypes: ( 1.2.840.113556.1.4.656 NAME 'userPrincipalName' EQUALITY caseIgnoreMatch SYNTAX {ds} SINGLE-VALUE )
olcAttributeTypes: ( 1.2.840.113556.1.4.8 NAME 'userAccountControl' EQUALITY integerMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 SINGLE-VALUE )
olcObjectClasses: ( 1.2.840.113556.1.5.9 NAME 'user' SUP inetOrgPerson STRUCTURAL MAY ( sAMAccountName $ userPrincipalName $ userAccountControl ) )
olcObjectClasses: ( 1.2.840.113556.1.5.8 NAME 'group' SUP top STRUCTURAL MUST cn MAY ( member $ sAMAccountName $ description ) )

"""

    def _overlays_ldif(self) -> str:
        return """dn: olcOverlay={0}memberof,olcDatabase={1}mdb,cn=config
objectClass: olcOverlayConfig
objectClass: olcMemberOf
olcOverlay: {0}memberof
olcMemberOfRefInt: TRUE
olcMemberOfGroupOC: group
olcMemberOfMemberAD: member
olcMemberOfMemberOfAD: memberOf

dn: olcOverlay={1}refint,olcDatabase={1}mdb,cn=config
objectClass: olcOverlayConfig
objectClass: olcRefintConfig
olcOverlay: {1}refint
olcRefintAttribute: member memberOf
"""

    def _tree_ldif(self) -> str:
        sfx = self.suffix
        out = [f"dn: {sfx}\nobjectClass: dcObject\nobjectClass: organization\ndc: corp\no: CORP\n"]
        out.append(f"dn: CN=Users,{sfx}\nobjectClass: organizationalRole\ncn: Users\n")
        for sam in self.accounts[:-1]:
            uac = 514 if sam == "frank" else 512
            out.append(
                f"dn: {self.user_dn(sam)}\nobjectClass: user\ncn: {sam}\nsn: Corp\n"
                f"displayName: {sam.title()} Corp\nsAMAccountName: {sam}\nuserPrincipalName: {sam}@corp.test\n"
                f"userAccountControl: {uac}\nuserPassword: {self.passwords[sam]}\n"
            )
        out.append(
            f"dn: {self.sync_dn}\nobjectClass: user\ncn: svc-rackpilot\nsn: service\n"
            f"sAMAccountName: svc-rackpilot\nuserAccountControl: 512\nuserPassword: {self.passwords['sync']}\n"
        )
        members = {
            "platform": [self.user_dn("alice")],
            "admins": [self.groups["platform"], self.user_dn("erin")],
            "operators": [self.user_dn(u) for u in ("bob", "frank", "gina")],
            # every group of the preset's default mapping exists (the sync refuses a mapped
            # group it cannot read); alice's admin role is the highest of hers
            "approvers": [self.user_dn("alice")],
            "viewers": [self.user_dn("alice")],
        }
        for key in ("platform", "admins", "operators", "approvers", "viewers"):
            cn = self.groups[key].split(",")[0][3:]
            out.append(
                f"dn: {self.groups[key]}\nobjectClass: group\ncn: {cn}\nsAMAccountName: {cn}\n"
                + "".join(f"member: {m}\n" for m in members[key])
            )
        return "\n".join(out)
