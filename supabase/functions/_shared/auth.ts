// Reading the caller's token. Verification is the gateway's job (verify_jwt) or Auth's
// (auth.getUser); these helpers only look at what was sent, to pick a code path.

import { HttpError } from "./http.ts";

/** The bearer token of the request, or null when there is none. */
export function bearerToken(req: Request): string | null {
  const header = req.headers.get("authorization") ?? "";
  const match = /^bearer\s+(\S+)\s*$/i.exec(header);
  return match ? match[1] : null;
}

/**
 * The claims of a JWT, decoded WITHOUT checking its signature: only for choosing a code
 * path whose outcome is verified elsewhere. HttpError 401 when it is not a JWT at all.
 */
export function unverifiedClaims(token: string): Record<string, unknown> {
  const parts = token.split(".");
  if (parts.length !== 3) throw new HttpError(401, "bad_jwt", "the bearer token is not a JWT");
  try {
    const b64 = parts[1].replace(/-/g, "+").replace(/_/g, "/");
    const padded = b64 + "=".repeat((4 - (b64.length % 4)) % 4);
    const bytes = Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    if (claims === null || typeof claims !== "object" || Array.isArray(claims)) throw new Error("not an object");
    return claims as Record<string, unknown>;
  } catch {
    throw new HttpError(401, "bad_jwt", "the bearer token's payload is not a JSON object");
  }
}
