"""The documentation is held to the code it describes.

* Every fenced block the docs mark as runnable (```` ```sql runnable ```` or
  ```` ```sh runnable ````, see docs/README.md) runs against the local stack and must succeed:
  SQL through ``psql`` as the database owner inside a transaction that also loads a small
  sample fleet and is rolled back; sh with ``bash -euo pipefail`` in an empty temporary
  folder, with the stack's ``SUPABASE_*`` variables in the environment.
* Every view the migrations create is documented in docs/sql-reporting.md with a runnable
  example; each example returns rows on the sample fleet, and also runs as a signed-in
  viewer (the views are security_invoker, so RLS applies).
* Every relative link (and #anchor) in docs/ and README.md resolves.
* The executor option table in docs/executor.md is generated from executor/config.py:
  ``python -m tests.integration.test_docs --write-options`` rewrites it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
MIGRATIONS = ROOT / "supabase" / "migrations"
REPORTING = DOCS / "sql-reporting.md"
EXECUTOR_DOC = DOCS / "executor.md"
RUNNABLE_LANGS = {"sql", "sh"}
BLOCK_TIMEOUT_S = 300


def markdown_files() -> list[Path]:
    return sorted(DOCS.rglob("*.md")) + [ROOT / "README.md"]


# --- fenced blocks --------------------------------------------------------------------------
@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    flags: tuple[str, ...]
    code: str

    @property
    def runnable(self) -> bool:
        return "runnable" in self.flags

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


_FENCE = re.compile(r"^ {0,3}(?P<fence>`{3,}|~{3,})(?P<info>.*)$")


def blocks(path: Path) -> list[Block]:
    out: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, info = m["fence"], m["info"].strip().split()
        start, body = i, []
        i += 1
        while i < len(lines):
            close = _FENCE.match(lines[i])
            if (
                close
                and close["fence"][0] == fence[0]
                and len(close["fence"]) >= len(fence)
                and not close["info"].strip()
            ):
                break
            body.append(lines[i])
            i += 1
        out.append(Block(path, start + 1, info[0] if info else "", tuple(info[1:]), "\n".join(body) + "\n"))
        i += 1
    return out


def all_blocks() -> list[Block]:
    return [b for p in markdown_files() for b in blocks(p)]


def runnable_blocks(lang: str) -> list[Block]:
    return [b for b in all_blocks() if b.runnable and b.lang == lang]


def test_runnable_marker_is_used_only_on_languages_the_test_runs():
    wrong = [
        f"{b.id} ({b.lang or 'no language'})"
        for b in all_blocks()
        if b.runnable and b.lang not in RUNNABLE_LANGS
    ]
    assert not wrong, f"only {sorted(RUNNABLE_LANGS)} blocks can be runnable: {wrong}"


# --- views ----------------------------------------------------------------------------------
_CREATE_VIEW = re.compile(
    r"\bcreate\s+(?:or\s+replace\s+)?(?:materialized\s+)?view\s+(?:if\s+not\s+exists\s+)?"
    r"(?:\"?public\"?\.)?\"?(\w+)\"?",
    re.IGNORECASE,
)
_DROP_VIEW = re.compile(
    r"\bdrop\s+(?:materialized\s+)?view\s+(?:if\s+exists\s+)?(?:\"?public\"?\.)?\"?(\w+)\"?", re.IGNORECASE
)
_SQL_COMMENT = re.compile(r"--[^\n]*")


def migration_views() -> list[str]:
    """Views the migrations leave behind, in the order they first appear."""
    views: dict[str, None] = {}
    for path in sorted(MIGRATIONS.glob("*.sql")):
        sql = _SQL_COMMENT.sub("", path.read_text(encoding="utf-8"))
        events = [(m.start(), "create", m[1].lower()) for m in _CREATE_VIEW.finditer(sql)]
        events += [(m.start(), "drop", m[1].lower()) for m in _DROP_VIEW.finditer(sql)]
        for _, kind, name in sorted(events):
            if kind == "create":
                views[name] = None
            else:
                views.pop(name, None)
    return list(views)


def documented_views() -> dict[str, list[Block]]:
    """View name -> runnable SQL examples in its section of sql-reporting.md (``## `name` ``)."""
    text = REPORTING.read_text(encoding="utf-8")
    sections: dict[str, list[Block]] = {}
    heads = [(m.start(), m[1]) for m in re.finditer(r"^##\s+`(\w+)`", text, re.MULTILINE)]
    examples = [b for b in blocks(REPORTING) if b.runnable and b.lang == "sql"]
    for n, (pos, name) in enumerate(heads):
        first = text.count("\n", 0, pos) + 1
        last = text.count("\n", 0, heads[n + 1][0]) + 1 if n + 1 < len(heads) else 10**9
        sections[name] = [b for b in examples if first < b.line < last and name in b.code]
    return sections


def test_the_migrations_have_views_at_all():
    # guards the regular expression: if it stopped matching, every later check would pass vacuously
    assert "v_job_stats_by_type" in migration_views()


def test_every_view_in_the_migrations_is_documented_with_a_runnable_example():
    documented = documented_views()
    missing = [v for v in migration_views() if v not in documented]
    assert not missing, f"views without a '## `name`' section in {REPORTING.relative_to(ROOT)}: {missing}"
    no_example = [v for v in migration_views() if not documented[v]]
    assert not no_example, f"views whose section has no ```sql runnable example that names them: {no_example}"


def test_sql_reporting_documents_no_view_that_does_not_exist():
    extra = sorted(set(documented_views()) - set(migration_views()))
    assert not extra, f"sections for views the migrations do not create: {extra}"


# --- links ----------------------------------------------------------------------------------
_LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REF_DEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.MULTILINE)
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def _prose(text: str) -> str:
    """The text without fenced blocks and inline code (links inside code are not links)."""
    lines, out, fence = text.splitlines(), [], None
    for line in lines:
        m = _FENCE.match(line)
        if fence is None and m:
            fence = m["fence"]
            out.append("")
            continue
        if fence is not None:
            if m and m["fence"][0] == fence[0] and len(m["fence"]) >= len(fence) and not m["info"].strip():
                fence = None
            out.append("")
            continue
        out.append(re.sub(r"(`+)(?:(?!\1).)+?\1", "", line))
    return "\n".join(out)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"<[^>]+>", "", heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = _prose(path.read_text(encoding="utf-8")) if path.suffix == ".md" else ""
    seen: dict[str, int] = {}
    out = set(re.findall(r"""(?:id|name)=["']([^"']+)["']""", text))
    raw = path.read_text(encoding="utf-8")
    # headings come from the raw text minus code blocks (inline code stays part of a heading)
    fence = None
    for line in raw.splitlines():
        m = _FENCE.match(line)
        if m and (fence is None or (m["fence"][0] == fence[0] and not m["info"].strip())):
            fence = None if fence is not None else m["fence"]
            continue
        if fence is not None:
            continue
        h = re.match(r"^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
        if h:
            base = slug(h[1])
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


def relative_links(path: Path) -> list[str]:
    text = _prose(path.read_text(encoding="utf-8"))
    targets = [m[1] for m in _LINK.finditer(text)] + [m[1] for m in _REF_DEF.finditer(text)]
    return [t for t in targets if not _SCHEME.match(t) and not t.startswith("//")]


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path: Path):
    broken = []
    for target in relative_links(path):
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            broken.append(f"{target}: no such file")
            continue
        if not dest.is_relative_to(ROOT):
            broken.append(f"{target}: outside the repository")
            continue
        if anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading or id '{anchor}' in {dest.relative_to(ROOT)}")
    assert not broken, f"{path.relative_to(ROOT)}: " + "; ".join(broken)


def test_readme_links_the_documentation():
    links = relative_links(ROOT / "README.md")
    assert any(t.startswith("docs/") for t in links), "README.md links no page under docs/"
    pages = {p.name for p in DOCS.glob("*.md")}
    linked = {Path(t.partition("#")[0]).name for t in links if t.startswith("docs/")}
    assert not pages - linked, f"docs pages README.md does not link: {sorted(pages - linked)}"


# --- executor options (generated from executor/config.py) -------------------------------------
BEGIN_OPTIONS = (
    "<!-- BEGIN executor options: generated from executor/config.py, "
    "rewrite with `python -m tests.integration.test_docs --write-options` -->"
)
END_OPTIONS = "<!-- END executor options -->"


def config_option_rows() -> list[dict[str, str]]:
    """The executor's options, one dict per field of ExecutorSettings (executor/config.py)."""
    from executor.config import option_rows

    return option_rows()


def _md(cell: str) -> str:
    return cell.replace("``", "`").replace("|", "\\|")


def options_markdown() -> str:
    rows = config_option_rows()
    out = [
        BEGIN_OPTIONS,
        "",
        "| option | environment variable | unit | default | meaning |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| `{r['option']}` | `RACKPILOT_{r['option'].upper()}` | {_md(r['unit'])} | "
            f"{_md(r['default'])} | {_md(r['meaning'])} |"
        )
    out += ["", END_OPTIONS]
    return "\n".join(out)


def _options_region(text: str) -> tuple[int, int]:
    start, end = text.find(BEGIN_OPTIONS), text.find(END_OPTIONS)
    assert start >= 0 and end > start, (
        f"{EXECUTOR_DOC.relative_to(ROOT)} has no generated option table markers"
    )
    return start, end + len(END_OPTIONS)


def write_options() -> bool:
    text = EXECUTOR_DOC.read_text(encoding="utf-8")
    start, end = _options_region(text)
    new = text[:start] + options_markdown() + text[end:]
    if new != text:
        EXECUTOR_DOC.write_text(new, encoding="utf-8")
    return new != text


def test_every_executor_setting_has_its_unit_and_meaning_on_its_field():
    from executor.config import ExecutorSettings

    rows = {r["option"]: r for r in config_option_rows()}
    assert set(rows) == set(ExecutorSettings.model_fields)
    bare = [n for n, r in rows.items() if not r["unit"] or not r["meaning"]]
    assert not bare, f"executor/config.py: fields without a unit or a description: {bare}"
    # a default is shown as written only where the code computes it or has none: a number,
    # a flag or a text is shown from the field itself, so the table cannot misstate it
    worded = []
    for name, f in ExecutorSettings.model_fields.items():
        extra = f.json_schema_extra if isinstance(f.json_schema_extra, dict) else {}
        if "default_text" in extra and not (
            f.default_factory is not None or f.default is None or isinstance(f.default, Path)
        ):
            worded.append(f"{name} (default {f.default!r})")
    assert not worded, "a default given as text where the field's own value would do: " + ", ".join(worded)


def test_executor_doc_option_table_is_generated_from_config():
    text = EXECUTOR_DOC.read_text(encoding="utf-8")
    start, end = _options_region(text)
    assert text[start:end] == options_markdown(), (
        "docs/executor.md's option table is out of date with executor/config.py; "
        "run: python -m tests.integration.test_docs --write-options"
    )


# --- running the blocks ---------------------------------------------------------------------
# A small fleet the SQL examples can show: one site with an executor, a vCenter cluster with a
# host and a VM that blocks it, a server with firmware behind the catalog, and jobs in every
# interesting state. Loaded with triggers off (replica) so the rows can carry a history
# (finished jobs, expired leases) that would otherwise take an executor to produce; the
# transaction is always rolled back.
SAMPLE_VIEWER = "d0c50000-0000-4000-8000-0000000000a1"
SAMPLE_FLEET = f"""
set local session_replication_role = replica;
insert into auth.users (id, email) values ('{SAMPLE_VIEWER}', 'docs-viewer@example.com');
insert into public.user_roles (user_id, role) values ('{SAMPLE_VIEWER}', 'viewer');
insert into public.sites (id, name) values ('d0c50000-0000-4000-8000-000000000001', 'docs-dc1');
insert into public.executors (id, site_id, name, public_key, key_id, version, last_heartbeat_at, metrics, metrics_at)
values ('d0c50000-0000-4000-8000-000000000002', 'd0c50000-0000-4000-8000-000000000001', 'docs-dc1-exec-1',
        repeat('A', 43), 'x25519:docsexample0001', '0.1.0', now() - interval '12 seconds',
        '{{"jobs_in_flight": 1, "api_p95_ms": 41.5, "realtime": true}}', now() - interval '12 seconds'),
       ('d0c50000-0000-4000-8000-000000000003', 'd0c50000-0000-4000-8000-000000000001', 'docs-dc1-exec-2',
        repeat('B', 43), 'x25519:docsexample0002', '0.1.0', now() - interval '20 minutes', '{{}}', null);
insert into public.credential_sets (id, site_id, name, kind, username)
values ('d0c50000-0000-4000-8000-000000000004', 'd0c50000-0000-4000-8000-000000000001', 'idrac-root', 'idrac',
        'root');
insert into public.credential_envelopes (credential_set_id, executor_id, key_id, sealed_secret)
values ('d0c50000-0000-4000-8000-000000000004', 'd0c50000-0000-4000-8000-000000000002', 'x25519:docsexample0001',
        '{{"v": 1, "kid": "x25519:docsexample0001"}}');
insert into public.vcenters (id, site_id, name, address)
values ('d0c50000-0000-4000-8000-000000000010', 'd0c50000-0000-4000-8000-000000000001', 'vc1', 'vc1.example.net');
insert into public.clusters (id, vcenter_id, site_id, name, moref)
values ('d0c50000-0000-4000-8000-000000000011', 'd0c50000-0000-4000-8000-000000000010',
        'd0c50000-0000-4000-8000-000000000001', 'prod-a', 'domain-c1');
insert into public.servers (id, site_id, name, idrac_address, model)
values ('d0c50000-0000-4000-8000-000000000020', 'd0c50000-0000-4000-8000-000000000001', 'r750-01',
        'https://10.0.0.11', 'PowerEdge R750'),
       ('d0c50000-0000-4000-8000-000000000021', 'd0c50000-0000-4000-8000-000000000001', 'r750-02',
        'https://10.0.0.12', 'PowerEdge R750');
insert into public.esxi_hosts (id, vcenter_id, cluster_id, server_id, name, moref)
values ('d0c50000-0000-4000-8000-000000000012', 'd0c50000-0000-4000-8000-000000000010',
        'd0c50000-0000-4000-8000-000000000011', 'd0c50000-0000-4000-8000-000000000020', 'esx-01', 'host-1');
insert into public.vms (id, vcenter_id, host_id, name, moref, power_state, cdrom_connected)
values ('d0c50000-0000-4000-8000-000000000013', 'd0c50000-0000-4000-8000-000000000010',
        'd0c50000-0000-4000-8000-000000000012', 'build-agent-7', 'vm-7', 'on', true);
insert into public.server_firmware (server_id, component, fqdd, version)
values ('d0c50000-0000-4000-8000-000000000020', 'BIOS', 'BIOS.Setup.1-1', '1.9.2'),
       ('d0c50000-0000-4000-8000-000000000020', 'iDRAC', 'iDRAC.Embedded.1', '7.10.30.00'),
       ('d0c50000-0000-4000-8000-000000000021', 'BIOS', 'BIOS.Setup.1-1', '1.10.2');
insert into public.firmware_catalogs (id, site_id, name, url)
values ('d0c50000-0000-4000-8000-000000000030', 'd0c50000-0000-4000-8000-000000000001', 'dell-2026-11',
        'https://repo.example.net/Catalog.xml.gz');
insert into public.firmware_packages (catalog_id, component, model, version, path, criticality)
values ('d0c50000-0000-4000-8000-000000000030', 'BIOS', 'PowerEdge R750', '1.10.2', 'BIOS_R750_1.10.2.EXE', 'recommended'),
       ('d0c50000-0000-4000-8000-000000000030', 'iDRAC', '', '7.10.30.00', 'iDRAC_7.10.30.00.EXE', 'optional');
insert into public.jobs (id, type, status, site_id, created_by, created_at, started_at, finished_at, attempts)
values ('d0c50000-0000-4000-8000-000000000040', 'firmware_update', 'completed', 'd0c50000-0000-4000-8000-000000000001',
        '{SAMPLE_VIEWER}', now() - interval '3 days', now() - interval '3 days', now() - interval '3 days' + interval '41 minutes', 1),
       ('d0c50000-0000-4000-8000-000000000041', 'power_operation', 'completed', 'd0c50000-0000-4000-8000-000000000001',
        '{SAMPLE_VIEWER}', now() - interval '2 days', now() - interval '2 days', now() - interval '2 days' + interval '4 minutes', 1);
insert into public.jobs (id, type, status, site_id, created_by, created_at, started_at, finished_at, error, attempts)
values ('d0c50000-0000-4000-8000-000000000042', 'firmware_update', 'failed', 'd0c50000-0000-4000-8000-000000000001',
        '{SAMPLE_VIEWER}', now() - interval '1 day', now() - interval '1 day', now() - interval '1 day' + interval '15 minutes',
        'LifecycleControllerNotReady: Lifecycle Controller not ready after 900 s', 1);
insert into public.jobs (id, type, status, pause_reason, site_id, cluster_id, created_by, started_at, attempts, lease_epoch)
values ('d0c50000-0000-4000-8000-000000000043', 'rolling_cluster_update', 'paused', 'blockers',
        'd0c50000-0000-4000-8000-000000000001', 'd0c50000-0000-4000-8000-000000000011', '{SAMPLE_VIEWER}',
        now() - interval '2 hours', 1, 1),
       ('d0c50000-0000-4000-8000-000000000044', 'firmware_update', 'paused', 'executor_lost',
        'd0c50000-0000-4000-8000-000000000001', null, '{SAMPLE_VIEWER}', now() - interval '90 minutes', 1, 2);
insert into public.jobs (id, type, status, site_id, created_by, started_at, claimed_by, lease_expires_at, lease_epoch, attempts)
values ('d0c50000-0000-4000-8000-000000000045', 'scp_backup', 'running', 'd0c50000-0000-4000-8000-000000000001',
        '{SAMPLE_VIEWER}', now() - interval '30 minutes', 'd0c50000-0000-4000-8000-000000000002',
        now() - interval '5 minutes', 1, 1);
insert into public.jobs (id, type, status, site_id, created_by, scheduled_for)
values ('d0c50000-0000-4000-8000-000000000046', 'firmware_update', 'pending', 'd0c50000-0000-4000-8000-000000000001',
        '{SAMPLE_VIEWER}', now()),
       ('d0c50000-0000-4000-8000-000000000047', 'scp_backup', 'pending', 'd0c50000-0000-4000-8000-000000000001',
        '{SAMPLE_VIEWER}', now() + interval '6 hours');
insert into public.job_tasks (job_id, target_kind, target_id, target_name, status, started_at, finished_at, error)
values ('d0c50000-0000-4000-8000-000000000040', 'server', 'd0c50000-0000-4000-8000-000000000020', 'r750-01', 'completed',
        now() - interval '3 days', now() - interval '3 days' + interval '38 minutes', null),
       ('d0c50000-0000-4000-8000-000000000042', 'server', 'd0c50000-0000-4000-8000-000000000021', 'r750-02', 'failed',
        now() - interval '1 day', now() - interval '1 day' + interval '15 minutes', 'LifecycleControllerNotReady'),
       ('d0c50000-0000-4000-8000-000000000043', 'host', 'd0c50000-0000-4000-8000-000000000012', 'esx-01', 'pending',
        null, null, null);
insert into public.workflow_executions (id, job_id, seq, step_key, name, status, resumable, started_at, attempts)
values ('d0c50000-0000-4000-8000-000000000050', 'd0c50000-0000-4000-8000-000000000044', 3, 'stage', 'stage',
        'running', false, now() - interval '80 minutes', 1);
update public.jobs set current_step_id = 'd0c50000-0000-4000-8000-000000000050'
 where id = 'd0c50000-0000-4000-8000-000000000044';
insert into public.job_blockers (id, job_id, kind, host_id, vm_id, description, detected_at)
values ('d0c50000-0000-4000-8000-000000000060', 'd0c50000-0000-4000-8000-000000000043', 'cdrom_connected',
        'd0c50000-0000-4000-8000-000000000012', 'd0c50000-0000-4000-8000-000000000013',
        'build-agent-7 on esx-01: a CD-ROM is connected', now() - interval '100 minutes');
insert into public.bmc_calls (job_id, site_id, step, target, protocol, method, path, status, duration_ms, message_id,
                              error, at)
values ('d0c50000-0000-4000-8000-000000000042', 'd0c50000-0000-4000-8000-000000000001', 'compliance', 'r750-02',
        'redfish', 'POST', '/redfish/v1/SessionService/Sessions', 201, 180, null, null, now() - interval '1 day'),
       ('d0c50000-0000-4000-8000-000000000042', 'd0c50000-0000-4000-8000-000000000001', 'stage', 'r750-02',
        'redfish', 'POST', '/redfish/v1/UpdateService/Actions/UpdateService.SimpleUpdate', 503, 95,
        'IDRAC.2.8.SYS518', null, now() - interval '1 day' + interval '9 minutes'),
       ('d0c50000-0000-4000-8000-000000000042', 'd0c50000-0000-4000-8000-000000000001', 'stage', 'r750-02',
        'redfish', 'GET', '/redfish/v1/Managers/iDRAC.Embedded.1', null, 10004, null, 'ReadTimeout',
        now() - interval '1 day' + interval '12 minutes');
insert into public.job_schedules (id, site_id, name, job_type, params, recurrence, timezone, next_run_at, last_run_at,
                                  last_status, last_error)
values ('d0c50000-0000-4000-8000-000000000070', 'd0c50000-0000-4000-8000-000000000001', 'nightly inventory',
        'inventory_refresh', '{{"site_id": "d0c50000-0000-4000-8000-000000000001"}}', '0 1 * * *', 'Europe/Berlin',
        now() + interval '9 hours', now() - interval '15 hours', 'failed',
        'no active executor of the site takes inventory_refresh jobs, so the job would never run');
insert into public.jobs (id, type, status, site_id, created_by, created_at, started_at, finished_at, attempts)
values ('d0c50000-0000-4000-8000-000000000048', 'inventory_refresh', 'completed', 'd0c50000-0000-4000-8000-000000000001',
        '{SAMPLE_VIEWER}', now() - interval '4 hours', now() - interval '4 hours', now() - interval '4 hours' + interval '2 minutes', 1);
insert into public.firmware_compliance_history (site_id, server_id, job_id, recorded_at, verdict, components, outdated,
                                                urgent, unknown)
values ('d0c50000-0000-4000-8000-000000000001', 'd0c50000-0000-4000-8000-000000000020',
        'd0c50000-0000-4000-8000-000000000048', now() - interval '4 hours' + interval '2 minutes', 'outdated', 2, 1, 0, 0),
       ('d0c50000-0000-4000-8000-000000000001', 'd0c50000-0000-4000-8000-000000000021',
        'd0c50000-0000-4000-8000-000000000048', now() - interval '4 hours' + interval '2 minutes', 'compliant', 1, 0, 0, 0);
set local session_replication_role = origin;
"""


def _venv_path() -> str:
    return os.pathsep.join(
        [str(Path(sys.executable).parent), str(ROOT / "node_modules" / ".bin"), os.environ.get("PATH", "")]
    )


def run_sql(db_url: str, code: str, *, as_viewer: bool = False) -> subprocess.CompletedProcess:
    role = ""
    if as_viewer:
        claims = json.dumps({"sub": SAMPLE_VIEWER, "role": "authenticated"})
        role = f"set local role authenticated;\nselect set_config('request.jwt.claims', '{claims}', true) \\g /dev/null\n"
    script = (
        "\\set ON_ERROR_STOP on\n\\set QUIET on\nbegin;\nset local statement_timeout = '60s';\n"
        f"{SAMPLE_FLEET}\n{role}\\set QUIET off\n{code}\n\\set QUIET on\nrollback;\n"
    )
    return subprocess.run(
        ["psql", db_url, "-X", "--no-psqlrc", "-P", "pager=off", "-f", "-"],
        input=script,
        text=True,
        capture_output=True,
        timeout=BLOCK_TIMEOUT_S,
        env={**os.environ, "PATH": _venv_path()},
    )


def _last_row_count(stdout: str) -> int | None:
    counts = re.findall(r"^\((\d+) rows?\)$", stdout, re.MULTILINE)
    return int(counts[-1]) if counts else None


@pytest.mark.parametrize("block", runnable_blocks("sql"), ids=lambda b: b.id)
def test_runnable_sql_block(block: Block, db_url):
    res = run_sql(db_url, block.code)
    assert res.returncode == 0 and "ERROR:" not in res.stderr, (
        f"{block.id} failed:\n{block.code}\n--- stdout\n{res.stdout}\n--- stderr\n{res.stderr}"
    )
    if block.path == REPORTING:
        n = _last_row_count(res.stdout)
        assert n, f"{block.id}: a reporting example should show rows on the sample fleet, got:\n{res.stdout}"


@pytest.mark.parametrize(
    "block", [b for b in runnable_blocks("sql") if b.path == REPORTING], ids=lambda b: b.id
)
def test_reporting_example_runs_as_a_viewer(block: Block, db_url):
    res = run_sql(db_url, block.code, as_viewer=True)
    assert res.returncode == 0 and "ERROR:" not in res.stderr, (
        f"{block.id} failed for a viewer:\n{block.code}\n--- stdout\n{res.stdout}\n--- stderr\n{res.stderr}"
    )


def test_every_view_in_the_database_is_documented(db_url):
    """Catches views made by dynamic SQL, which the migration scan cannot see."""
    import psycopg2

    conn = psycopg2.connect(db_url)
    try:
        with conn.cursor() as cur:
            cur.execute("""select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
                            where n.nspname = 'public' and c.relkind in ('v', 'm')
                              and not exists (select 1 from pg_depend d where d.objid = c.oid and d.deptype = 'e')""")
            live = {r[0] for r in cur.fetchall()}
    finally:
        conn.close()
    missing = sorted(live - set(documented_views()))
    assert not missing, f"views in the database without a section in docs/sql-reporting.md: {missing}"


@pytest.mark.parametrize("block", runnable_blocks("sh"), ids=lambda b: b.id)
def test_runnable_sh_block(block: Block, supabase_env):
    with tempfile.TemporaryDirectory(prefix="rackpilot-docs-") as tmp:
        script = Path(tmp) / "block.sh"
        script.write_text(block.code, encoding="utf-8")
        env = {**os.environ, **supabase_env, "PATH": _venv_path(), "HOME": tmp, "PSQLRC": "/dev/null"}
        res = subprocess.run(
            ["bash", "-euo", "pipefail", str(script)],
            cwd=tmp,
            env=env,
            text=True,
            capture_output=True,
            timeout=BLOCK_TIMEOUT_S,
        )
    assert res.returncode == 0, (
        f"{block.id} exited {res.returncode}:\n{block.code}\n--- stdout\n{res.stdout}\n--- stderr\n{res.stderr}"
    )


def test_the_docs_have_runnable_blocks_of_both_kinds():
    assert runnable_blocks("sql") and runnable_blocks("sh")


if __name__ == "__main__":
    if sys.argv[1:] == ["--write-options"]:
        print("docs/executor.md: option table " + ("rewritten" if write_options() else "already up to date"))
        sys.exit(0)
    print("usage: python -m tests.integration.test_docs --write-options", file=sys.stderr)
    sys.exit(2)
