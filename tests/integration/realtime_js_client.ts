// supabase-js (the version pinned in supabase/functions/deno.json) against the local stack
// Realtime: presence track/untrack seen by another client, httpSend(), and send() on a
// channel never subscribed (supabase-js falls back to the batch broadcast endpoint).
// Run by tests/integration/test_realtime_js.py; prints one JSON line.
import { createClient } from "@supabase/supabase-js";
const url = Deno.env.get("SUPABASE_URL")!, key = Deno.env.get("SUPABASE_ANON_KEY")!;
const topic = Deno.env.get("RT_TOPIC")!;
const opts = { auth: { persistSession: false, autoRefreshToken: false } };
const a = createClient(url, key, opts), b = createClient(url, key, opts);
const until = async (pred: () => boolean, what: string) => {
  const end = Date.now() + 10000;
  while (!pred()) { if (Date.now() > end) throw new Error("timeout: " + what); await new Promise((r) => setTimeout(r, 20)); }
};
const subscribed = (ch: any) => new Promise<void>((res, rej) => ch.subscribe((s: string, e: any) => s === "SUBSCRIBED" ? res() : rej(new Error(s + " " + e))));
const out: Record<string, unknown> = {};
const chA = a.channel(topic, { config: { presence: { key: "alice" } } });
const leaves: string[] = [];
const chB = b.channel(topic, { config: { presence: { key: "bob" } } })
  .on("presence", { event: "sync" }, () => {})
  .on("presence", { event: "leave" }, ({ key }: any) => leaves.push(key));
const got: any[] = [];
chB.on("broadcast", { event: "*" }, (m: any) => got.push(m));
await subscribed(chA); await subscribed(chB);
out.track = await chA.track({ status: "online" });
await until(() => JSON.stringify(chB.presenceState()).includes("online"), "alice in bob's state");
out.state = Object.fromEntries(Object.entries(chB.presenceState()).map(([k, v]: any) => [k, v.map((m: any) => m.status)]));
out.untrack = await chA.untrack();
await until(() => leaves.includes("alice"), "alice leaves");
// httpSend, and send() on a channel never subscribed (falls back to the batch endpoint)
out.httpSend = await a.channel(topic).httpSend("hello", { n: 1 });
const orig = console.warn; console.warn = () => {};
out.send = await a.channel(topic).send({ type: "broadcast", event: "rest", payload: { n: 2 } });
console.warn = orig;
await until(() => got.length === 2, "two broadcasts");
out.broadcasts = got.map((m) => [m.event, m.payload.n]);
await a.removeAllChannels(); await b.removeAllChannels();
console.log(JSON.stringify(out));
