// Access to the environment Supabase gives every edge function (SUPABASE_URL,
// SUPABASE_ANON_KEY, SUPABASE_SERVICE_ROLE_KEY, SUPABASE_DB_URL).

import { HttpError } from "./http.ts";

/** A variable the function cannot work without is missing: a deployment fault (500). */
export class MissingEnvError extends HttpError {
  constructor(readonly variable: string) {
    // Only the variable's name is reported, never any value.
    super(500, "config_missing", `the function is not configured: ${variable} is not set`, { variable });
  }
}

export function requireEnv(name: string): string {
  const value = Deno.env.get(name);
  if (value === undefined || value.trim() === "") throw new MissingEnvError(name);
  return value;
}

export function optionalEnv(name: string, fallback: string): string {
  const value = Deno.env.get(name);
  return value === undefined || value.trim() === "" ? fallback : value;
}

export interface SupabaseEnv {
  url: string;
  anonKey: string;
  serviceRoleKey: string;
}

/** SUPABASE_URL and the two API keys; SUPABASE_DB_URL is read where it is needed. */
export function supabaseEnv(): SupabaseEnv {
  return {
    url: requireEnv("SUPABASE_URL"),
    anonKey: requireEnv("SUPABASE_ANON_KEY"),
    serviceRoleKey: requireEnv("SUPABASE_SERVICE_ROLE_KEY"),
  };
}
