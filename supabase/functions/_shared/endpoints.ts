// The endpoints a sealed credential may be presented to (the executor's side, and the
// format's reference: executor/binding.py). encrypt-credentials seals them inside the
// envelope with the secret; the executor refuses every other endpoint before it connects.
//
// Input, per endpoint: {url: "https://host[:port]" | "http://127.0.0.1:port" | "ssh://host[:port]", tls?}
// or the canonical form {scheme, host, port?, tls?} (host may be an IP network in CIDR
// form). tls: https {} | {ca_bundle: path} | {insecure: true}; http (loopback only) {} |
// {allow_plain_http: true}; ssh {known_hosts: path} | {known_hosts: "sealed"} (host keys
// pinned inside the sealed secret, docs/security.md) | {insecure_host_key: true}.
// Output: canonical {scheme, host, port, tls}, host lowercased / IPs compressed.

import type { Schema } from "./validate.ts";

export const MAX_ENDPOINTS = 256; // a fleet names its management network (CIDR) instead
const DEFAULT_PORTS: Record<string, number> = { https: 443, http: 80, ssh: 22 };
const PATH = { type: "string", minLength: 1, maxLength: 1024 };

const TLS: Schema = {
  type: "object",
  additionalProperties: false,
  properties: {
    ca_bundle: PATH,
    insecure: { type: "boolean" },
    allow_plain_http: { type: "boolean" },
    known_hosts: PATH,
    insecure_host_key: { type: "boolean" },
  },
};

export const ENDPOINTS: Schema = {
  type: "array",
  minItems: 1,
  maxItems: MAX_ENDPOINTS,
  items: {
    type: "object",
    additionalProperties: false,
    properties: {
      url: { type: "string", minLength: 1, maxLength: 512 },
      scheme: { enum: ["https", "http", "ssh"] },
      host: { type: "string", minLength: 1, maxLength: 253 },
      port: { type: "integer", minimum: 1, maximum: 65535 },
      tls: TLS,
    },
  },
};

export interface EndpointInput {
  url?: string;
  scheme?: string;
  host?: string;
  port?: number;
  tls?: Record<string, unknown>;
}

export interface Endpoint {
  scheme: string;
  host: string;
  port: number;
  tls: Record<string, unknown>;
}

export class EndpointError extends Error {}

function ipv4(text: string): number[] | null {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(text);
  if (!m) return null;
  const parts = m.slice(1).map(Number);
  return parts.every((p, i) => p <= 255 && String(p) === m[i + 1]) ? parts : null;
}

/** Canonical host: IPv4 (optionally /prefix, network address only), a bracket-less IPv6
 * address as the URL parser prints it, or a DNS name lowercased without a trailing dot. */
function canonicalHost(raw: string): string {
  let h = raw.trim().replace(/^\[|\]$/g, "");
  const slash = h.indexOf("/");
  if (slash >= 0) {
    const addr = ipv4(h.slice(0, slash));
    const bits = Number(h.slice(slash + 1));
    if (!addr || !/^\d{1,2}$/.test(h.slice(slash + 1)) || bits > 32) {
      throw new EndpointError(`host ${JSON.stringify(raw)} is not an IPv4 network in CIDR form`);
    }
    const value = addr.reduce((a, b) => a * 256 + b, 0);
    const size = 2 ** (32 - bits);
    if (value % size !== 0) throw new EndpointError(`host ${JSON.stringify(raw)} has host bits set`);
    return `${addr.join(".")}/${bits}`;
  }
  if (ipv4(h)) return h;
  if (h.includes(":")) {
    try {
      return new URL(`https://[${h}]/`).hostname.replace(/^\[|\]$/g, "");
    } catch {
      throw new EndpointError(`host ${JSON.stringify(raw)} is not an IP address`);
    }
  }
  h = h.toLowerCase().replace(/\.$/, "");
  if (!h || h.length > 253 || !/^[a-z0-9]([a-z0-9_-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9_-]*[a-z0-9])?)*$/.test(h)) {
    throw new EndpointError(`host ${JSON.stringify(raw)} is not a host name, IP address or CIDR network`);
  }
  return h;
}

function loopback(host: string): boolean {
  if (host === "localhost" || host === "::1") return true;
  const [addr, bits] = host.split("/");
  const v4 = ipv4(addr);
  return v4 !== null && v4[0] === 127 && (bits === undefined || Number(bits) >= 8);
}

function canonicalTls(scheme: string, tls: Record<string, unknown>, host: string): Record<string, unknown> {
  const { ca_bundle, insecure, allow_plain_http, known_hosts, insecure_host_key } = tls;
  if (scheme === "ssh") {
    if (ca_bundle !== undefined || insecure !== undefined || allow_plain_http !== undefined) {
      throw new EndpointError("an ssh endpoint takes known_hosts or insecure_host_key, not TLS settings");
    }
    if (Boolean(known_hosts) === Boolean(insecure_host_key)) {
      throw new EndpointError("an ssh endpoint needs known_hosts or insecure_host_key: true (exactly one)");
    }
    return known_hosts ? { known_hosts } : { insecure_host_key: true };
  }
  if (known_hosts !== undefined || insecure_host_key !== undefined) {
    throw new EndpointError("known_hosts and insecure_host_key are for ssh endpoints");
  }
  if (scheme === "http") {
    if (ca_bundle !== undefined || insecure) throw new EndpointError("a plain-HTTP endpoint takes no TLS settings");
    if (!loopback(host)) throw new EndpointError(`plain HTTP may be sealed only for loopback hosts, not ${host}`);
    return { allow_plain_http: true };
  }
  if (allow_plain_http) throw new EndpointError("allow_plain_http is for http:// endpoints only");
  if (ca_bundle !== undefined && insecure) throw new EndpointError("both a CA bundle and insecure: true; choose one");
  if (ca_bundle !== undefined) return { ca_bundle };
  return insecure ? { insecure: true } : {};
}

/** Canonical endpoints, or EndpointError naming the first bad entry. */
export function canonicalEndpoints(input: EndpointInput[]): Endpoint[] {
  const out: Endpoint[] = [];
  input.forEach((e, i) => {
    try {
      let scheme: string, host: string, port: number | undefined;
      if (e.url !== undefined) {
        if (e.scheme !== undefined || e.host !== undefined || e.port !== undefined) {
          throw new EndpointError("give url, or scheme/host/port, not both");
        }
        let u: URL;
        try {
          u = new URL(e.url.includes("://") ? e.url : `https://${e.url}`);
        } catch {
          throw new EndpointError(`url ${JSON.stringify(e.url)} is not a URL`);
        }
        scheme = u.protocol.replace(/:$/, "");
        if (!(scheme in DEFAULT_PORTS)) throw new EndpointError(`scheme must be https, http or ssh, got ${scheme}`);
        if (u.username || u.password || (u.pathname !== "/" && u.pathname !== "") || u.search || u.hash) {
          throw new EndpointError("url must be scheme://host[:port] only");
        }
        host = u.hostname;
        port = u.port ? Number(u.port) : undefined;
      } else {
        if (!e.scheme || !e.host) throw new EndpointError("give url, or scheme and host");
        scheme = e.scheme;
        host = e.host;
        port = e.port;
      }
      const h = canonicalHost(host);
      out.push({ scheme, host: h, port: port ?? DEFAULT_PORTS[scheme], tls: canonicalTls(scheme, e.tls ?? {}, h) });
    } catch (err) {
      if (err instanceof EndpointError) throw new EndpointError(`endpoints[${i}]: ${err.message}`);
      throw err;
    }
  });
  return out;
}

/** True when an endpoint skips verification (insecure TLS, plain HTTP, unverified host key). */
export function unverified(e: Endpoint): boolean {
  return Boolean(e.tls.insecure || e.tls.allow_plain_http || e.tls.insecure_host_key);
}
