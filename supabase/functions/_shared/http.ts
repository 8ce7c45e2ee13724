// JSON responses and request-body parsing shared by the edge functions.
//
// Every error a function answers has the shape `{"error", "code", "details"}`: the
// Supabase clients show `error` as the FunctionsHttpError message, `code` is stable for
// programs, and `details` carries structured context (never secrets or stack traces).

export const JSON_TYPE = "application/json; charset=utf-8";
export const DEFAULT_MAX_BODY_BYTES = 1024 * 1024; // largest JSON body readJson accepts (bytes)

export const corsHeaders: Record<string, string> = {
  "access-control-allow-origin": "*",
  "access-control-allow-headers": "authorization, x-client-info, apikey, content-type",
  "access-control-allow-methods": "GET, POST, PUT, PATCH, DELETE, OPTIONS",
};

export interface ErrorBody {
  error: string;
  code: string;
  details: unknown;
}

/** A failure a function reports to its caller with a specific status and code. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details: unknown = null,
  ) {
    super(message);
    this.name = "HttpError";
  }
}

export function jsonResponse(body: unknown, status = 200, headers: HeadersInit = {}): Response {
  const h = new Headers(headers);
  h.set("content-type", JSON_TYPE);
  for (const [k, v] of Object.entries(corsHeaders)) if (!h.has(k)) h.set(k, v);
  return new Response(JSON.stringify(body), { status, headers: h });
}

export function errorResponse(status: number, code: string, error: string, details: unknown = null): Response {
  const body: ErrorBody = { error, code, details };
  return jsonResponse(body, status);
}

/** The answer to a CORS preflight, or null when `req` is not one. */
export function preflight(req: Request): Response | null {
  return req.method === "OPTIONS" ? new Response(null, { status: 204, headers: corsHeaders }) : null;
}

/**
 * The request body decoded as UTF-8, read incrementally so that a body without (or with a
 * lying) Content-Length cannot make us buffer more than `maxBytes`. Callers pass their own
 * errors so each API keeps its codes and messages: `tooLarge` once the bytes read exceed
 * the limit, `notUtf8` when the bytes are not valid UTF-8.
 */
export async function readBodyText(
  req: Request,
  maxBytes: number,
  tooLarge: () => HttpError,
  notUtf8: () => HttpError,
): Promise<string> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  if (req.body) {
    const reader = req.body.getReader();
    while (true) {
      const { done, value } = await reader.read();
      if (done) break;
      size += value.byteLength;
      if (size > maxBytes) {
        await reader.cancel().catch(() => {});
        throw tooLarge();
      }
      chunks.push(value);
    }
  }
  const bytes = new Uint8Array(size);
  let offset = 0;
  for (const c of chunks) {
    bytes.set(c, offset);
    offset += c.byteLength;
  }
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw notUtf8();
  }
}

/**
 * Keys that reach JavaScript's prototype machinery when a parsed body is merged, spread or
 * looked up with `in`: `{"__proto__": {...}}` parses to an own property that
 * `Object.assign`/`out[k] = v` turn into a new prototype, and `constructor`/`prototype`
 * answer `k in obj` for every object. No rackpilot API has a field of these names, so a
 * body holding one anywhere is refused before any code looks at it.
 */
export const PROTOTYPE_KEYS: ReadonlySet<string> = new Set(["__proto__", "constructor", "prototype"]);

function pointer(path: string, key: string | number): string {
  return `${path}/${String(key).replaceAll("~", "~0").replaceAll("/", "~1")}`;
}

/**
 * The first prototype key in a parsed JSON value (depth first, document order) and the
 * JSON pointer of the object holding it, or null. Iterative: a deeply nested body cannot
 * overflow the stack here.
 */
export function findPrototypeKey(value: unknown): { key: string; path: string } | null {
  const stack: [unknown, string][] = [[value, ""]];
  while (stack.length) {
    const [v, path] = stack.pop()!;
    if (Array.isArray(v)) {
      for (let i = v.length - 1; i >= 0; i--) stack.push([v[i], pointer(path, i)]);
    } else if (v !== null && typeof v === "object") {
      const keys = Object.keys(v);
      for (const k of keys) if (PROTOTYPE_KEYS.has(k)) return { key: k, path };
      for (let i = keys.length - 1; i >= 0; i--) stack.push([(v as Record<string, unknown>)[keys[i]], pointer(path, keys[i])]);
    }
  }
  return null;
}

/** HttpError 400 `forbidden_key`, naming the key and where it is, for a body holding a prototype key. */
export function rejectPrototypeKeys(value: unknown, what = "the request body"): void {
  const found = findPrototypeKey(value);
  if (found) {
    throw new HttpError(400, "forbidden_key",
      `${what} holds the key ${JSON.stringify(found.key)}${found.path ? ` at ${found.path}` : ""}; ` +
        `${[...PROTOTYPE_KEYS].map((k) => JSON.stringify(k)).join(", ")} are not accepted anywhere`,
      { key: found.key, path: found.path });
  }
}

/**
 * The request's JSON body. An empty body gives `undefined` when `allowEmpty`; a body that
 * is not JSON, or larger than `maxBytes`, throws an HttpError (400 / 413).
 */
export async function readJson(
  req: Request,
  { maxBytes = DEFAULT_MAX_BODY_BYTES, allowEmpty = false }: { maxBytes?: number; allowEmpty?: boolean } = {},
): Promise<unknown> {
  const tooLarge = () =>
    new HttpError(413, "body_too_large", `Request body is larger than ${maxBytes} bytes`, { max_bytes: maxBytes });
  const declared = Number(req.headers.get("content-length") ?? "0");
  if (declared > maxBytes) throw tooLarge();
  const text = await readBodyText(req, maxBytes, tooLarge, () => new HttpError(400, "bad_json", "Request body is not UTF-8"));
  if (text.trim() === "") {
    if (allowEmpty) return undefined;
    throw new HttpError(400, "bad_json", "Request body is empty; a JSON body is required");
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new HttpError(400, "bad_json", "Request body is not valid JSON");
  }
  rejectPrototypeKeys(value);
  return value;
}

/**
 * Wraps a handler so that an HttpError becomes its JSON error response and anything else
 * becomes a generic 500 (details go to the log only), and CORS preflights are answered.
 */
export function withErrors(
  fn: (req: Request) => Promise<Response>,
): (req: Request) => Promise<Response> {
  return async (req: Request): Promise<Response> => {
    const pre = preflight(req);
    if (pre) return pre;
    try {
      return await fn(req);
    } catch (err) {
      if (err instanceof HttpError) return errorResponse(err.status, err.code, err.message, err.details);
      // The class only: messages may quote values from the request.
      console.error(JSON.stringify({ error: (err as Error)?.name ?? "Error", where: new URL(req.url).pathname }));
      return errorResponse(500, "internal_error", "The function failed unexpectedly");
    }
  };
}
