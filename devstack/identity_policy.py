"""Read ``policies/identity.yaml``: the directory group -> role mapping a site starts with,
per directory preset.

The database holds the same rows in ``public.idm_default_group_roles`` (a migration made
from this file); admins copy them into a site's ``directory_group_roles`` with
``idm_seed_group_roles``. tests/unit/test_identity_policy.py fails when the file and the
newest migration defining the function differ; tests/integration/test_identity_shapes.py
signs in through directories mapped only by these defaults.

    python -m devstack.identity_policy sql   # the function a migration needs after editing the file
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

from console.roles import ROLES
from devstack.policies import POLICY_DIR, PolicyError, _load_yaml, _sql_literal
from executor.directory_presets import directory_presets

#: a DN of attribute=value parts once {suffix} is in place (the table's own check is looser)
_RDN = r"[A-Za-z][A-Za-z0-9-]*=[^=,]+"
_DN = re.compile(rf"{_RDN}(,\s*{_RDN})*")


class IdentityPolicyError(PolicyError):
    """policies/identity.yaml names an unknown preset or role, or is shaped wrongly."""


@dataclass(frozen=True)
class DefaultGroupRole:
    preset: str
    group: str  # a DN template with {suffix}
    role: str

    def dn(self, suffix: str) -> str:
        return self.group.replace("{suffix}", suffix)


def load_identity(path: Path | None = None) -> list[DefaultGroupRole]:
    """Every preset's default mapping, in the file's order."""
    path = path or POLICY_DIR / "identity.yaml"
    data = _load_yaml(path)
    section = data.get("group_roles")
    presets = directory_presets()
    if not isinstance(section, dict) or set(section) != set(presets):
        raise IdentityPolicyError(
            f"{path}: group_roles must map every directory preset ({', '.join(sorted(presets))}) to its groups"
        )
    out: list[DefaultGroupRole] = []
    for preset, rows in section.items():
        where = f"{path.name}: group_roles.{preset}"
        if not isinstance(rows, list) or not rows:
            raise IdentityPolicyError(f"{where} must list {{group, role}} mappings")
        seen: set[str] = set()
        for n, row in enumerate(rows, 1):
            if not isinstance(row, dict) or set(row) != {"group", "role"}:
                raise IdentityPolicyError(f"{where}[{n}] must have exactly group and role")
            group, role = row["group"], row["role"]
            if role not in ROLES:
                raise IdentityPolicyError(
                    f"{where}[{n}].role must be one of {', '.join(ROLES)}, not {role!r}"
                )
            if not isinstance(group, str) or not group.endswith(",{suffix}"):
                raise IdentityPolicyError(f"{where}[{n}].group must be a DN ending in ,{{suffix}}")
            if not _DN.fullmatch(group.replace("{suffix}", "dc=example,dc=org")):
                raise IdentityPolicyError(
                    f"{where}[{n}].group {group!r} is not a DN of attribute=value parts"
                )
            key = re.sub(r"\s*([,=+])\s*", r"\1", group).strip().lower()
            if key in seen:
                raise IdentityPolicyError(f"{where}: {group!r} is mapped twice")
            seen.add(key)
            out.append(DefaultGroupRole(preset=preset, group=group, role=role))
    return out


FUNCTION_HEAD = """\
create or replace function public.idm_default_group_roles()
returns table (preset text, group_dn_template text, role public.app_role, ord integer)
language sql
stable
set search_path = ''
as $$
  select d.preset, d.template, d.role::public.app_role, d.ord
    from (values
"""
FUNCTION_TAIL = """\
         ) d (preset, template, role, ord)
$$;
"""


def identity_sql(rows: list[DefaultGroupRole] | None = None) -> str:
    """``public.idm_default_group_roles()``: the rows of policies/identity.yaml, in its order."""
    rows = rows if rows is not None else load_identity()
    values = ",\n".join(
        f"      ({_sql_literal(r.preset)}, {_sql_literal(r.group)}, {_sql_literal(r.role)}, {n})"
        for n, r in enumerate(rows, 1)
    )
    return FUNCTION_HEAD + values + "\n" + FUNCTION_TAIL


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args != ["sql"]:
        print("usage: python -m devstack.identity_policy sql   print the defaults' function", file=sys.stderr)
        return 2
    try:
        sys.stdout.write(identity_sql())
    except PolicyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
