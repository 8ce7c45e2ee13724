// The JSON Schema subset validator and the create-job request checks (no database).
import assert from "node:assert/strict";
import { compileCheck, normalize, SchemaError, validate } from "../_shared/validate.ts";
import { checkRequest, JOB_SCHEMAS, JOB_TYPES, targetIds } from "../_shared/jobs.ts";
import { HttpError } from "../_shared/http.ts";

const S1 = "7d0b5c4e-6c55-4b2e-9e0e-0a1b2c3d4e5f";
const S2 = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9";
const CATALOG = { catalog_url: "https://downloads.example.com/Catalog.xml.gz" };
const VALID: Record<string, Record<string, unknown>> = {
  rolling_cluster_update: { cluster_id: S1, firmware: CATALOG },
  firmware_update: { server_ids: [S1, S2], firmware: CATALOG },
  power_operation: { server_ids: [S1], action: "graceful_restart" },
  virtual_media_mount: { server_ids: [S1], image_url: "http://10.0.0.5/isos/esxi.iso" },
  scp_backup: { server_ids: [S1] },
  esxi_upgrade: { host_ids: [S1], image: { target_version: "8.0.3", depot_url: "https://d/x.zip" } },
  vcenter_sync: { vcenter_id: S1 },
  replication_sync: { replication_pair_ids: [S1] },
  inventory_refresh: { site_id: S1 },
  firmware_compliance: { catalog_url: CATALOG.catalog_url, server_ids: [S1] },
  discovery_scan: { site_id: S1, ranges: ["10.1.2.0/24"], credential_set_ids: [S2] },
  catalog_refresh: { catalog_id: S1 },
  directory_sync: { site_id: S1 },
  vm_operation: { vm_ids: [S1], action: "power_off" },
};

function rejects(body: Record<string, unknown>, code: string): HttpError {
  try {
    checkRequest(body);
  } catch (e) {
    assert.ok(e instanceof HttpError, `expected HttpError, got ${e}`);
    assert.equal(e.code, code);
    assert.equal(e.status, 400);
    return e;
  }
  throw new Error(`accepted ${JSON.stringify(body)}`);
}

Deno.test("every generated job schema uses only supported keywords, and there are thirteen job types", () => {
  for (const s of Object.values(JOB_SCHEMAS.job_types)) compileCheck(s);
  assert.deepEqual(JOB_TYPES, Object.keys(VALID).sort());
});

Deno.test("a valid request of each type passes and is normalised with the schema defaults", () => {
  for (const [type, params] of Object.entries(VALID)) {
    const req = checkRequest({ type, params });
    assert.equal(req.type, type);
    assert.ok(Object.keys(req.params).length >= Object.keys(params).length);
  }
  const fw = checkRequest({ type: "firmware_update", params: VALID.firmware_update }).params;
  assert.equal(fw.reboot, "immediate");
  assert.equal(fw.max_parallel, 1);
  assert.deepEqual((fw.firmware as Record<string, unknown>).components, []);
  const scp = checkRequest({ type: "scp_backup", params: { server_ids: [S1.toUpperCase()] } }).params;
  assert.deepEqual(scp.components, ["ALL"]);
  assert.deepEqual(scp.server_ids, [S1], "UUIDs are stored lower-case");
});

Deno.test("bad request bodies are refused with a specific code and the offending path", () => {
  rejects({ params: {} }, "invalid_request");
  rejects({ type: "scp_backup", params: [] }, "invalid_request");
  rejects({ type: 7, params: {} }, "invalid_request");
  rejects({ type: "scp_backup", params: VALID.scp_backup, extra: true }, "invalid_request");
  rejects({ type: "scp_backup", params: VALID.scp_backup, priority: 101 }, "invalid_request");
  rejects({ type: "scp_backup", params: VALID.scp_backup, scheduled_for: "tomorrow" }, "invalid_request");
  rejects({ type: "format_all_disks", params: {} }, "unknown_job_type");
  const e = rejects({ type: "firmware_update", params: { server_ids: [S1, S1.toUpperCase()], firmware: { catalog_url: "ftp://x" } } },
    "invalid_params");
  const paths = (e.details as { issues: { path: string }[] }).issues.map((i) => i.path);
  assert.ok(paths.includes("/params/server_ids/1"), paths.join());
  assert.ok(paths.includes("/params/firmware/catalog_url"), paths.join());
  rejects({ type: "power_operation", params: { server_ids: [S1], action: "explode" } }, "invalid_params");
  rejects({ type: "power_operation", params: { server_ids: [], action: "on" } }, "invalid_params");
  rejects({ type: "power_operation", params: { server_ids: ["nope"], action: "on" } }, "invalid_params");
  rejects({ type: "rolling_cluster_update", params: { cluster_id: S1, firmware: CATALOG, max_parallel_hosts: 1.5 } },
    "invalid_params");
  rejects({ type: "rolling_cluster_update", params: { cluster_id: S1 } }, "invalid_params");
  rejects({ type: "vcenter_sync", params: { vcenter_id: S1, surprise: 1 } }, "invalid_params");
});

Deno.test("error details name paths and rules, never the submitted values", () => {
  const secretish = "https://user:hunter2@example.com/ x";
  const e = rejects({ type: "virtual_media_mount", params: { server_ids: [S1], image_url: secretish } }, "invalid_params");
  assert.ok(!JSON.stringify(e.details).includes("hunter2"));
  assert.ok(!e.message.includes("hunter2"));
});

Deno.test("targetIds reads the x-target fields of each job type", () => {
  const req = checkRequest({ type: "rolling_cluster_update", params: { cluster_id: S1, host_ids: [S2], firmware: CATALOG } });
  const t = targetIds(req.type, req.params);
  assert.deepEqual([...t.entries()], [["cluster", [S1]], ["host", [S2]]]);
  assert.deepEqual([...targetIds("vcenter_sync", { vcenter_id: S1 }).entries()], [["vcenter", [S1]]]);
});

Deno.test("validator: types, bounds, patterns, anyOf with null, refs, unique items", () => {
  const schema = {
    type: "object",
    additionalProperties: false,
    required: ["a"],
    $defs: { E: { enum: ["x", "y"] } },
    properties: {
      a: { type: "integer", minimum: 1, maximum: 3 },
      b: { anyOf: [{ type: "string", pattern: "^[a-z]+$" }, { type: "null" }] },
      c: { $ref: "#/$defs/E" },
      d: { type: "array", uniqueItems: true, items: { type: "string", format: "uuid" } },
      e: { type: "string", format: "date-time" },
    },
  };
  compileCheck(schema);
  assert.deepEqual(validate(schema, { a: 2, b: null, c: "x", d: [S1, S2], e: "2026-01-01T00:00:00Z" }), []);
  assert.equal(validate(schema, { a: 2.5 })[0].message, "expected integer, got number");
  assert.equal(validate(schema, { a: 4 })[0].message, "must be <= 3");
  assert.equal(validate(schema, { a: 1, b: "ABC" })[0].path, "/b");
  assert.match(validate(schema, { a: 1, b: "ABC" })[0].message, /pattern/);
  assert.equal(validate(schema, { a: 1, c: "z" })[0].path, "/c");
  assert.equal(validate(schema, { a: 1, d: [S1, S1.toUpperCase()] })[0].message, "duplicate item");
  assert.equal(validate(schema, { a: 1, e: "2026-01-01T00:00:00" }).length, 1, "a date-time needs a zone");
  assert.equal(validate(schema, {}).length, 1);
  assert.equal(validate(schema, { a: 1, z: 0 })[0].path, "/z");
  assert.equal(validate(schema, "x")[0].message, "expected object, got string");
});

Deno.test("validator: string lengths count code points, as Python does", () => {
  const s = { type: "string", maxLength: 2 };
  assert.deepEqual(validate(s, "😀😀"), []);
  assert.equal(validate(s, "😀😀😀").length, 1);
});

Deno.test("validator: unknown keywords and formats are schema errors, not silently ignored", () => {
  assert.throws(() => compileCheck({ type: "string", contentEncoding: "base64" }), SchemaError);
  assert.throws(() => compileCheck({ type: "string", format: "hostname" }), SchemaError);
  assert.throws(() => compileCheck({ $ref: "#/$defs/Missing" }), SchemaError);
});

Deno.test("normalize fills nested defaults and keeps given values", () => {
  const schema = JOB_SCHEMAS.job_types.rolling_cluster_update;
  const out = normalize(schema, { cluster_id: S1.toUpperCase(), firmware: CATALOG, max_parallel_hosts: 1 }) as Record<string, unknown>;
  assert.equal(out.cluster_id, S1);
  assert.equal(out.blocker_default, "ask");
  assert.equal(out.esxi, null);
  assert.deepEqual((out.firmware as Record<string, unknown>).allow_downgrade, false);
  assert.deepEqual(validate(schema, out), []);
});
