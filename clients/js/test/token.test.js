// The token: fetched on every (re)connect, refreshed with `auth` before it expires.
import assert from "node:assert/strict";
import { test } from "node:test";

import { harness } from "./support/fakes.js";

const inMs = (h, ms) => new Date(h.clock.now() + ms).toISOString();

test("every connect calls the token function and puts the token in the URL", async () => {
  const h = await harness({ url: "ws://server.test/dev?token=stale&lang=en" });
  h.last().open();
  h.last().serverClose(1006);
  await h.clock.advance(500);
  assert.equal(h.calls.tokens, 2);
  assert.deepEqual(
    h.sockets.map((s) => [s.token, new URL(s.url).searchParams.get("lang")]),
    [
      ["token-1", "en"],
      ["token-2", "en"],
    ],
  );
  h.client.close();
});

test("a token is URL-encoded", async () => {
  const h = await harness({ token: () => "a+b/c=&d" });
  assert.equal(h.last().token, "a+b/c=&d");
  assert.ok(!h.last().url.includes("a+b/c=&d"));
  h.client.close();
});

test("before the token expires the client sends `auth` with a fresh one, then plans the next", async () => {
  const h = await harness({ heartbeatMs: 0, maxConnectionMs: 0 });
  const socket = h.last();
  socket.open();
  assert.deepEqual(socket.actions("hello"), [{ action: "hello" }]);
  socket.receive({ type: "hello", version: 2, expiresAt: inMs(h, 600_000), limits: {} });
  await h.clock.advance(540_000 - 1); // refresh a minute ahead
  assert.equal(socket.actions("auth").length, 0);
  await h.clock.advance(1);
  assert.deepEqual(socket.actions("auth"), [{ action: "auth", token: "token-2" }]);
  socket.receive({ type: "authenticated", expiresAt: inMs(h, 600_000) });
  await h.clock.advance(540_000);
  assert.deepEqual(
    socket.actions("auth").map((a) => a.token),
    ["token-2", "token-3"],
  );
  assert.equal(h.sockets.length, 1);
  h.client.close();
});

test("a short-lived token is refreshed at half its remaining life", async () => {
  const h = await harness({ heartbeatMs: 0, maxConnectionMs: 0 });
  h.last().open();
  h.last().receive({ type: "hello", version: 2, expiresAt: inMs(h, 20_000), limits: {} });
  await h.clock.advance(9_999);
  assert.equal(h.last().actions("auth").length, 0);
  await h.clock.advance(1);
  assert.equal(h.last().actions("auth").length, 1);
  h.client.close();
});

test("a refused `auth` is reported with the server's code and tried again", async () => {
  const h = await harness({ heartbeatMs: 0, maxConnectionMs: 0 });
  const socket = h.last();
  socket.open();
  socket.receive({ type: "hello", version: 2, expiresAt: inMs(h, 120_000), limits: {} });
  await h.clock.advance(60_000);
  assert.equal(socket.actions("auth").length, 1);
  socket.receive({ type: "error", code: "invalid_token", message: "the token was refused" });
  assert.deepEqual(
    h.errors.map((e) => [e.code, e.message]),
    [["invalid_token", "the token was refused"]],
  );
  await h.clock.advance(2_499); // initialMs + 1.5 x backoffDelay(1): 1000 + 1500 ms
  assert.equal(socket.actions("auth").length, 1);
  await h.clock.advance(1);
  assert.equal(socket.actions("auth").length, 2);
  h.client.close();
});

test("without a token function the URL is used as given and no `auth` is ever sent", async () => {
  const h = await harness({ token: undefined, url: "ws://server.test/dev?token=from-the-banner" });
  h.last().open();
  h.last().receive({ type: "hello", version: 2, expiresAt: inMs(h, 10_000), limits: {} });
  await h.clock.advance(60_000);
  assert.equal(h.last().token, "from-the-banner");
  assert.equal(h.last().actions("auth").length, 0);
  h.client.close();
});

test("a stack without tokens (expiresAt null) plans no refresh", async () => {
  const h = await harness({ heartbeatMs: 0, maxConnectionMs: 0 });
  h.last().open();
  h.last().receive({ type: "hello", version: 2, expiresAt: null, limits: {} });
  await h.clock.advance(48 * 3_600_000);
  assert.equal(h.calls.tokens, 1);
  h.client.close();
});

test("a token function that returns no fresher token is told once, not asked again and again", async () => {
  const h = await harness({ heartbeatMs: 0, maxConnectionMs: 0, token: () => "the-same-token" });
  const socket = h.last();
  socket.open();
  const expiresAt = inMs(h, 600_000);
  socket.receive({ type: "hello", version: 2, expiresAt, limits: {} });
  await h.clock.advance(540_000);
  assert.equal(socket.actions("auth").length, 1);
  socket.receive({ type: "authenticated", expiresAt }); // the same expiry
  await h.clock.advance(59_999);
  assert.equal(socket.actions("auth").length, 1);
  assert.deepEqual(
    h.errors.map((e) => e.code),
    ["token_failed"],
  );
  h.client.close();
});

test("a token function that never answers is given up on after openTimeoutMs, and retried", async () => {
  let calls = 0;
  const h = await harness({
    openTimeoutMs: 10_000,
    // the first call hangs (a token endpoint that never answers); the next one works
    token: () => (++calls === 1 ? new Promise(() => {}) : Promise.resolve(`token-${calls}`)),
  });
  assert.equal(h.sockets.length, 0);
  await h.clock.advance(10_000);
  assert.deepEqual(
    h.errors.map((e) => e.code),
    ["token_failed"],
    "a hanging token function left the client waiting for ever",
  );
  assert.equal(h.client.state, "reconnecting");
  await h.clock.advance(1_000); // the backoff
  assert.equal(calls, 2);
  assert.equal(h.sockets.length, 1);
  assert.equal(h.last().token, "token-2");
  h.client.close();
});

test("a refresh whose token function never answers is tried again", async () => {
  let calls = 0;
  const h = await harness({
    heartbeatMs: 0,
    maxConnectionMs: 0,
    openTimeoutMs: 10_000,
    token: () => (++calls === 2 ? new Promise(() => {}) : Promise.resolve(`token-${calls}`)),
  });
  const socket = h.last();
  socket.open();
  socket.receive({ type: "hello", version: 2, expiresAt: inMs(h, 600_000), limits: {} });
  await h.clock.advance(540_000); // the refresh: its token call hangs
  assert.equal(calls, 2);
  await h.clock.advance(10_000);
  assert.deepEqual(h.errors.map((e) => e.code), ["token_failed"]);
  await h.clock.advance(4_000); // the retry, 1 to 4 x initialMs later
  assert.deepEqual(socket.actions("auth"), [{ action: "auth", token: "token-3" }]);
  h.client.close();
});
