// supabase-js against a running local stack: Auth (sign-in, refresh, getUser, sign-out),
// functions.invoke, and REST reads/writes under RLS on a table this test creates with
// npm:postgres through SUPABASE_DB_URL (and drops at the end).
//
// Needs SUPABASE_URL, SUPABASE_ANON_KEY, SUPABASE_SERVICE_ROLE_KEY and SUPABASE_DB_URL
// (`make test` exports them; by hand: `eval "$(rackpilot dev env)"`). Without
// SUPABASE_URL the test is skipped, and says so.

import assert from "node:assert/strict";
import { createClient, type SupabaseClient } from "@supabase/supabase-js";
import postgres from "postgres";

const URL_ = Deno.env.get("SUPABASE_URL");
const NO_PERSIST = { auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false } };
const SCHEMA_RELOAD_WAIT_MS = 30_000; // REST reloads its schema cache on a NOTIFY after DDL

function env(name: string): string {
  const v = Deno.env.get(name);
  if (!v) throw new Error(`${name} must be set for the contract test (see the header of this file)`);
  return v;
}

if (!URL_) {
  console.warn("contract.test.ts: SUPABASE_URL is not set, so the supabase-js contract test against a running stack is skipped");
}

/** Retries `fn` while REST does not know the new table yet (PGRST205 / 404). */
async function untilTableKnown<T extends { error: { code?: string } | null }>(fn: () => PromiseLike<T>): Promise<T> {
  const deadline = Date.now() + SCHEMA_RELOAD_WAIT_MS;
  while (true) {
    const res = await fn();
    if (!res.error || !["PGRST205", "42P01"].includes(res.error.code ?? "") || Date.now() > deadline) return res;
    await new Promise((r) => setTimeout(r, 100));
  }
}

Deno.test({
  name: "supabase-js contract: auth, functions.invoke and REST under RLS against the local stack",
  ignore: !URL_,
  sanitizeResources: true,
  sanitizeOps: true,
  async fn(t) {
    const url = env("SUPABASE_URL");
    const anonKey = env("SUPABASE_ANON_KEY");
    const serviceKey = env("SUPABASE_SERVICE_ROLE_KEY");
    const sql = postgres(env("SUPABASE_DB_URL"), { max: 1, onnotice: () => {} });
    const admin = createClient(url, serviceKey, NO_PERSIST);
    const table = `fn_contract_${crypto.randomUUID().replaceAll("-", "").slice(0, 12)}`;
    const email = `${table}@example.com`;
    const password = "contract-test-pw";
    let userId: string | null = null;

    try {
      await t.step("admin creates a user with the service key", async () => {
        const { data, error } = await admin.auth.admin.createUser({ email, password, email_confirm: true });
        assert.equal(error, null);
        userId = data.user!.id;
        assert.equal(data.user!.email, email);
        const anon = createClient(url, anonKey, NO_PERSIST);
        const refused = await anon.auth.admin.listUsers();
        assert.equal(refused.error?.status, 403);
      });

      const client: SupabaseClient = createClient(url, anonKey, NO_PERSIST);

      await t.step("auth: sign in, getUser, refresh, wrong password", async () => {
        const { data, error } = await client.auth.signInWithPassword({ email, password });
        assert.equal(error, null);
        assert.equal(data.user!.id, userId);
        assert.ok(data.session!.expires_in >= 60);
        const me = await client.auth.getUser();
        assert.equal(me.data.user?.email, email);
        const before = data.session!.refresh_token;
        const refreshed = await client.auth.refreshSession();
        assert.equal(refreshed.error, null);
        assert.notEqual(refreshed.data.session!.refresh_token, before);
        const wrong = await createClient(url, anonKey, NO_PERSIST).auth.signInWithPassword({ email, password: "nope-nope" });
        assert.equal(wrong.error?.code, "invalid_credentials");
        assert.equal(wrong.error?.status, 400);
      });

      await t.step("functions.invoke: hello sees the signed-in user, and anon as anonymous", async () => {
        const { data, error } = await client.functions.invoke("hello", { body: { name: "contract" } });
        assert.equal(error, null);
        assert.deepEqual(data, {
          message: "Hello, contract!",
          role: "authenticated",
          anonymous: false,
          user: { id: userId, email },
        });
        const anon = await createClient(url, anonKey, NO_PERSIST).functions.invoke("hello");
        assert.equal(anon.data.anonymous, true);
        const missing = await client.functions.invoke("no-such-function");
        assert.equal(missing.error?.name, "FunctionsHttpError");
        assert.equal((missing.error as { context: Response }).context.status, 404);
        await (missing.error as { context: Response }).context.body?.cancel();
      });

      await t.step("REST: writes and reads through supabase-js, RLS decides who sees what", async () => {
        await sql.unsafe(`
          create table public.${table} (
            id bigint generated always as identity primary key,
            owner uuid not null default auth.uid() references auth.users (id) on delete cascade,
            title text not null,
            done boolean not null default false
          );
          alter table public.${table} enable row level security;
          create policy owner_all on public.${table} for all to authenticated
            using (owner = auth.uid()) with check (owner = auth.uid());
          grant select, insert, update, delete on public.${table} to authenticated;
          grant select on public.${table} to anon;
        `);
        await sql.unsafe(`insert into public.${table} (owner, title) values ($1, 'someone else''s')`, [
          (await sql`insert into auth.users (email) values (${"other-" + email}) returning id`)[0].id,
        ]);

        const inserted = await untilTableKnown(() =>
          client.from(table).insert([{ title: "alpha" }, { title: "beta" }]).select("id, owner, title, done")
        );
        assert.equal(inserted.error, null, JSON.stringify(inserted.error));
        assert.equal(inserted.data!.length, 2);
        assert.ok(inserted.data!.every((r) => r.owner === userId && r.done === false));

        const one = await client.from(table).select("title").eq("title", "alpha").single();
        assert.deepEqual(one.data, { title: "alpha" });

        const updated = await client.from(table).update({ done: true }).eq("title", "alpha").select("title, done");
        assert.deepEqual(updated.data, [{ title: "alpha", done: true }]);

        const counted = await client.from(table).select("*", { count: "exact", head: true });
        assert.equal(counted.count, 2); // not the other user's row

        const deleted = await client.from(table).delete().eq("title", "beta").select("title");
        assert.deepEqual(deleted.data, [{ title: "beta" }]);

        const mine = await client.from(table).select("title, done").order("title");
        assert.deepEqual(mine.data, [{ title: "alpha", done: true }]);

        const anon = await createClient(url, anonKey, NO_PERSIST).from(table).select("*");
        assert.deepEqual(anon.data, []); // no policy for anon: RLS hides every row

        const all = await admin.from(table).select("title").order("title");
        assert.deepEqual(all.data, [{ title: "alpha" }, { title: "someone else's" }]); // service_role bypasses RLS

        const forbidden = await client.from(table).insert({ title: "spoof", owner: crypto.randomUUID() });
        assert.equal(forbidden.error?.code, "42501");
        const rows = await sql.unsafe(`select count(*)::int as n from public.${table}`);
        assert.equal(rows[0].n, 2); // the refused write changed nothing
      });

      await t.step("auth: sign out ends the session on the server", async () => {
        const { data } = await client.auth.getSession();
        const access = data.session!.access_token;
        const { error } = await client.auth.signOut();
        assert.equal(error, null);
        assert.equal((await client.auth.getSession()).data.session, null);
        // Auth answers 403 session_not_found, which supabase-js reports as a missing session.
        const after = await client.auth.getUser(access);
        assert.equal(after.data.user, null);
        assert.equal(after.error?.name, "AuthSessionMissingError");
      });
    } finally {
      await sql.unsafe(`drop table if exists public.${table}`);
      // By SQL rather than admin.deleteUser, whose raw response supabase-js leaves unread
      // (Deno's resource sanitizer would flag it); admin delete is covered by test_auth.py.
      await sql`delete from auth.users where email in (${email}, ${"other-" + email})`;
      await sql.end();
    }
  },
});
