// hello: greets the caller by the identity Auth vouches for.
//
// A test function, not part of rackpilot: it lives under tests/functions/, which the local
// stack serves (devstack/stack/functions.py) and `supabase functions deploy` never sees (it
// deploys the top-level folders of supabase/functions/). The supabase-js and supabase-py
// contract tests use it to check the functions path itself (routing, verify_jwt, the caller's
// identity through Auth) with a function that needs no database and no application role.
//
// POST (or GET) /functions/v1/hello with an optional body {"name": "..."}.
// A user's access token is checked through supabase-js against Auth (auth.getUser), the
// service key is recognised by value, and anything else (the anon key) is anonymous.

import { createClient } from "@supabase/supabase-js";
import { bearerToken, unverifiedClaims } from "../../../_shared/auth.ts";
import { supabaseEnv } from "../../../_shared/env.ts";
import { HttpError, jsonResponse, readJson, withErrors } from "../../../_shared/http.ts";

const MAX_NAME_LEN = 100; // characters
const MAX_BODY_BYTES = 16 * 1024; // the body only carries a name

export interface HelloReply {
  message: string;
  role: "anon" | "authenticated" | "service_role";
  anonymous: boolean;
  user: { id: string; email: string | null } | null;
}

async function parseName(req: Request): Promise<string | null> {
  if (req.method !== "POST") return null;
  // The body is optional: `functions.invoke("hello")` sends none.
  const body = await readJson(req, { maxBytes: MAX_BODY_BYTES, allowEmpty: true });
  if (body === undefined) return null;
  if (body === null || typeof body !== "object" || Array.isArray(body)) {
    throw new HttpError(400, "invalid_body", "The body must be a JSON object");
  }
  const name = (body as Record<string, unknown>).name;
  if (name === undefined || name === null) return null;
  if (typeof name !== "string" || name.trim() === "" || name.length > MAX_NAME_LEN) {
    throw new HttpError(400, "invalid_name", `name must be a non-empty string of at most ${MAX_NAME_LEN} characters`, {
      max_length: MAX_NAME_LEN,
    });
  }
  return name.trim();
}

export const handler = withErrors(async (req: Request): Promise<Response> => {
  if (req.method !== "POST" && req.method !== "GET") {
    throw new HttpError(405, "method_not_allowed", `${req.method} is not supported; use POST or GET`, {
      allowed: ["POST", "GET"],
    });
  }
  const name = await parseName(req);
  const env = supabaseEnv();
  const token = bearerToken(req);

  if (token && token === env.serviceRoleKey) {
    const reply: HelloReply = { message: `Hello, ${name ?? "service"}!`, role: "service_role", anonymous: false, user: null };
    return jsonResponse(reply);
  }
  // The unverified claims only choose the path; Auth verifies the token in getUser.
  if (token && unverifiedClaims(token).role === "authenticated") {
    const supabase = createClient(env.url, env.anonKey, {
      global: { headers: { Authorization: `Bearer ${token}` } },
      auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
    });
    const { data, error } = await supabase.auth.getUser(token);
    if (error && (!error.status || error.status >= 500)) {
      // Auth could not be asked (down, unreachable): not the caller's fault.
      throw new HttpError(502, "auth_unavailable", "Auth could not be reached to check the caller's token");
    }
    if (error || !data.user) {
      throw new HttpError(401, "invalid_user_token", "Auth did not accept the caller's token", {
        auth_code: error?.code ?? null,
      });
    }
    const email = data.user.email ?? null;
    const reply: HelloReply = {
      message: `Hello, ${name ?? email ?? data.user.id}!`,
      role: "authenticated",
      anonymous: false,
      user: { id: data.user.id, email },
    };
    return jsonResponse(reply);
  }
  const reply: HelloReply = { message: `Hello, ${name ?? "anonymous"}!`, role: "anon", anonymous: true, user: null };
  return jsonResponse(reply);
});
