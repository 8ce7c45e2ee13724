// Turning a job request into a validated plan, and writing it: shared by create-job and
// job-control's retry. Everything runs inside the caller's transaction (db.ts), so the
// checks and the inserts see one snapshot and either all rows are written or none.

import jobSchemas from "./job-schemas.json" with { type: "json" };
import { badRequest, unprocessable } from "./api.ts";
import { rejectPrototypeKeys } from "./http.ts";
import type { Tx } from "./db.ts";
import { type Endpoint, unverified } from "./endpoints.ts";
import {
  type ClusterActivity,
  type OnePerCluster,
  type SafetyPolicy,
  safetyViolations,
  violationError,
  type WindowRow,
} from "./policy.ts";
import { compileCheck, normalize, type Schema, validate } from "./validate.ts";

/**
 * How planJob plans a job type: data declared with the type (executor/jobtypes.py), so no
 * branch here names a type. ``hosts_out`` (present for a type that takes hosts out of
 * service): a ``param`` giving the count, ``all_targets`` of the cluster, or else one at a
 * time; none while a ``none_when`` field has one of its values.
 */
export interface PlanHints {
  tasks: "targets" | "cluster_hosts";
  hosts_out?: { param?: string; all_targets?: boolean; none_when?: Record<string, unknown[]> };
  ssh_credential?: string;
  site_default_catalog_unless?: string[];
  one_per_cluster?: OnePerCluster;
}

export interface JobTypeRules {
  risk: "low" | "medium" | "high";
  requires_window: boolean;
  takes_hosts_out: boolean;
  target_kinds: string[];
  handler: string;
  console: string;
  plan: PlanHints;
}

export const JOB_SCHEMAS = jobSchemas as unknown as {
  version: number;
  target_kinds: string[];
  job_types: Record<string, Schema>;
  job_type_rules: Record<string, JobTypeRules>;
};
for (const s of Object.values(JOB_SCHEMAS.job_types)) compileCheck(s);
export const JOB_TYPES = Object.keys(JOB_SCHEMAS.job_types).sort();

/** The planning hints of a job type create-job takes. */
export function planHints(jobType: string): PlanHints {
  const rules = JOB_SCHEMAS.job_type_rules[jobType];
  if (!rules) throw new Error(`job-schemas.json has no rules for ${jobType}`);
  return rules.plan;
}

/** Hosts of one cluster a job has out of service at once, by its type's ``hosts_out`` hint. */
export function hostsOutAtOnce(hint: NonNullable<PlanHints["hosts_out"]>, params: Record<string, unknown>,
  inCluster: number): number {
  for (const [field, values] of Object.entries(hint.none_when ?? {})) {
    if (values.includes(params[field])) return 0;
  }
  if (hint.param) return Math.min(params[hint.param] as number, inCluster);
  if (hint.all_targets) return inCluster;
  return 1;
}

const UUID = { type: "string", format: "uuid" };

/** The create-job request body (params are checked against their job type's schema). */
export const CREATE_JOB_SCHEMA: Schema = {
  type: "object",
  additionalProperties: false,
  required: ["type", "params"],
  properties: {
    type: { type: "string", maxLength: 64 },
    params: { type: "object" },
    site_id: UUID,
    maintenance_window_id: { anyOf: [UUID, { type: "null" }] },
    scheduled_for: { anyOf: [{ type: "string", format: "date-time" }, { type: "null" }] },
    priority: { type: "integer", minimum: 0, maximum: 100 },
    description: { type: "string", maxLength: 2000 },
    dry_run: { type: "boolean" },
  },
};
compileCheck(CREATE_JOB_SCHEMA);

export interface JobRequest {
  type: string;
  params: Record<string, unknown>;
  site_id?: string;
  maintenance_window_id?: string | null;
  scheduled_for?: string | null;
  priority?: number;
  description?: string;
  dry_run?: boolean;
}

export interface TaskPlan {
  target_kind: string;
  target_id: string;
  target_name: string;
  seq: number;
}

export interface JobPlan {
  type: string;
  site_id: string;
  cluster_id: string | null;
  params: Record<string, unknown>;
  scope: { targets: { kind: string; id: string; name: string }[] };
  priority: number;
  description: string;
  scheduled_for: string;
  maintenance_window_id: string | null;
  credential_set_ids: string[];
  /** Where each credential may be presented, as its admin sealed it (display copy); the
   * executor refuses any other endpoint. Unverified TLS (insecure, plain HTTP, unchecked
   * SSH host keys) is listed so the pre-flight shows it. */
  credentials: CredentialPlan[];
  risk: string;
  requires_window: boolean;
  tasks: TaskPlan[];
}

export interface CredentialPlan {
  id: string;
  name: string;
  kind: string;
  endpoints: Endpoint[];
  unverified_tls: string[]; // "scheme://host:port (insecure|plain-http|insecure-host-key)"
  presentable: boolean; // false: sealed without endpoints, the executor presents it nowhere
}

/** The job's credential sets as the pre-flight shows them (read as the caller). */
async function credentialPlans(tx: Tx, ids: string[]): Promise<CredentialPlan[]> {
  if (!ids.length) return [];
  const rows = await tx<{ id: string; name: string; kind: string; endpoints: Endpoint[] }[]>`
    select id, name, kind::text, endpoints from public.credential_sets where id = any(${ids}::uuid[]) order by name, id`;
  const word = (e: Endpoint) =>
    e.tls.insecure ? "insecure" : e.tls.allow_plain_http ? "plain-http" : "insecure-host-key";
  return rows.map((r) => ({
    ...r,
    endpoints: r.endpoints ?? [],
    unverified_tls: (r.endpoints ?? []).filter(unverified).map((e) => `${e.scheme}://${e.host}:${e.port} (${word(e)})`),
    presentable: (r.endpoints ?? []).length > 0,
  }));
}

/** Structural checks that need no database: body shape, job type, params schema. */
export function checkRequest(body: Record<string, unknown>): JobRequest {
  // readJsonObject already refused these; job-control's retry passes params read back
  // from the database, so check again here (400 naming the key, never a 500)
  rejectPrototypeKeys(body);
  const issues = validate(CREATE_JOB_SCHEMA, body);
  if (issues.length) throw badRequest("invalid_request", "the request body does not match the create-job schema", { issues });
  const req = body as unknown as JobRequest;
  const schema = JOB_SCHEMAS.job_types[req.type];
  if (!schema) {
    throw badRequest("unknown_job_type", `unknown job type ${JSON.stringify(req.type.slice(0, 64))}`, { job_types: JOB_TYPES });
  }
  const pIssues = validate(schema, req.params);
  if (pIssues.length) {
    throw badRequest("invalid_params", `the params do not match the ${req.type} schema`, {
      issues: pIssues.map((i) => ({ path: `/params${i.path}`, message: i.message })),
    });
  }
  return { ...req, params: normalize(schema, req.params) as Record<string, unknown> };
}

/** The ids each x-target field of the params names, by kind, in request order. */
export function targetIds(jobType: string, params: Record<string, unknown>): Map<string, string[]> {
  const props = (JOB_SCHEMAS.job_types[jobType].properties ?? {}) as Record<string, Schema>;
  const out = new Map<string, string[]>();
  for (const [field, s] of Object.entries(props)) {
    const kind = s["x-target"] as string | undefined;
    const v = params[field];
    // an empty list names nothing (inventory_refresh: empty server_ids = the site_id's servers)
    if (!kind || v === undefined || v === null || (Array.isArray(v) && v.length === 0)) continue;
    const ids = (Array.isArray(v) ? v : [v]) as string[];
    out.set(kind, [...(out.get(kind) ?? []), ...ids.map((x) => x.toLowerCase())]);
  }
  return out;
}

interface TargetRow {
  id: string;
  site_id: string;
  name: string;
  cluster_id: string | null;
  credential_set_ids: string[]; // nulls removed in SQL (postgres.js reads NULL in uuid[] as "NULL")
}

// One query per kind. Rows are read as the caller, so a target the caller may not see is
// reported exactly like one that does not exist.
async function loadTargets(tx: Tx, kind: string, ids: string[]): Promise<TargetRow[]> {
  switch (kind) {
    case "server":
      return await tx`
        select s.id, s.site_id, s.name, h.cluster_id, array_remove(array[s.credential_set_id], null) as credential_set_ids
          from public.servers s left join public.esxi_hosts h on h.server_id = s.id
         where s.id = any(${ids}::uuid[])`;
    case "host":
      return await tx`
        select h.id, v.site_id, h.name, h.cluster_id, array_remove(array[v.credential_set_id, s.credential_set_id], null) as credential_set_ids
          from public.esxi_hosts h join public.vcenters v on v.id = h.vcenter_id
          left join public.servers s on s.id = h.server_id
         where h.id = any(${ids}::uuid[])`;
    case "cluster":
      return await tx`
        select c.id, c.site_id, c.name, c.id as cluster_id, array_remove(array[v.credential_set_id], null) as credential_set_ids
          from public.clusters c join public.vcenters v on v.id = c.vcenter_id
         where c.id = any(${ids}::uuid[])`;
    case "vcenter":
      return await tx`
        select id, site_id, name, null::uuid as cluster_id, array_remove(array[credential_set_id], null) as credential_set_ids
          from public.vcenters where id = any(${ids}::uuid[])`;
    case "vm":
      // a VM belongs to its vCenter's site; its job opens the vCenter with the vCenter's set
      return await tx`
        select m.id, v.site_id, m.name, h.cluster_id, array_remove(array[v.credential_set_id], null) as credential_set_ids
          from public.vms m join public.vcenters v on v.id = m.vcenter_id
          left join public.esxi_hosts h on h.id = m.host_id
         where m.id = any(${ids}::uuid[])`;
    case "replication_pair":
      return await tx`
        select id, site_id, name, null::uuid as cluster_id, array_remove(array[credential_set_id], null) as credential_set_ids
          from public.replication_pairs where id = any(${ids}::uuid[])`;
    case "site":
      return await tx`
        select id, id as site_id, name, null::uuid as cluster_id, '{}'::uuid[] as credential_set_ids
          from public.sites where id = any(${ids}::uuid[])`;
    case "firmware_catalog":
      return await tx`
        select id, site_id, name, null::uuid as cluster_id, '{}'::uuid[] as credential_set_ids
          from public.firmware_catalogs where id = any(${ids}::uuid[])`;
    case "ome_instance":
      return await tx`
        select id, site_id, name, null::uuid as cluster_id, array_remove(array[credential_set_id], null) as credential_set_ids
          from public.ome_instances where id = any(${ids}::uuid[])`;
  }
  throw new Error(`no loader for target kind ${kind}`);
}

interface CatalogRef {
  id: string;
  site_id: string;
  url: string;
  expected_sha256: string | null;
  components: string[] | null;
}

/**
 * Jobs name a registered catalog or baseline instead of a URL typed by hand: a firmware
 * selection's catalog_id / baseline_id (and firmware_compliance's catalog_id) become the
 * catalog's URL (and the baseline's components, unless the request narrows them itself),
 * read as the caller and checked to be of the job's site. A selection naming none of URL,
 * catalog and baseline is refused, so a stored job always carries catalog_url. A type with
 * a catalog of its own (the ``site_default_catalog_unless`` hint: firmware_compliance) has
 * its top-level catalog_id resolved, and naming no source at all takes the site's default
 * catalog.
 */
export async function resolveCatalogs(tx: Tx, jobType: string, params: Record<string, unknown>, siteId: string):
  Promise<Record<string, unknown>> {
  const lookup = async (catalogId: unknown, baselineId: unknown): Promise<CatalogRef> => {
    const [r] = baselineId
      ? await tx<CatalogRef[]>`
          select b.id, b.site_id, c.url, c.expected_sha256, b.components from public.firmware_baselines b
            join public.firmware_catalogs c on c.id = b.catalog_id where b.id = ${String(baselineId).toLowerCase()}`
      : await tx<CatalogRef[]>`
          select id, site_id, url, expected_sha256, null::text[] as components from public.firmware_catalogs
           where id = ${String(catalogId).toLowerCase()}`;
    const what = baselineId ? "baseline" : "catalog";
    if (!r) throw unprocessable(`${what}_not_found`, `the firmware ${what} does not exist or is not visible to you`);
    if (r.site_id !== siteId) throw unprocessable(`${what}_wrong_site`, `the firmware ${what} belongs to another site`);
    return r;
  };
  const out = { ...params };
  const fw = out.firmware as Record<string, unknown> | undefined;
  if (fw && typeof fw === "object") {
    const sel = { ...fw };
    if (sel.catalog_id || sel.baseline_id) {
      if (sel.catalog_id && sel.baseline_id) {
        throw badRequest("catalog_ambiguous", "name a catalog or a baseline, not both");
      }
      const r = await lookup(sel.catalog_id, sel.baseline_id);
      sel.catalog_url = r.url;
      // the catalog's pin goes with it: the rolling update's catalog gate verifies the SHA-256
      if (r.expected_sha256 && !sel.catalog_sha256) sel.catalog_sha256 = r.expected_sha256;
      const comps = Array.isArray(sel.components) ? sel.components : [];
      if (r.components && r.components.length && comps.length === 0) sel.components = r.components;
    } else if (!sel.catalog_url) {
      throw badRequest("catalog_required", "the firmware selection names no catalog_url, catalog_id or baseline_id");
    }
    out.firmware = sel;
  }
  const otherSources = planHints(jobType).site_default_catalog_unless;
  if (otherSources && out.catalog_id) {
    out.catalog_url = (await lookup(out.catalog_id, null)).url;
  } else if (otherSources && !out.catalog_url && !otherSources.some((f) => out[f])) {
    // no source named: the site's default catalog (how the nightly default schedule, whose
    // params are just {site_id}, follows whichever catalog is the default when it fires)
    const [d] = await tx<{ id: string; url: string }[]>`
      select id, url from public.firmware_catalogs where site_id = ${siteId} and is_default`;
    if (!d) {
      throw unprocessable(
        "catalog_required",
        "the compliance check names no catalog_id, catalog_url or ome_instance_id, and the site has no default " +
          "catalog; name one, or mark one of the site's catalogs as its default (firmware_catalogs.is_default)",
        { site_id: siteId },
      );
    }
    out.catalog_id = d.id;
    out.catalog_url = d.url;
  }
  return out;
}

function uniq<T>(xs: T[]): T[] {
  return [...new Set(xs)];
}

/**
 * Job types whose executor handler logs in to the ESXi hosts themselves over SSH (the
 * ``ssh_credential: "esxi"`` hint), and so needs the site's credential set of kind ``esxi``
 * among the job's credential_set_ids: the executor may only open sets the job references
 * (get_job_credential_envelope). A rolling update has no such hint: it reaches hosts
 * through vCenter and iDRAC only.
 */
export const ESXI_SSH_JOB_TYPES: ReadonlySet<string> = new Set(
  JOB_TYPES.filter((t) => planHints(t).ssh_credential === "esxi"),
);

export interface CredentialSetRef {
  id: string;
  name: string;
}

/**
 * The ESXi SSH credential set a job of ``jobType`` must carry, chosen from the site's sets
 * of kind ``esxi``; null when the job type needs none. Hosts carry no credential of their
 * own, so the site's one set is the login; with none the job could never run, and with
 * several we would be guessing which one the hosts accept, so both are refused (422).
 */
export function esxiCredentialFor(jobType: string, siteId: string, sets: CredentialSetRef[]): string | null {
  if (!ESXI_SSH_JOB_TYPES.has(jobType)) return null;
  if (sets.length === 0) {
    throw unprocessable(
      "no_esxi_credentials",
      `a ${jobType} job logs in to the hosts over SSH, but the site has no credential set of kind esxi; add one first`,
      { site_id: siteId, kind: "esxi" },
    );
  }
  if (sets.length > 1) {
    throw unprocessable(
      "ambiguous_esxi_credentials",
      `the site has ${sets.length} credential sets of kind esxi and a ${jobType} job can use only one; keep one`,
      { site_id: siteId, kind: "esxi", credential_sets: sets.map((c) => ({ id: c.id, name: c.name })) },
    );
  }
  return sets[0].id;
}

/** An executor counts as able to run a job while it is active, takes the job's type
 * (executors.job_types null = every type) and was heard from within this many seconds:
 * v_executor_health calls one silent for longer `lost`. A `stale` one (a late heartbeat,
 * a restart) still counts, so a job is not refused while its executor restarts. */
export const EXECUTOR_LOST_AFTER_S = 300;

/** HttpError 422 unless a registered, live executor of the site takes ``jobType``. */
export async function requireExecutorFor(tx: Tx, jobType: string, siteId: string): Promise<void> {
  const [r] = await tx<{ takers: number; alive: number }[]>`
    select count(*)::int as takers,
           count(*) filter (where e.last_heartbeat_at > now() - make_interval(secs => ${EXECUTOR_LOST_AFTER_S}))::int
             as alive
      from public.executors e
     where e.site_id = ${siteId} and e.status = 'active'
       and (e.job_types is null or ${jobType}::public.job_type = any(e.job_types))`;
  if (!r.takers) {
    throw unprocessable(
      "no_executor_for_type",
      `no active executor of the site takes ${jobType} jobs, so the job would never run; ` +
        "start an executor that handles it (or enable one) first",
      { site_id: siteId, job_type: jobType },
    );
  }
  if (!r.alive) {
    throw unprocessable(
      "no_healthy_executor",
      `the site's executors that take ${jobType} jobs have not been heard from for ${EXECUTOR_LOST_AFTER_S} s ` +
        "(v_executor_health: lost); the job would not run",
      { site_id: siteId, job_type: jobType, lost_after_s: EXECUTOR_LOST_AFTER_S },
    );
  }
}

/** Credential sets named by the params' ``x-credential`` fields (discovery_scan's sets to
 * try), in the order given: each one must be a set of the job's site and of the kind the
 * field names. Read as the caller: a set they may not see is reported as not found. */
export async function namedCredentialSets(
  tx: Tx,
  jobType: string,
  params: Record<string, unknown>,
  siteId: string,
): Promise<string[]> {
  const props = (JOB_SCHEMAS.job_types[jobType].properties ?? {}) as Record<string, Schema>;
  const out: string[] = [];
  for (const [field, s] of Object.entries(props)) {
    const kind = s["x-credential"] as string | undefined;
    const v = params[field];
    if (!kind || !Array.isArray(v) || v.length === 0) continue;
    const ids = (v as string[]).map((x) => x.toLowerCase());
    const rows = await tx<{ id: string; site_id: string; kind: string }[]>`
      select id, site_id, kind::text from public.credential_sets where id = any(${ids}::uuid[])`;
    const byId = new Map(rows.map((r) => [r.id, r]));
    const bad = ids.filter((id) => {
      const r = byId.get(id);
      return !r || r.site_id !== siteId || r.kind !== kind;
    });
    if (bad.length) {
      throw unprocessable(
        "credential_not_usable",
        `${field} must name credential sets of kind ${kind} of the job's site`,
        { field, credential_set_ids: bad },
      );
    }
    out.push(...ids);
  }
  return out;
}

/**
 * The request's targets, read as the caller: each one exists and is visible (422
 * target_not_found), all of one site (targets_span_sites) and, when the request names a
 * site_id, of that site (site_mismatch). ``rows`` is keyed "kind:id".
 */
export async function resolveTargets(tx: Tx, req: JobRequest):
  Promise<{ byKind: Map<string, string[]>; rows: Map<string, TargetRow>; siteId: string }> {
  const byKind = targetIds(req.type, req.params);
  const rows = new Map<string, TargetRow>(); // "kind:id" -> row
  const missing: { kind: string; id: string }[] = [];
  for (const [kind, ids] of byKind) {
    const found = await loadTargets(tx, kind, uniq(ids));
    for (const r of found) rows.set(`${kind}:${r.id}`, r);
    for (const id of uniq(ids)) if (!rows.has(`${kind}:${id}`)) missing.push({ kind, id });
  }
  if (missing.length) {
    throw unprocessable("target_not_found", `${missing.length} target(s) do not exist or are not visible to you`, { missing });
  }
  const sites = uniq([...rows.values()].map((r) => r.site_id));
  if (sites.length !== 1) {
    throw unprocessable("targets_span_sites", "all targets of a job must belong to one site", { site_ids: sites });
  }
  const siteId = sites[0];
  if (req.site_id && req.site_id.toLowerCase() !== siteId) {
    throw unprocessable("site_mismatch", "the targets belong to another site than site_id", { site_id: siteId });
  }
  return { byKind, rows, siteId };
}

/**
 * create-job's checks of a request that is stored to run later (a schedule's template), as
 * the caller: the targets (resolveTargets, against the request's site_id) and the
 * credential sets the params name. Not the executor-availability, window and cluster
 * checks: those depend on the moment, and each occurrence runs planJob when it fires.
 * ``req`` has been through checkRequest.
 */
export async function checkStoredRequest(tx: Tx, req: JobRequest): Promise<string> {
  const { siteId } = await resolveTargets(tx, req);
  await namedCredentialSets(tx, req.type, req.params, siteId);
  return siteId;
}

/**
 * The validated plan for a request: targets resolved and on one site, tasks, cluster,
 * window and every safety rule checked. Throws HttpError (4xx) on the first problem.
 * Takes the cluster's advisory lock, so a concurrent request for the same cluster waits
 * until this transaction ends and then sees this job.
 */
export async function planJob(tx: Tx, req: JobRequest, now: Date): Promise<JobPlan> {
  const { byKind, rows, siteId } = await resolveTargets(tx, req);
  const all = [...rows.values()];

  // Read as the caller (operators may see credential metadata, never the secret).
  const esxiCredential = ESXI_SSH_JOB_TYPES.has(req.type)
    ? esxiCredentialFor(
      req.type,
      siteId,
      await tx<CredentialSetRef[]>`
        select id, name from public.credential_sets
         where site_id = ${siteId} and kind = 'esxi'::public.credential_kind order by name, id`,
    )
    : null;

  const [policy] = await tx<SafetyPolicy[]>`
    select job_type::text, risk::text, requires_window, takes_hosts_out, max_hosts_out_per_cluster,
           max_concurrent_per_cluster
      from public.safety_policies where job_type = ${req.type}::public.job_type`;
  if (!policy) throw unprocessable("no_safety_policy", `no safety policy is defined for ${req.type}`);

  // a job no executor of the site would ever claim is refused now, not left pending
  await requireExecutorFor(tx, req.type, siteId);
  const namedCredentials = await namedCredentialSets(tx, req.type, req.params, siteId);

  const p = req.params as Record<string, unknown>;
  const hints = planHints(req.type);
  let tasks: TaskPlan[];
  let clusterId: string | null = null;
  let hostsInParallel = 0;
  const credentialIds: (string | null)[] = [...all.flatMap((r) => r.credential_set_ids), esxiCredential,
    ...namedCredentials];

  if (hints.tasks === "cluster_hosts") {
    clusterId = (p.cluster_id as string).toLowerCase();
    const hosts = await tx<{ id: string; name: string; server_cred: string | null }[]>`
      select h.id, h.name, s.credential_set_id as server_cred
        from public.esxi_hosts h left join public.servers s on s.id = h.server_id
       where h.cluster_id = ${clusterId} order by h.name, h.id`;
    const wanted = (p.host_ids as string[]).map((x) => x.toLowerCase());
    const inCluster = new Map(hosts.map((h) => [h.id, h]));
    const strangers = wanted.filter((id) => !inCluster.has(id));
    if (strangers.length) {
      throw unprocessable("host_not_in_cluster", "host_ids must be hosts of the cluster", { host_ids: strangers });
    }
    const chosen = wanted.length ? wanted.map((id) => inCluster.get(id)!) : hosts;
    if (!chosen.length) throw unprocessable("no_hosts", "the cluster has no hosts to update");
    tasks = chosen.map((h, i) => ({ target_kind: "host", target_id: h.id, target_name: h.name, seq: i }));
    credentialIds.push(...chosen.map((h) => h.server_cred));
    hostsInParallel = hostsOutAtOnce(hints.hosts_out ?? {}, p, chosen.length);
  } else {
    const kind = [...byKind.keys()][0];
    const ordered = uniq(byKind.get(kind)!);
    tasks = ordered.map((id, i) => {
      const r = rows.get(`${kind}:${id}`)!;
      return { target_kind: kind, target_id: id, target_name: r.name, seq: i };
    });
    if (policy.takes_hosts_out) {
      const clusters = uniq(ordered.map((id) => rows.get(`${kind}:${id}`)!.cluster_id).filter((c) => c !== null));
      if (clusters.length > 1) {
        throw unprocessable("targets_span_clusters", `a ${req.type} job may take hosts out of one cluster only`, {
          cluster_ids: clusters,
        });
      }
      clusterId = (clusters[0] as string | undefined) ?? null;
      if (clusterId) {
        const inCluster = ordered.filter((id) => rows.get(`${kind}:${id}`)!.cluster_id === clusterId).length;
        hostsInParallel = hostsOutAtOnce(hints.hosts_out ?? {}, p, inCluster);
      }
    }
  }

  let window: WindowRow | null = null;
  if (req.maintenance_window_id) {
    const [w] = await tx<WindowRow[]>`
      select id, site_id, cluster_id, status::text, starts_at, ends_at
        from public.maintenance_windows where id = ${req.maintenance_window_id.toLowerCase()}`;
    if (!w) throw unprocessable("window_not_found", "the maintenance window does not exist or is not visible to you");
    window = w;
  }
  let scheduled = req.scheduled_for ? new Date(req.scheduled_for) : now;
  if (scheduled.getTime() < now.getTime() - 60_000) {
    throw badRequest("schedule_in_past", "scheduled_for is in the past");
  }
  if (!req.scheduled_for && window && window.starts_at.getTime() > now.getTime()) scheduled = window.starts_at;

  let activity: ClusterActivity | null = null;
  if (clusterId) {
    // the claim takes the same lock: one key, declared once in SQL (public.cluster_lock_key)
    await tx`select pg_advisory_xact_lock(public.cluster_lock_key(${clusterId}))`;
    const [a] = await tx<ClusterActivity[]>`
      -- safety.yaml's max_concurrent_per_cluster counts running or paused jobs (the claim
      -- holds pending ones back); for a type with one job per cluster (a rolling update),
      -- one already queued counts as well.
      select count(*) filter (where sp.takes_hosts_out and j.status in ('running', 'paused'))::int as active_jobs,
             count(*) filter (where j.type = ${req.type}::public.job_type)::int as active_same_type
        from public.jobs j join public.safety_policies sp on sp.job_type = j.type
       where j.cluster_id = ${clusterId} and j.status in ('pending', 'running', 'paused')`;
    activity = a;
  }
  const violations = safetyViolations({
    jobType: req.type, policy, siteId, clusterId, hostsInParallel, window, scheduledFor: scheduled, activity,
    onePerCluster: hints.one_per_cluster ?? null, now,
  });
  if (violations.length) throw violationError(violations);

  const credentialSetIds = uniq(credentialIds.filter((c): c is string => c !== null)).sort();
  return {
    type: req.type,
    site_id: siteId,
    cluster_id: clusterId,
    params: await resolveCatalogs(tx, req.type, req.params, siteId),
    scope: { targets: tasks.map((t) => ({ kind: t.target_kind, id: t.target_id, name: t.target_name })) },
    priority: req.priority ?? 50,
    description: req.description ?? "",
    scheduled_for: scheduled.toISOString(),
    maintenance_window_id: window?.id ?? null,
    credential_set_ids: credentialSetIds,
    credentials: await credentialPlans(tx, credentialSetIds),
    risk: policy.risk,
    requires_window: policy.requires_window,
    tasks,
  };
}

/**
 * Write the planned job and its tasks, in the caller's transaction, after every check above.
 *
 * The API roles hold no INSERT on public.jobs (a row written straight through /rest/v1
 * would skip all of create-job's checks). The one write path is
 * public.functions_create_job, a SECURITY DEFINER function only the service role may
 * execute: for that call this transaction switches from `authenticated` to `service_role`
 * (the caller's JWT claims stay set, so the function checks the operator role and the job
 * is stamped and audited with the user), then back. ``extraScope`` is merged into the
 * stored scope (retry_of for retries).
 */
export async function insertJob(tx: Tx, plan: JobPlan, extraScope: Record<string, unknown> = {}): Promise<string> {
  const scope = { ...plan.scope, ...extraScope };
  await tx`select set_config('role', 'service_role', true)`;
  const [job] = await tx<{ id: string }[]>`
    select public.functions_create_job(
      ${plan.type}::public.job_type, ${plan.site_id}::uuid, ${plan.cluster_id}::uuid, ${tx.json(plan.params as never)},
      ${tx.json(scope as never)}, ${plan.priority}::smallint, ${plan.description}, ${plan.scheduled_for}::timestamptz,
      ${plan.maintenance_window_id}::uuid, ${plan.credential_set_ids}::uuid[]) as id`;
  await tx`select set_config('role', 'authenticated', true)`;
  const [made] = await tx<{ n: number }[]>`select count(*)::int as n from public.job_tasks where job_id = ${job.id}`;
  if (made.n !== plan.tasks.length) throw new Error("task count mismatch");
  return job.id;
}
