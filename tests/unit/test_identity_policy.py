"""policies/identity.yaml, the directory group -> role mapping each directory preset starts
with: its shape, its agreement with the presets and the lab directories, and the migration
that holds its rows in the database (idm_default_group_roles). The live database's copy and
the seeding are tested against slapd in tests/integration/test_identity_shapes.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from console.roles import ROLES
from devstack.identity_policy import IdentityPolicyError, identity_sql, load_identity
from devstack.lab.ldap import GROUPS, ADLabDirectory, FreeIPALabDirectory, LabDirectory
from executor.directory_presets import directory_presets

MIGRATIONS = Path(__file__).resolve().parents[2] / "supabase" / "migrations"


def test_every_preset_maps_every_role_to_a_group_of_its_own():
    rows = load_identity()
    assert {r.preset for r in rows} == set(directory_presets())
    for preset in directory_presets():
        mine = [r for r in rows if r.preset == preset]
        assert sorted(r.role for r in mine) == sorted(ROLES), preset
        assert all(r.dn("dc=example,dc=org").endswith(",dc=example,dc=org") for r in mine)


def test_the_lab_directories_have_the_groups_of_their_preset():
    """The tests sign in through the defaults, so each lab directory names its groups as its
    preset's defaults do (and holds every one of them: the sync refuses a mapped group it
    cannot read)."""
    for cls in (LabDirectory, FreeIPALabDirectory, ADLabDirectory):
        lab = cls.__new__(cls)
        mapped = {m["group"]: m["role"] for m in lab.group_roles()}
        groups = getattr(lab, "groups", GROUPS)  # the OpenLDAP lab keeps them in the module
        for key, role in (
            ("admins", "admin"),
            ("approvers", "approver"),
            ("operators", "operator"),
            ("viewers", "viewer"),
        ):
            assert mapped[groups[key]] == role, (cls.__name__, key)


def test_the_newest_migration_holds_the_file():
    """The migration that last (re)defines public.idm_default_group_roles() holds exactly
    what the file generates (python -m devstack.identity_policy sql): editing the file
    needs a new migration with its output."""
    defining = sorted(
        p for p in MIGRATIONS.glob("*.sql") if "function public.idm_default_group_roles()" in p.read_text()
    )
    assert defining, "no migration defines public.idm_default_group_roles()"
    assert identity_sql() in defining[-1].read_text(), (
        f"{defining[-1].name} no longer holds policies/identity.yaml"
    )


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ("group_roles: {openldap: [{group: 'cn=a,{suffix}', role: admin}]}", "map every directory preset"),
        (
            "group_roles: {openldap: [{group: 'cn=a,{suffix}', role: root}], freeipa: [{group: 'cn=a,{suffix}', role: admin}], ad: [{group: 'cn=a,{suffix}', role: admin}]}",
            "role must be one of viewer, operator, approver, admin, not 'root'",
        ),
        (
            "group_roles: {openldap: [{group: 'cn=a,dc=x', role: admin}], freeipa: [{group: 'cn=a,{suffix}', role: admin}], ad: [{group: 'cn=a,{suffix}', role: admin}]}",
            "must be a DN ending in ,{suffix}",
        ),
        (
            "group_roles: {openldap: [{group: 'cn=a,{suffix}', role: admin}, {group: 'CN=A,{suffix}', role: viewer}], freeipa: [{group: 'cn=a,{suffix}', role: admin}], ad: [{group: 'cn=a,{suffix}', role: admin}]}",
            "is mapped twice",
        ),
        (
            "group_roles: {openldap: [{group: 'no dn,{suffix}', role: admin}], freeipa: [{group: 'cn=a,{suffix}', role: admin}], ad: [{group: 'cn=a,{suffix}', role: admin}]}",
            "is not a DN of attribute=value parts",
        ),
        (
            "group_roles: {openldap: [], freeipa: [{group: 'cn=a,{suffix}', role: admin}], ad: [{group: 'cn=a,{suffix}', role: admin}]}",
            "must list {group, role} mappings",
        ),
    ],
)
def test_a_bad_file_is_refused_naming_the_place(tmp_path: Path, body: str, words: str):
    path = tmp_path / "identity.yaml"
    path.write_text("version: 1\n" + body + "\n")
    with pytest.raises(IdentityPolicyError) as info:
        load_identity(path)
    assert words in str(info.value) and "identity.yaml" in str(info.value)


def test_the_generated_sql_quotes_what_it_holds():
    sql = identity_sql()
    assert sql.count("('") == len(load_identity())
    assert re.search(r"\('ad', 'CN=RackpilotAdmins,CN=Users,\{suffix\}', 'admin', \d+\)", sql)
