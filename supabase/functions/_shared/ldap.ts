// Directory (LDAP) sign-in for the idm-login function's direct path: bind as the user over
// LDAPS or StartTLS, read the user's entry and groups as that user. The executor path does
// the same in Python (executor/identity.py); both follow docs/identity.md.
//
// - Only TLS: ldaps://, or ldap:// with StartTLS; the server certificate is checked against
//   the configured CA bundle. A plain bind is never attempted.
// - Failover: the URIs in order; a server that cannot be reached (connect error or
//   timeout) passes to the next one. A refused bind does not: the answer is the answer.
// - Injection: the username enters a DN only escaped per RFC 4514 and a filter only
//   escaped per RFC 4515, so a hostile username is matched literally.
// - Locked accounts: the bind carries the password policy control, whose answer tells a
//   locked account (ppolicy error accountLocked) from a wrong password. A disabled account
//   (directory_configs.disabled_filter matches its entry) is refused even if it could bind.

import { Client, InvalidCredentialsError, PasswordPolicyControl } from "ldapts";

export interface DirectoryConfig {
  uris: string[];
  starttls: boolean;
  ca_pem: string | null;
  bind_dn_template: string;
  base_dn: string;
  user_filter: string;
  group_base_dn: string | null;
  nesting: "memberof" | "search" | "ad";
  // matches a disabled account (FreeIPA nsAccountLock, AD userAccountControl bit 2); null: none
  disabled_filter?: string | null;
  // attribute names (directory_configs; the usual ones when absent)
  mail_attribute?: string;
  display_name_attribute?: string;
  member_of_attribute?: string;
  member_attribute?: string;
  connect_timeout_ms: number;
  op_timeout_ms: number;
}

export interface DirectoryUser {
  subject: string; // the entry's DN
  username: string;
  email: string | null;
  display_name: string | null;
  groups: string[]; // DNs of every group the user is in (nested included)
}

export type DirectoryErrorCode =
  | "invalid_credentials"
  | "account_locked"
  | "account_disabled"
  | "user_not_found"
  | "directory_unreachable"
  | "directory_error";

export class DirectoryError extends Error {
  constructor(readonly code: DirectoryErrorCode, message: string) {
    super(message);
    this.name = "DirectoryError";
  }
}

const MAX_GROUPS = 1000; // groups read per user before the nesting loop stops
const MAX_NESTING = 16; // levels of nested groups followed

/** RFC 4514 escaping of an attribute value inside a DN. */
export function escapeDnValue(value: string): string {
  let out = "";
  for (let i = 0; i < value.length; i++) {
    const c = value[i];
    const code = value.charCodeAt(i);
    if (code === 0) out += "\\00";
    else if ('"+,;<>\\='.includes(c)) out += "\\" + c;
    else if ((i === 0 && (c === " " || c === "#")) || (i === value.length - 1 && c === " ")) out += "\\" + c;
    else if (code < 0x20 || code === 0x7f) out += "\\" + code.toString(16).padStart(2, "0");
    else out += c;
  }
  return out;
}

/** RFC 4515 escaping of an assertion value inside a search filter (UTF-8 bytes as \XX). */
export function escapeFilterValue(value: string): string {
  let out = "";
  for (const c of value) {
    if (c === "*" || c === "(" || c === ")" || c === "\\" || c === "\0") {
      out += "\\" + c.charCodeAt(0).toString(16).padStart(2, "0");
    } else {
      out += c;
    }
  }
  return out;
}

export function fill(template: string, username: string, escape: (v: string) => string): string {
  return template.split("{username}").join(escape(username));
}

/** A username worth sending at all: 1..256 characters, no control characters. */
export function checkUsername(username: unknown): string {
  // deno-lint-ignore no-control-regex
  if (typeof username !== "string" || username.length < 1 || username.length > 256 || /[\u0000-\u001f\u007f]/.test(username)) {
    throw new DirectoryError("invalid_credentials", "invalid username or password");
  }
  return username;
}

function first(v: unknown): string | null {
  if (Array.isArray(v)) return v.length ? String(v[0]) : null;
  if (v === undefined || v === null) return null;
  return String(v);
}

function many(v: unknown): string[] {
  if (Array.isArray(v)) return v.map(String);
  if (v === undefined || v === null || v === "") return [];
  return [String(v)];
}

function unreachable(err: unknown): boolean {
  const e = err as { code?: string; name?: string; message?: string };
  if (err instanceof DirectoryError) return false;
  if (typeof e?.code === "string" && /^(ECONNREFUSED|ECONNRESET|ETIMEDOUT|EHOSTUNREACH|ENETUNREACH|ENOTFOUND|EPIPE)$/.test(e.code)) {
    return true;
  }
  return /timeout|timed out|connect|closed|ECONNREFUSED|socket/i.test(`${e?.name ?? ""} ${e?.message ?? ""}`);
}

async function connect(uri: string, cfg: DirectoryConfig): Promise<Client> {
  const tlsOptions = cfg.ca_pem ? { ca: [cfg.ca_pem] } : {};
  if (uri.startsWith("ldaps://")) {
    return new Client({ url: uri, tlsOptions, connectTimeout: cfg.connect_timeout_ms, timeout: cfg.op_timeout_ms });
  }
  if (!cfg.starttls) {
    throw new DirectoryError("directory_error", "refusing a plain LDAP bind: use ldaps:// or StartTLS");
  }
  const client = new Client({ url: uri, connectTimeout: cfg.connect_timeout_ms, timeout: cfg.op_timeout_ms });
  await client.startTLS(tlsOptions);
  return client;
}

/** An attribute of a search entry by name, in any case (servers answer in their own). */
function attr(entry: Record<string, unknown>, name: string): unknown {
  const low = name.toLowerCase();
  for (const [k, v] of Object.entries(entry)) if (k.toLowerCase() === low) return v;
  return undefined;
}

async function groupsOf(client: Client, cfg: DirectoryConfig, dn: string, memberOf: string[]): Promise<string[]> {
  const base = cfg.group_base_dn || cfg.base_dn;
  const seen = new Set<string>();
  const key = (g: string) => g.toLowerCase();
  const out: string[] = [];
  const add = (g: string) => {
    if (!seen.has(key(g)) && out.length < MAX_GROUPS) {
      seen.add(key(g));
      out.push(g);
      return true;
    }
    return false;
  };
  if (cfg.nesting === "ad") {
    const { searchEntries } = await client.search(base, {
      scope: "sub",
      filter: `(member:1.2.840.113556.1.4.1941:=${escapeFilterValue(dn)})`,
      attributes: ["dn"],
      sizeLimit: MAX_GROUPS,
    });
    for (const e of searchEntries) add(e.dn);
    return out;
  }
  memberOf.forEach(add);
  if (cfg.nesting === "memberof") return out;
  // search: groups listing the user, then groups listing those groups, until none is new
  const expanded = new Set<string>([key(dn)]);
  let frontier = [dn];
  for (let level = 0; level < MAX_NESTING && frontier.length; level++) {
    const member = cfg.member_attribute || "member";
    const filter = frontier.length === 1
      ? `(${member}=${escapeFilterValue(frontier[0])})`
      : `(|${frontier.map((m) => `(${member}=${escapeFilterValue(m)})`).join("")})`;
    const { searchEntries } = await client.search(base, {
      scope: "sub",
      filter: `(&(|(objectClass=groupOfNames)(objectClass=groupOfUniqueNames)(objectClass=group))${filter})`,
      attributes: ["dn"],
      sizeLimit: MAX_GROUPS,
    });
    frontier = [];
    for (const e of searchEntries) {
      add(e.dn);
      if (!expanded.has(key(e.dn))) {
        expanded.add(key(e.dn));
        frontier.push(e.dn);
      }
    }
  }
  return out;
}

/** Bind as ``username`` and read the entry and its groups, trying each URI in turn. */
export async function directorySignIn(cfg: DirectoryConfig, username: string, password: string): Promise<DirectoryUser> {
  checkUsername(username);
  if (typeof password !== "string" || password.length === 0 || password.length > 1024) {
    // an empty password would be an unauthenticated bind (RFC 4513 5.1.2): never
    throw new DirectoryError("invalid_credentials", "invalid username or password");
  }
  const bindDn = fill(cfg.bind_dn_template, username, escapeDnValue);
  const mailAttr = cfg.mail_attribute || "mail";
  const nameAttr = cfg.display_name_attribute || "displayName";
  const memberOfAttr = cfg.member_of_attribute || "memberOf";
  let lastError: unknown = null;
  for (const uri of cfg.uris) {
    let client: Client | null = null;
    try {
      client = await connect(uri, cfg);
      const ppolicy = new PasswordPolicyControl();
      try {
        await client.bind(bindDn, password, ppolicy);
      } catch (err) {
        if (err instanceof InvalidCredentialsError) {
          if (ppolicy.value?.error === 1) throw new DirectoryError("account_locked", "the directory account is locked");
          throw new DirectoryError("invalid_credentials", "invalid username or password");
        }
        throw err;
      }
      const { searchEntries } = await client.search(cfg.base_dn, {
        scope: "sub",
        filter: fill(cfg.user_filter, username, escapeFilterValue),
        attributes: [mailAttr, "cn", nameAttr, memberOfAttr],
        sizeLimit: 2,
      });
      if (searchEntries.length !== 1) {
        throw new DirectoryError("user_not_found", "the directory has no single entry for this user");
      }
      const entry = searchEntries[0];
      if (cfg.disabled_filter) {
        // FreeIPA and AD refuse such a bind themselves; a directory that does not is refused here
        const disabled = await client.search(entry.dn, { scope: "base", filter: cfg.disabled_filter, attributes: ["dn"], sizeLimit: 1 });
        if (disabled.searchEntries.length) throw new DirectoryError("account_disabled", "the directory account is disabled");
      }
      const groups = await groupsOf(client, cfg, entry.dn, many(attr(entry, memberOfAttr)));
      return {
        subject: entry.dn,
        username,
        email: first(attr(entry, mailAttr)),
        display_name: first(attr(entry, nameAttr)) ?? first(entry.cn),
        groups,
      };
    } catch (err) {
      if (err instanceof DirectoryError) throw err;
      if (unreachable(err)) {
        lastError = err;
        continue; // failover to the next server
      }
      throw new DirectoryError("directory_error", `the directory refused the request (${(err as Error)?.name ?? "error"})`);
    } finally {
      if (client) await client.unbind().catch(() => {});
    }
  }
  throw new DirectoryError("directory_unreachable",
    `no directory server could be reached (${cfg.uris.length} tried${lastError ? `, last: ${(lastError as Error).name}` : ""})`);
}
