// The local stack's edge runtime: one Deno process serving every
// supabase/functions/<name>/handler.ts on a private loopback port, and the test functions of
// supabase/functions/tests/functions/<name>/handler.ts (never deployed: `supabase functions
// deploy` takes the top-level folders only). A product function wins over a test one.
//
// Each function folder has `handler.ts` exporting `handler(req): Promise<Response>` and an
// `index.ts` that only calls `Deno.serve(handler)` (what hosted Supabase runs). Here the
// handlers are imported and dispatched by the first path segment, so a function sees
// `/<name>/...` exactly as it does when hosted. The gateway (devstack/stack/functions.py)
// has already checked verify_jwt and that the function exists.

type Handler = (req: Request) => Response | Promise<Response>;

const functionsDir = Deno.env.get("RACKPILOT_FUNCTIONS_DIR");
const port = Number(Deno.env.get("RACKPILOT_FUNCTIONS_PORT"));
if (!functionsDir || !Number.isInteger(port) || port <= 0) {
  console.error("functions router: RACKPILOT_FUNCTIONS_DIR and RACKPILOT_FUNCTIONS_PORT must be set");
  Deno.exit(2);
}
const baseUrl = new URL(`file://${functionsDir.replace(/\/?$/, "/")}`);
const testUrl = new URL("tests/functions/", baseUrl);
const NAME = /^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$/;
const NOT_FUNCTIONS = new Set(["tests", "node_modules"]);
const loaded = new Map<string, Promise<Handler>>();

function json(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json; charset=utf-8" },
  });
}

/** The function's handler.ts: the product's, else the test function's; null when neither. */
function handlerUrl(name: string): URL | null {
  if (!NAME.test(name) || NOT_FUNCTIONS.has(name)) return null;
  for (const base of [baseUrl, testUrl]) {
    const url = new URL(`${name}/handler.ts`, base);
    try {
      if (Deno.statSync(url).isFile) return url;
    } catch {
      // not in this folder
    }
  }
  return null;
}

function isFunction(name: string): boolean {
  return handlerUrl(name) !== null;
}

function load(name: string): Promise<Handler> {
  let pending = loaded.get(name);
  if (!pending) {
    const url = handlerUrl(name);
    if (url === null) return Promise.reject(new Error(`no function ${name}`));
    pending = import(url.href).then((mod) => {
      if (typeof mod.handler !== "function") {
        throw new TypeError(`${name}/handler.ts does not export a function named handler`);
      }
      return mod.handler as Handler;
    });
    // A function that failed to load is retried on its next request (after a fix).
    pending.catch(() => loaded.delete(name));
    loaded.set(name, pending);
  }
  return pending;
}

async function route(req: Request): Promise<Response> {
  const name = new URL(req.url).pathname.split("/")[1] ?? "";
  if (name === "_internal") return json(200, { ok: true });
  // The gateway names the function whose verify_jwt it checked; serve nothing else.
  if (!isFunction(name) || req.headers.get("x-rackpilot-function") !== name) {
    return json(404, { error: "Requested function was not found", code: "NOT_FOUND", details: null });
  }
  let handler: Handler;
  try {
    handler = await load(name);
  } catch (err) {
    console.error(`function ${name} failed to load:`, err);
    return json(503, { error: "The function failed to start; see the stack's logs", code: "BOOT_ERROR", details: null });
  }
  try {
    return await handler(req);
  } catch (err) {
    // Details stay in the log: an uncaught error may carry data the caller must not see.
    console.error(`function ${name} threw:`, err);
    return json(500, { error: "The function raised an unhandled error", code: "WORKER_ERROR", details: null });
  }
}

Deno.serve({ hostname: "127.0.0.1", port, onListen() {} }, route);

// Import every function once in the background, so the first invocation does not pay for
// loading supabase-js and friends (clients time out after 5 s by default).
for (const base of [baseUrl, testUrl]) {
  try {
    for (const entry of Deno.readDirSync(base)) {
      if (entry.isDirectory && isFunction(entry.name)) load(entry.name).catch(() => {});
    }
  } catch {
    // no test functions folder: nothing to preload there
  }
}
