// Pure policy logic of rackpilot's edge functions: who may call what, and the safety
// rules of policies/safety.yaml (whose values the database holds in public.safety_policies).
// No I/O here, so deno tests exercise every rule directly.

import access from "./function-access.json" with { type: "json" };
import { HttpError } from "./http.ts";

export type AppRole = "viewer" | "operator" | "approver" | "admin";
export const ROLE_LADDER: readonly AppRole[] = ["viewer", "operator", "approver", "admin"];

export function roleAtLeast(role: AppRole | null, needed: AppRole): boolean {
  return role !== null && ROLE_LADDER.indexOf(role) >= ROLE_LADDER.indexOf(needed);
}

/** Minimum role per function and action (a copy of access.yaml's `functions:` section). */
export const FUNCTION_ACCESS = access as Record<string, Record<string, AppRole>>;

export function minimumRole(fn: string, action: string): AppRole {
  const role = FUNCTION_ACCESS[fn]?.[action];
  if (!role) throw new Error(`no access rule for ${fn}.${action}`);
  return role;
}

/** HttpError 403 unless ``role`` may perform ``fn``/``action``. */
export function requireRole(role: AppRole | null, fn: string, action: string): void {
  const needed = minimumRole(fn, action);
  if (!roleAtLeast(role, needed)) {
    throw new HttpError(403, "forbidden", `${fn} ${action} needs the ${needed} role`, {
      required_role: needed,
      your_role: role,
    });
  }
}

// --- safety ----------------------------------------------------------------------------

export interface SafetyPolicy {
  job_type: string;
  risk: "low" | "medium" | "high";
  requires_window: boolean;
  takes_hosts_out: boolean;
  max_hosts_out_per_cluster: number | null;
  max_concurrent_per_cluster: number | null;
}

export interface WindowRow {
  id: string;
  site_id: string;
  cluster_id: string | null;
  status: "requested" | "approved" | "rejected" | "cancelled";
  starts_at: Date;
  ends_at: Date;
}

export interface ClusterActivity {
  active_jobs: number; // running or paused jobs on the cluster that take hosts out
  active_same_type: number; // pending, running or paused jobs of the requested job's type
}

/** At most one active job of the type per cluster (the type's ``one_per_cluster`` hint). */
export interface OnePerCluster {
  code: string; // the refusal's code
  noun: string; // what the cluster already has in progress, in words
}

export interface SafetyInput {
  jobType: string;
  policy: SafetyPolicy;
  siteId: string;
  clusterId: string | null;
  hostsInParallel: number; // hosts this job would take out of service at once
  window: WindowRow | null; // the window the request names, if any
  scheduledFor: Date;
  activity: ClusterActivity | null; // null when the job has no cluster
  onePerCluster: OnePerCluster | null; // null: the type may have several active jobs per cluster
  now: Date;
}

export interface Violation {
  code: string;
  message: string;
  details?: unknown;
}

/** Every safety rule the request breaks (empty = allowed). */
export function safetyViolations(i: SafetyInput): Violation[] {
  const out: Violation[] = [];
  const p = i.policy;
  if (p.requires_window || i.window) {
    const w = i.window;
    if (!w) {
      out.push({
        code: "window_required",
        message: `${i.jobType} is a ${p.risk}-risk job and needs an approved maintenance window`,
        details: { risk: p.risk },
      });
    } else if (w.status !== "approved") {
      out.push({ code: "window_not_approved", message: `the maintenance window is ${w.status}, not approved` });
    } else if (w.site_id !== i.siteId) {
      out.push({ code: "window_wrong_scope", message: "the maintenance window is for another site" });
    } else if (w.cluster_id !== null && w.cluster_id !== i.clusterId) {
      out.push({ code: "window_wrong_scope", message: "the maintenance window covers another cluster" });
    } else if (w.ends_at.getTime() <= i.now.getTime()) {
      out.push({ code: "window_over", message: "the maintenance window has already ended" });
    } else if (i.scheduledFor.getTime() < w.starts_at.getTime() || i.scheduledFor.getTime() >= w.ends_at.getTime()) {
      out.push({ code: "outside_window", message: "the job is scheduled outside its maintenance window" });
    }
  }
  if (p.takes_hosts_out && p.max_hosts_out_per_cluster !== null && i.hostsInParallel > p.max_hosts_out_per_cluster) {
    out.push({
      code: "cluster_limit",
      message: `at most ${p.max_hosts_out_per_cluster} host(s) per cluster may be out of service at once`,
      details: { requested: i.hostsInParallel, limit: p.max_hosts_out_per_cluster },
    });
  }
  if (i.activity) {
    if (i.onePerCluster && i.activity.active_same_type > 0) {
      out.push({ code: i.onePerCluster.code, message: `this cluster already has a ${i.onePerCluster.noun} in progress` });
    } else if (p.max_concurrent_per_cluster !== null && p.takes_hosts_out &&
      i.activity.active_jobs >= p.max_concurrent_per_cluster) {
      out.push({
        code: "cluster_busy",
        message: `this cluster already has ${i.activity.active_jobs} active job(s) that take hosts out of service`,
        details: { active: i.activity.active_jobs, limit: p.max_concurrent_per_cluster },
      });
    }
  }
  return out;
}

/** The first violation as an HttpError (409 for state conflicts, 422 for request limits). */
export function violationError(v: Violation[]): HttpError {
  const first = v[0];
  const status = ["cluster_limit"].includes(first.code) ? 422 : 409;
  return new HttpError(status, first.code, first.message, { violations: v });
}

// --- maintenance windows ---------------------------------------------------------------

export const MAX_WINDOW_HOURS = 7 * 24; // longest window (the table's check says the same)
export const MAX_WINDOW_LEAD_DAYS = 365; // how far ahead a window may be requested

export function windowTimeProblems(starts: Date, ends: Date, now: Date): Violation[] {
  const out: Violation[] = [];
  if (ends.getTime() <= starts.getTime()) out.push({ code: "window_inverted", message: "ends_at must be after starts_at" });
  if (starts.getTime() < now.getTime() - 60_000) {
    out.push({ code: "window_in_past", message: "a maintenance window cannot start in the past" });
  }
  if (ends.getTime() - starts.getTime() > MAX_WINDOW_HOURS * 3_600_000) {
    out.push({ code: "window_too_long", message: `a maintenance window lasts at most ${MAX_WINDOW_HOURS} hours` });
  }
  if (starts.getTime() - now.getTime() > MAX_WINDOW_LEAD_DAYS * 86_400_000) {
    out.push({ code: "window_too_far", message: `a maintenance window starts within ${MAX_WINDOW_LEAD_DAYS} days` });
  }
  return out;
}

/** Two windows share a scope when they are at one site and either covers the whole site or both the same cluster. */
export function sameScope(a: { site_id: string; cluster_id: string | null }, b: { site_id: string; cluster_id: string | null }) {
  return a.site_id === b.site_id && (a.cluster_id === null || b.cluster_id === null || a.cluster_id === b.cluster_id);
}

export function overlaps(a: { starts_at: Date; ends_at: Date }, b: { starts_at: Date; ends_at: Date }): boolean {
  return a.starts_at.getTime() < b.ends_at.getTime() && b.starts_at.getTime() < a.ends_at.getTime();
}

// --- job control -----------------------------------------------------------------------

export type JobStatus = "pending" | "running" | "paused" | "completed" | "failed" | "cancelled";

export interface JobState {
  status: JobStatus;
  pause_reason: string | null;
  cancel_requested_at: Date | null;
  pause_requested_at: Date | null;
  lease_expires_at: Date | null;
}

/** Why ``action`` cannot apply to a job in ``s`` (null = it can). */
export function controlProblem(action: string, s: JobState, now: Date): Violation | null {
  const terminal = ["completed", "failed", "cancelled"].includes(s.status);
  switch (action) {
    case "pause":
      if (s.status !== "running") return { code: "not_running", message: `only a running job can be paused; this one is ${s.status}` };
      if (s.pause_requested_at) return { code: "already_requested", message: "a pause is already requested" };
      return null;
    case "resume":
      if (s.status !== "paused") return { code: "not_paused", message: `only a paused job can be resumed; this one is ${s.status}` };
      if (s.pause_reason === "executor_lost") {
        return { code: "needs_force_resume", message: "a job paused as executor_lost is resumed by an admin with force-resume" };
      }
      return null;
    case "cancel":
      if (terminal) return { code: "already_finished", message: `the job is already ${s.status}` };
      if (s.cancel_requested_at) return { code: "already_requested", message: "a cancel is already requested" };
      return null;
    case "force_resume": {
      if (s.status === "paused") return null;
      const stuck = s.status === "running" && s.lease_expires_at !== null && s.lease_expires_at.getTime() < now.getTime();
      if (stuck) return null;
      return { code: "not_stuck", message: `force-resume applies to paused jobs and running jobs whose lease expired; this one is ${s.status}` };
    }
    case "retry":
      if (s.status !== "failed") return { code: "not_failed", message: `only a failed job can be retried; this one is ${s.status}` };
      return null;
  }
  return { code: "unknown_action", message: `unknown action ${action}` };
}

// --- blockers --------------------------------------------------------------------------

export type Decision = "power_off_vm" | "migrate_manually_done" | "skip_host" | "abort" | "acknowledge" | "recheck";
export const DECISIONS: readonly Decision[] = [
  "power_off_vm", "migrate_manually_done", "skip_host", "abort", "acknowledge", "recheck",
];

export interface BlockerRow {
  id: string;
  job_id: string;
  kind: string;
  status: "open" | "resolved";
  host_id: string | null;
  vm_id: string | null;
  vm_exists: boolean; // the VM row still exists
  vm_host_id: string | null; // where the VM runs now
}

/** A decision is stale when the facts it was made on no longer hold. */
export function blockerProblem(b: BlockerRow, decision: Decision, note?: string): Violation | null {
  if (b.status !== "open") return { code: "blocker_resolved", message: "the blocker already has a decision", details: { blocker_id: b.id } };
  // the replication gate's own decisions (docs/replication.md): recheck (after waiting or a
  // sync now: the gate runs again) and acknowledge (an override, never without a reason)
  if ((decision === "acknowledge" || decision === "recheck") && b.kind !== "replication_lag") {
    return { code: "invalid_decision", message: `${decision} is for replication_lag blockers only`, details: { blocker_id: b.id } };
  }
  if (decision === "acknowledge") {
    if (!note || !note.trim()) {
      return { code: "reason_required", message: "acknowledge needs a reason (note) for the audit trail", details: { blocker_id: b.id } };
    }
  }
  if (decision === "power_off_vm" || decision === "migrate_manually_done") {
    if (!b.vm_id || !b.vm_exists) {
      return { code: "stale_blocker", message: "the blocker's VM no longer exists; rescan", details: { blocker_id: b.id } };
    }
  }
  if (decision === "power_off_vm" && b.host_id && b.vm_host_id !== b.host_id) {
    return { code: "stale_blocker", message: "the VM has moved off the host since the blocker was found; rescan", details: { blocker_id: b.id } };
  }
  if (decision === "skip_host" && !b.host_id) {
    return { code: "invalid_decision", message: "skip_host needs a blocker that names a host", details: { blocker_id: b.id } };
  }
  return null;
}
