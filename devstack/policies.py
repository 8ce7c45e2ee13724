"""Read rackpilot's policy files: ``policies/access.yaml`` and ``policies/safety.yaml``.

Both files are the statement of intent that the database is held to: the access matrix
is checked cell by cell against the live database, and the safety policy is copied into
``public.safety_policies`` by migration (tests fail when the copy drifts).

A row of ``public.safety_policies`` is made of two declarations: what the job type is
(risk, window rule, whether it takes hosts out: ``executor/jobtypes.py``) and the limits a
deployment tunes (hosts out and jobs per cluster, timeouts, attempts: ``safety.yaml``).

    python -m devstack.policies safety-sql   # the upsert a migration needs after changing either
    python -m devstack.policies safety-migration supabase/migrations/<version>_<what>.sql
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

POLICY_DIR = Path(__file__).resolve().parents[1] / "policies"
OPERATIONS = ("select", "insert", "update", "delete")


class PolicyError(ValueError):
    """A policy file is missing or malformed."""


class AccessPolicyError(PolicyError):
    """policies/access.yaml names an unknown role or operation, or is shaped wrongly."""


class SafetyPolicyError(PolicyError):
    """policies/safety.yaml has a missing or invalid field."""


def _load_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise PolicyError(f"{path} does not exist") from exc
    except yaml.YAMLError as exc:
        raise PolicyError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict) or data.get("version") != 1:
        raise PolicyError(f"{path}: expected a mapping with version: 1")
    return data


# --- access -------------------------------------------------------------------------------
@dataclass(frozen=True)
class RelationAccess:
    """Who may do what on one table or view. ``select_own``: sees only its own rows."""

    name: str
    kind: str  # "table" | "view"
    allowed: dict[str, frozenset[str]]
    select_own: frozenset[str]

    def allows(self, role: str, op: str) -> bool:
        return role in self.allowed[op]


@dataclass(frozen=True)
class AccessPolicy:
    roles: tuple[str, ...]
    relations: dict[str, RelationAccess]

    def cells(self) -> list[tuple[str, str, str]]:
        """Every (relation, role, operation) the matrix covers."""
        return [(rel, role, op) for rel in sorted(self.relations) for role in self.roles for op in OPERATIONS]


def load_access(path: Path | None = None) -> AccessPolicy:
    path = path or POLICY_DIR / "access.yaml"
    data = _load_yaml(path)
    roles = data.get("roles")
    if not isinstance(roles, list) or not roles or not all(isinstance(r, str) for r in roles):
        raise AccessPolicyError(f"{path}: roles must be a list of role names")
    relations: dict[str, RelationAccess] = {}
    for kind, key in (("table", "tables"), ("view", "views")):
        section = data.get(key) or {}
        if not isinstance(section, dict):
            raise AccessPolicyError(f"{path}: {key} must be a mapping")
        for name, spec in section.items():
            if name in relations:
                raise AccessPolicyError(f"{path}: {name} is listed twice")
            if not isinstance(spec, dict):
                raise AccessPolicyError(f"{path}: {name} must map operations to role lists")
            unknown_ops = set(spec) - set(OPERATIONS) - {"select_own"}
            if unknown_ops:
                raise AccessPolicyError(f"{path}: {name}: unknown operations {sorted(unknown_ops)}")
            allowed: dict[str, frozenset[str]] = {}
            for op in (*OPERATIONS, "select_own"):
                listed = spec.get(op) or []
                if not isinstance(listed, list) or not set(listed) <= set(roles):
                    raise AccessPolicyError(f"{path}: {name}.{op} must list roles among {roles}")
                allowed[op] = frozenset(listed)
            if kind == "view" and (allowed["insert"] or allowed["update"] or allowed["delete"]):
                raise AccessPolicyError(f"{path}: view {name} is read-only")
            if allowed["select"] & allowed["select_own"]:
                raise AccessPolicyError(f"{path}: {name}: a role is in both select and select_own")
            own = allowed.pop("select_own")
            relations[name] = RelationAccess(name=name, kind=kind, allowed=allowed, select_own=own)
    return AccessPolicy(roles=tuple(roles), relations=relations)


# --- safety -------------------------------------------------------------------------------
@dataclass(frozen=True)
class SafetyPolicy:
    job_type: str
    risk: str
    requires_window: bool
    takes_hosts_out: bool
    max_hosts_out_per_cluster: int | None
    max_concurrent_per_cluster: int | None
    lease_seconds: int
    step_timeout_seconds: int
    job_timeout_seconds: int
    max_attempts: int

    def row(self) -> tuple:
        """The values in public.safety_policies column order."""
        return (
            self.job_type,
            self.risk,
            self.requires_window,
            self.takes_hosts_out,
            self.max_hosts_out_per_cluster,
            self.max_concurrent_per_cluster,
            self.lease_seconds,
            self.step_timeout_seconds,
            self.job_timeout_seconds,
            self.max_attempts,
        )


SAFETY_COLUMNS = (
    "job_type",
    "risk",
    "requires_window",
    "takes_hosts_out",
    "max_hosts_out_per_cluster",
    "max_concurrent_per_cluster",
    "lease_seconds",
    "step_timeout_seconds",
    "job_timeout_seconds",
    "max_attempts",
)


def _int(where: str, value: Any, *, nullable: bool = False, minimum: int = 1) -> int | None:
    if value is None and nullable:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise SafetyPolicyError(f"{where} must be an integer >= {minimum}{' or null' if nullable else ''}")
    return value


#: fields of a safety policy the job type's declaration (executor/jobtypes.py) holds, not safety.yaml
DECLARED_FIELDS = ("risk", "requires_window", "takes_hosts_out")


def load_safety(path: Path | None = None) -> dict[str, SafetyPolicy]:
    """Every job type's safety policy: its declaration's risk, window rule and hosts-out,
    with the limits and timeouts of ``path`` (policies/safety.yaml)."""
    from executor.jobtypes import REGISTRY

    declared = {t.value: s for t, s in REGISTRY.items()}
    path = path or POLICY_DIR / "safety.yaml"
    data = _load_yaml(path)
    types = data.get("job_types")
    if not isinstance(types, dict) or not types:
        raise SafetyPolicyError(f"{path}: job_types must be a non-empty mapping")
    out: dict[str, SafetyPolicy] = {}
    for name, spec in types.items():
        where = f"{path.name}: {name}"
        if name not in declared:
            raise SafetyPolicyError(f"{where}: not a rackpilot job type (executor/jobtypes.py declares them)")
        if not isinstance(spec, dict):
            raise SafetyPolicyError(f"{where} must be a mapping")
        moved = [k for k in DECLARED_FIELDS if k in spec]
        if moved:
            raise SafetyPolicyError(
                f"{where}: {', '.join(moved)} belong to the job type's declaration in executor/jobtypes.py, "
                "not to safety.yaml"
            )
        timeouts = spec.get("timeouts")
        if not isinstance(timeouts, dict):
            raise SafetyPolicyError(f"{where}.timeouts must map lease/step/job to seconds")
        jt = declared[name]
        pol = SafetyPolicy(
            job_type=name,
            risk=jt.risk.value,
            requires_window=jt.requires_window,
            takes_hosts_out=jt.takes_hosts_out,
            max_hosts_out_per_cluster=_int(
                f"{where}.max_hosts_out_per_cluster", spec.get("max_hosts_out_per_cluster"), nullable=True
            ),
            max_concurrent_per_cluster=_int(
                f"{where}.max_concurrent_per_cluster", spec.get("max_concurrent_per_cluster"), nullable=True
            ),
            lease_seconds=_int(f"{where}.timeouts.lease", timeouts.get("lease"), minimum=10),
            step_timeout_seconds=_int(f"{where}.timeouts.step", timeouts.get("step")),
            job_timeout_seconds=_int(f"{where}.timeouts.job", timeouts.get("job")),
            max_attempts=_int(f"{where}.max_attempts", spec.get("max_attempts")),
        )
        if pol.takes_hosts_out and pol.max_hosts_out_per_cluster is None:
            raise SafetyPolicyError(f"{where}: a type that takes hosts out needs max_hosts_out_per_cluster")
        out[name] = pol
    return out


def _sql_literal(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


def safety_sql(policies: dict[str, SafetyPolicy] | None = None) -> str:
    """An idempotent upsert of public.safety_policies from the job types' declarations and
    safety.yaml, for a migration."""
    policies = policies or load_safety()
    rows = ",\n  ".join("(" + ", ".join(_sql_literal(v) for v in p.row()) + ")" for p in policies.values())
    updates = ", ".join(f"{c} = excluded.{c}" for c in SAFETY_COLUMNS[1:])
    return (
        f"insert into public.safety_policies ({', '.join(SAFETY_COLUMNS)})\nvalues\n  {rows}\n"
        f"on conflict (job_type) do update set {updates};\n"
    )


MIGRATION_HEADER = """\
-- public.safety_policies from the job types' declarations (executor/jobtypes.py: risk,
-- requires_window, takes_hosts_out) and policies/safety.yaml (limits, timeouts, attempts).
-- Generated: python -m devstack.policies safety-migration <file>. Every row is upserted, so
-- after this migration the table holds what the declarations say, whatever earlier
-- migrations inserted; tests/unit/test_jobtypes.py fails when the declarations or
-- safety.yaml change and the newest such migration no longer holds what they generate.

"""


def safety_migration() -> str:
    """The text of a migration that upserts every job type's safety policy."""
    return MIGRATION_HEADER + safety_sql()


USAGE = """usage: python -m devstack.policies safety-sql            print the upsert
       python -m devstack.policies safety-migration FILE  write it as a migration"""


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args not in (["safety-sql"],) and not (len(args) == 2 and args[0] == "safety-migration"):
        print(USAGE, file=sys.stderr)
        return 2
    try:
        if args[0] == "safety-sql":
            sys.stdout.write(safety_sql())
        else:
            Path(args[1]).write_text(safety_migration())
            print(f"wrote {args[1]}", file=sys.stderr)
    except PolicyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
