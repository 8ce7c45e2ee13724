// The endpoints a credential is sealed for: canonical form, and what is refused at sealing.
import assert from "node:assert/strict";
import { canonicalEndpoints, EndpointError, ENDPOINTS, unverified } from "../_shared/endpoints.ts";
import { compileCheck, validate } from "../_shared/validate.ts";

Deno.test("endpoints: URLs become canonical scheme, host, port and TLS trust", () => {
  assert.deepEqual(canonicalEndpoints([
    { url: "https://iDRAC-01.Example.", tls: { ca_bundle: "/etc/rackpilot/idrac-ca.pem" } },
    { url: "10.1.2.7:8443", tls: { insecure: true } },
    { url: "http://127.0.0.1:8001" },
    { url: "ssh://esx-01.example", tls: { known_hosts: "/etc/rackpilot/known_hosts" } },
    { scheme: "https", host: "10.1.2.0/24" },
  ]), [
    { scheme: "https", host: "idrac-01.example", port: 443, tls: { ca_bundle: "/etc/rackpilot/idrac-ca.pem" } },
    { scheme: "https", host: "10.1.2.7", port: 8443, tls: { insecure: true } },
    { scheme: "http", host: "127.0.0.1", port: 8001, tls: { allow_plain_http: true } },
    { scheme: "ssh", host: "esx-01.example", port: 22, tls: { known_hosts: "/etc/rackpilot/known_hosts" } },
    { scheme: "https", host: "10.1.2.0/24", port: 443, tls: {} },
  ]);
});

Deno.test("endpoints: contradictions and plain HTTP off loopback are refused, naming the entry", () => {
  const bad = [
    [{ url: "http://10.0.0.5" }, /loopback/],
    [{ url: "https://x.example", tls: { insecure: true, ca_bundle: "/ca.pem" } }, /choose one/],
    [{ url: "https://x.example", tls: { allow_plain_http: true } }, /http:\/\/ endpoints only/],
    [{ url: "ssh://x.example" }, /exactly one/],
    [{ url: "ftp://x.example" }, /scheme/],
    [{ url: "https://user:pw@x.example" }, /scheme:\/\/host\[:port\] only/],
    [{ url: "https://x.example/redfish" }, /scheme:\/\/host\[:port\] only/],
    [{ scheme: "https", host: "10.1.2.5/24" }, /host bits/],
    [{ scheme: "https", host: "*.example" }, /not a host name/],
  ] as const;
  for (const [e, why] of bad) {
    assert.throws(() => canonicalEndpoints([{ url: "https://ok.example" }, e]), (err: unknown) => {
      assert.ok(err instanceof EndpointError);
      assert.match(err.message, /^endpoints\[1\]: /);
      assert.match(err.message, why);
      return true;
    });
  }
});

Deno.test("endpoints: the request schema needs at least one and takes only known fields", () => {
  compileCheck(ENDPOINTS);
  assert.notEqual(validate(ENDPOINTS, []).length, 0);
  assert.notEqual(validate(ENDPOINTS, [{ url: "https://x", tls: { verify: false } }]).length, 0);
  assert.equal(validate(ENDPOINTS, [{ url: "https://x", tls: { insecure: true } }]).length, 0);
});

Deno.test("endpoints: insecure TLS, plain HTTP and unverified host keys are flagged", () => {
  const [a, b, c, d] = canonicalEndpoints([
    { url: "https://a.example", tls: { insecure: true } }, { url: "http://127.0.0.1:80" },
    { url: "ssh://a.example", tls: { insecure_host_key: true } }, { url: "https://a.example" },
  ]);
  assert.deepEqual([a, b, c, d].map(unverified), [true, true, true, false]);
});
