import { corsHeaders, HttpError, preflight, readBodyText, rejectPrototypeKeys } from "./http.ts";
import { type Schema, validate } from "./validate.ts";

// Request/response plumbing shared by rackpilot's edge functions.
//
// Every failure a caller can cause is an ApiError and is answered as
//   {"error": "<human sentence>", "code": "<stable snake_case code>", "details": <json|null>}
// with a 4xx status. Anything else is a bug or an outage: the caller gets a 500 with a
// request id only (no stack, no SQL, no message text that could carry values), and the
// log gets the error class, SQLSTATE and request id — never the request body.

export const MAX_BODY_BYTES = 64 * 1024; // request bodies above this are refused (bytes)

// One error class for every function: http.ts's HttpError, so that helpers written for
// either module interoperate.
export { HttpError as ApiError };

export const badRequest = (code: string, message: string, details: unknown = null) =>
  new HttpError(400, code, message, details);
export const forbidden = (code: string, message: string, details: unknown = null) =>
  new HttpError(403, code, message, details);
export const notFound = (code: string, message: string, details: unknown = null) =>
  new HttpError(404, code, message, details);
export const conflict = (code: string, message: string, details: unknown = null) =>
  new HttpError(409, code, message, details);
export const unprocessable = (code: string, message: string, details: unknown = null) =>
  new HttpError(422, code, message, details);

export function json(body: unknown, status = 200): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { ...corsHeaders, "content-type": "application/json; charset=utf-8", "cache-control": "no-store" },
  });
}

export function errorResponse(err: HttpError): Response {
  return json({ error: err.message, code: err.code, details: err.details ?? null }, err.status);
}

// Postgres errors raised on purpose by rackpilot's SQL (RAISE ... USING ERRCODE) map to
// API errors; the SQL text and values never reach the caller.
const SQLSTATE_MAP: Record<string, [number, string, string]> = {
  "42501": [403, "forbidden", "the database refused this operation for your role"],
  "23505": [409, "conflict", "a conflicting record already exists"],
  "23503": [409, "conflict", "a referenced record does not exist or is in use"],
  "23P01": [409, "conflict", "this overlaps an existing record"],
  "23514": [422, "check_violation", "the database rejected a value"],
  "40001": [409, "retry", "a concurrent change conflicted with this request; retry it"],
  "40P01": [409, "retry", "a concurrent change conflicted with this request; retry it"],
  "55P03": [409, "busy", "the record is locked by another operation; retry it"],
};

interface PgLikeError {
  code?: string;
  message?: string;
  hint?: string;
  detail?: string;
}

// Status of the error codes rackpilot's SQL raises as "<code>: <sentence>" (SQLSTATE
// P0001 or 42501); unknown codes are conflicts.
const SQL_CODE_STATUS: Record<string, number> = {
  illegal_transition: 409,
  forbidden_transition: 403,
  open_blockers: 409,
  four_eyes: 403,
  window_transition: 409,
  not_found: 404,
  forbidden: 403,
  stale_epoch: 409,
  job_not_found: 404,
  invalid_argument: 400,
  rate_limited: 429,
};

function fromPostgres(err: unknown): HttpError | null {
  const e = err as PgLikeError;
  if (!e || typeof e.code !== "string" || !/^[0-9A-Z]{5}$/.test(e.code)) return null;
  const m = typeof e.message === "string" ? /^([a-z][a-z0-9_]{2,63}): (.{1,500})$/s.exec(e.message) : null;
  if (m && (e.code === "P0001" || e.code === "42501" || e.code === "22023")) {
    const status = SQL_CODE_STATUS[m[1]] ?? (e.code === "42501" ? 403 : 409);
    return new HttpError(status, m[1], m[2], null);
  }
  const mapped = SQLSTATE_MAP[e.code];
  return mapped ? new HttpError(mapped[0], mapped[1], mapped[2], null) : null;
}

export function requestId(): string {
  return crypto.randomUUID();
}

/** Wrap a handler so that every error becomes a JSON answer and nothing sensitive is logged. */
export function guard(name: string, fn: (req: Request) => Promise<Response>) {
  return async (req: Request): Promise<Response> => {
    const pre = preflight(req);
    if (pre) return pre;
    try {
      return await fn(req);
    } catch (err) {
      const api = err instanceof HttpError ? err : fromPostgres(err);
      if (api) return errorResponse(api);
      const id = requestId();
      const e = err as PgLikeError & { name?: string };
      // Class, SQLSTATE and id only: messages may quote values from the request.
      console.error(JSON.stringify({ fn: name, request_id: id, error: e?.name ?? "Error", sqlstate: e?.code ?? null }));
      return json({ error: "internal error", code: "internal", details: { request_id: id } }, 500);
    }
  };
}

export function requireMethod(req: Request, ...methods: string[]): void {
  if (!methods.includes(req.method)) {
    throw new HttpError(405, "method_not_allowed", `use ${methods.join(" or ")}`, { allowed: methods });
  }
}

// Strings stored in Postgres text/jsonb may not hold NUL or unpaired surrogates; refuse
// them up front with a 400 rather than fail in the database.
// deno-lint-ignore no-control-regex
const BAD_TEXT = /[\u0000]|[\uD800-\uDFFF]/u;

function checkText(v: unknown, path: string, depth: number): void {
  if (depth > 32) throw badRequest("too_deep", "the JSON body is nested too deeply", { max_depth: 32 });
  if (typeof v === "string") {
    if (BAD_TEXT.test(v)) throw badRequest("invalid_text", "a string holds a NUL or an unpaired surrogate", { path });
  } else if (Array.isArray(v)) {
    v.forEach((x, i) => checkText(x, `${path}/${i}`, depth + 1));
  } else if (v && typeof v === "object") {
    for (const [k, x] of Object.entries(v)) {
      if (BAD_TEXT.test(k)) throw badRequest("invalid_text", "a key holds a NUL or an unpaired surrogate", { path });
      checkText(x, `${path}/${k}`, depth + 1);
    }
  }
}

/** The JSON object in the body, at most ``maxBytes``; ApiError for anything else. */
export async function readJsonObject(req: Request, maxBytes = MAX_BODY_BYTES): Promise<Record<string, unknown>> {
  const tooLarge = () =>
    new HttpError(413, "payload_too_large", `the body exceeds ${maxBytes} bytes`, { max_bytes: maxBytes });
  const declared = Number(req.headers.get("content-length") ?? "NaN");
  if (Number.isFinite(declared) && declared > maxBytes) throw tooLarge();
  const text = await readBodyText(req, maxBytes, tooLarge, () => badRequest("invalid_json", "the body is not UTF-8"));
  if (text.trim() === "") throw badRequest("invalid_json", "the body is empty; send a JSON object");
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw badRequest("invalid_json", "the body is not valid JSON");
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw badRequest("invalid_body", "the body must be a JSON object");
  }
  rejectPrototypeKeys(value);
  checkText(value, "", 0);
  return value as Record<string, unknown>;
}

/** ``body`` checked against a request schema; 400 invalid_request listing every issue. */
export function checkBody<T>(schema: Schema, body: Record<string, unknown>, what: string): T {
  const issues = validate(schema, body);
  if (issues.length) throw badRequest("invalid_request", `the request body does not match the ${what} schema`, { issues });
  return body as T;
}

/** The "action" of a multi-action function, checked against the ones it has. */
export function actionOf(body: Record<string, unknown>, actions: readonly string[]): string {
  const a = body.action;
  if (typeof a !== "string" || !actions.includes(a)) {
    throw badRequest("unknown_action", `action must be one of ${actions.join(", ")}`, { actions });
  }
  return a;
}
