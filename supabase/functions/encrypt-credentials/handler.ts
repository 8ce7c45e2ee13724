// encrypt-credentials (admin): seal a target credential to the site's executor key(s).
//
// POST {action: "seal", site_id, name, kind, username, secret, endpoints}
//   -> 201 {credential_set_id, key_ids, sealed_to, endpoints}
// POST {action: "reseal", credential_set_id, secret, endpoints, username?}
//   -> 200 {credential_set_id, key_ids, sealed_to, endpoints}
// POST {action: "status", site_id}
//   -> 200 {executor_key_ids, credential_sets: [{id, name, kind, username, key_ids, stale, endpoints}]}
//
// endpoints: where the secret may be presented, e.g. [{url: "https://10.1.2.7", tls:
// {ca_bundle: "/etc/rackpilot/idrac-ca.pem"}}] (format: _shared/endpoints.ts). They are
// sealed inside the envelope with the secret: the executor presents the secret to no
// other scheme, host, port or TLS trust, whatever the inventory says, so moving a target
// (or trusting it differently, e.g. insecure TLS) needs a reseal naming the new endpoint.
// A copy is kept in credential_sets.endpoints for display (the pre-flight shows it).
// An ssh endpoint's trust is {known_hosts: path}, {insecure_host_key: true} or {known_hosts:
// "sealed"}: the host keys are in the sealed secret itself (ZFS replication: secret = JSON
// {private_key, host_keys} with host_keys as known_hosts lines; docs/replication.md and
// docs/security.md#ssh-endpoints-whose-host-keys-are-sealed).
//
// The secret is sealed here, in memory, to every active executor of the site (format:
// executor/secrets.py, one envelope per key) and only the envelopes are stored. It is
// never logged, never returned, never put in an error message and never sent to the
// database in the clear. "reseal" is the rotation path: after an executor's key changes,
// an admin re-enters the secret and it is sealed to the current keys ("status" lists the
// sets whose envelopes miss a current key). Why re-entry rather than an executor-side
// re-wrap: see supabase/migrations/20261128030100_functions_credentials.sql.

import { actionOf, checkBody, conflict, guard, json, notFound, readJsonObject, requireMethod, unprocessable }
  from "../_shared/api.ts";
import { appRole, asCaller, callerOf, type Tx } from "../_shared/db.ts";
import { canonicalEndpoints, type Endpoint, EndpointError, type EndpointInput, ENDPOINTS } from "../_shared/endpoints.ts";
import { KeyFormatError, keyId, parsePublicKey, seal } from "../_shared/envelope.ts";
import { requireRole } from "../_shared/policy.ts";
import type { Schema } from "../_shared/validate.ts";

const ACTIONS = ["seal", "reseal", "status"] as const;
type Action = typeof ACTIONS[number];
// a credential is small; refuse anything bigger early. Endpoints fit too: a fleet sharing one
// credential names its management network (CIDR) rather than hundreds of addresses.
const MAX_BODY_BYTES = 16 * 1024;
const UUID = { type: "string", format: "uuid" };
const SECRET = { type: "string", minLength: 1, maxLength: 4096 };
const USERNAME = { type: "string", minLength: 1, maxLength: 256 };

const SEAL: Schema = {
  type: "object",
  additionalProperties: false,
  required: ["action", "site_id", "name", "kind", "username", "secret", "endpoints"],
  properties: {
    action: { const: "seal" },
    site_id: UUID,
    name: { type: "string", minLength: 1, maxLength: 128 },
    kind: { enum: ["idrac", "vcenter", "esxi", "ome", "ssh"] },
    username: USERNAME,
    secret: SECRET,
    endpoints: ENDPOINTS,
  },
};
const RESEAL: Schema = {
  type: "object",
  additionalProperties: false,
  required: ["action", "credential_set_id", "secret", "endpoints"],
  properties: {
    action: { const: "reseal" }, credential_set_id: UUID, username: USERNAME, secret: SECRET, endpoints: ENDPOINTS,
  },
};
const STATUS: Schema = {
  type: "object",
  additionalProperties: false,
  required: ["action", "site_id"],
  properties: { action: { const: "status" }, site_id: UUID },
};

interface ExecutorKey {
  executor_id: string;
  key_id: string;
  raw: Uint8Array<ArrayBuffer>;
}

/** The public keys of the site's active executors, newest heartbeat first. */
async function siteKeys(tx: Tx, siteId: string): Promise<ExecutorKey[]> {
  const rows = await tx<{ id: string; public_key: string; key_id: string }[]>`
    select id, public_key, key_id from public.executors
     where site_id = ${siteId} and status = 'active'
     order by last_heartbeat_at desc, registered_at desc, id`;
  const keys: ExecutorKey[] = [];
  for (const r of rows) {
    let raw: Uint8Array<ArrayBuffer>;
    try {
      raw = parsePublicKey(r.public_key);
    } catch (e) {
      if (e instanceof KeyFormatError) {
        throw conflict("bad_executor_key", "an executor of this site registered a key that is not X25519", { executor_id: r.id });
      }
      throw e;
    }
    // The id the executor registered must be the id of the key it registered: otherwise
    // envelopes would name a key the executor does not hold.
    if ((await keyId(raw)) !== r.key_id) {
      throw conflict("executor_key_mismatch", "an executor's key id does not match its public key", { executor_id: r.id });
    }
    if (!keys.some((k) => k.key_id === r.key_id)) keys.push({ executor_id: r.id, key_id: r.key_id, raw });
  }
  if (!keys.length) {
    throw conflict("no_executor_key", "the site has no active executor to seal the credential to; start its executor first");
  }
  return keys;
}

/** The canonical endpoints of a request, or 422 naming the bad entry (never the secret). */
function endpointsOf(input: EndpointInput[]): Endpoint[] {
  try {
    return canonicalEndpoints(input);
  } catch (e) {
    if (e instanceof EndpointError) throw unprocessable("bad_endpoint", e.message);
    throw e;
  }
}

async function sealEach(keys: ExecutorKey[], secret: Record<string, string | unknown[]>): Promise<string[]> {
  const out: string[] = [];
  for (const k of keys) out.push(JSON.stringify(await seal(k.raw, secret)));
  return out;
}

/** Replace the set's envelopes by ``envelopes`` (one per key, in ``keys`` order). */
async function storeEnvelopes(tx: Tx, credId: string, keys: ExecutorKey[], envelopes: string[]): Promise<string[]> {
  await tx`delete from public.credential_envelopes where credential_set_id = ${credId}`;
  const rows = keys.map((k, i) => ({
    credential_set_id: credId, executor_id: k.executor_id, key_id: k.key_id, sealed_secret: envelopes[i],
  }));
  await tx`insert into public.credential_envelopes ${tx(rows, "credential_set_id", "executor_id", "key_id", "sealed_secret")}`;
  return keys.map((k) => k.key_id);
}

export const handler = guard("encrypt-credentials", async (req: Request): Promise<Response> => {
  requireMethod(req, "POST");
  const caller = await callerOf(req);
  const raw = await readJsonObject(req, MAX_BODY_BYTES);
  const action = actionOf(raw, ACTIONS) as Action;

  if (action === "status") {
    const b = checkBody<{ site_id: string }>(STATUS, raw, "encrypt-credentials status");
    const siteId = b.site_id.toLowerCase();
    return await asCaller(caller, async (tx) => {
      requireRole(await appRole(tx), "encrypt-credentials", action);
      const current = (await tx<{ key_id: string }[]>`
        select distinct key_id from public.executors where site_id = ${siteId} and status = 'active' order by key_id`)
        .map((r) => r.key_id);
      const sets = await tx<{ id: string; name: string; kind: string; username: string; key_ids: string[] }[]>`
        select c.id, c.name, c.kind::text, c.username, c.endpoints,
               coalesce((select array_agg(e.key_id order by e.key_id) from public.credential_envelopes e
                          where e.credential_set_id = c.id), array[]::text[]) as key_ids
          from public.credential_sets c where c.site_id = ${siteId} order by c.name`;
      return json({
        site_id: siteId,
        executor_key_ids: current,
        credential_sets: sets.map((s) => ({ ...s, stale: current.some((k) => !s.key_ids.includes(k)) })),
      });
    });
  }

  if (action === "seal") {
    const b = checkBody<
      { site_id: string; name: string; kind: string; username: string; secret: string; endpoints: EndpointInput[] }
    >(SEAL, raw, "encrypt-credentials seal");
    const siteId = b.site_id.toLowerCase();
    const endpoints = endpointsOf(b.endpoints);
    return await asCaller(caller, async (tx) => {
      requireRole(await appRole(tx), "encrypt-credentials", action);
      const [site] = await tx`select id from public.sites where id = ${siteId}`;
      if (!site) throw unprocessable("site_not_found", "the site does not exist or is not visible to you");
      const [dup] = await tx`select id from public.credential_sets where site_id = ${siteId} and name = ${b.name}`;
      if (dup) throw conflict("credential_exists", "the site already has a credential set of that name; use reseal", { credential_set_id: dup.id });
      const keys = await siteKeys(tx, siteId);
      const envelopes = await sealEach(keys, { username: b.username, password: b.secret, endpoints });
      // credential_sets names the set; its secret lives only in credential_envelopes, one per key
      const [row] = await tx<{ id: string }[]>`
        insert into public.credential_sets (site_id, name, kind, username, endpoints)
        values (${siteId}, ${b.name}, ${b.kind}::public.credential_kind, ${b.username}, ${tx.json(endpoints as never)})
        returning id`;
      const keyIds = await storeEnvelopes(tx, row.id, keys, envelopes);
      return json({ credential_set_id: row.id, key_ids: keyIds, sealed_to: keyIds.length, endpoints }, 201);
    });
  }

  const b = checkBody<{ credential_set_id: string; username?: string; secret: string; endpoints: EndpointInput[] }>(
    RESEAL, raw, "encrypt-credentials reseal");
  const credId = b.credential_set_id.toLowerCase();
  const endpoints = endpointsOf(b.endpoints);
  return await asCaller(caller, async (tx) => {
    requireRole(await appRole(tx), "encrypt-credentials", action);
    const [cred] = await tx<{ site_id: string; username: string }[]>`
      select site_id, username from public.credential_sets where id = ${credId} for update`;
    if (!cred) throw notFound("credential_not_found", "the credential set does not exist or is not visible to you");
    const keys = await siteKeys(tx, cred.site_id);
    const username = b.username ?? cred.username;
    const envelopes = await sealEach(keys, { username, password: b.secret, endpoints });
    await tx`update public.credential_sets set username = ${username}, endpoints = ${tx.json(endpoints as never)}
              where id = ${credId}`;
    const keyIds = await storeEnvelopes(tx, credId, keys, envelopes);
    return json({ credential_set_id: credId, key_ids: keyIds, sealed_to: keyIds.length, endpoints });
  });
});
