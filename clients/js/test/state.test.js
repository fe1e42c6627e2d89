// The connection's states and their events: connecting, open, reconnecting, closed.
import assert from "node:assert/strict";
import { test } from "node:test";

import { connect } from "../index.js";
import { fakeSockets, harness, settle } from "./support/fakes.js";

test("connecting, open, then reconnecting and open again when the server closes", async () => {
  const h = await harness();
  assert.deepEqual(h.stateNames(), ["connecting"]);
  assert.equal(h.client.state, "connecting");
  h.last().open();
  assert.equal(h.client.state, "open");
  h.last().serverClose(1001, "Going away");
  const lost = h.states.at(-1);
  assert.deepEqual(
    [lost.state, lost.code, lost.reason, lost.attempt, lost.delayMs],
    ["reconnecting", 1001, "Going away", 1, 500],
  );
  await h.clock.advance(500);
  assert.equal(h.sockets.length, 2);
  h.last().open();
  assert.deepEqual(h.stateNames(), ["connecting", "open", "reconnecting", "connecting", "open"]);
  h.client.close();
});

test("each state also has its own event", async () => {
  const { WebSocket, sockets } = fakeSockets();
  const client = connect({ url: "ws://server.test/dev", WebSocket, random: () => 0 });
  const seen = [];
  for (const name of ["connecting", "open", "reconnecting", "closed"]) {
    client.on(name, () => seen.push(name));
  }
  const off = client.on("open", () => seen.push("open again"));
  await settle();
  sockets[0].open();
  off();
  sockets[0].serverClose(1006);
  client.close();
  assert.deepEqual(seen, ["connecting", "open", "open again", "reconnecting", "closed"]);
});

test("close() ends everything: closed, sockets closed with 1000, no reconnect", async () => {
  const h = await harness();
  h.last().open();
  h.client.close();
  assert.equal(h.client.state, "closed");
  assert.deepEqual(h.last().closedByClient, { code: 1000, reason: "closed_by_client" });
  await h.clock.advance(24 * 3600 * 1000);
  assert.equal(h.sockets.length, 1);
  assert.deepEqual(h.stateNames(), ["connecting", "open", "closed"]);
  h.client.close(); // twice is harmless
  assert.deepEqual(h.stateNames(), ["connecting", "open", "closed"]);
});

test("close() while waiting to reconnect cancels the attempt", async () => {
  const h = await harness();
  h.last().serverClose(1006);
  h.client.close();
  await h.clock.advance(60_000);
  assert.equal(h.sockets.length, 1);
  assert.equal(h.client.state, "closed");
});

test("after maxRetries failed attempts in a row the client gives up: closed, with an error", async () => {
  const h = await harness({ maxRetries: 2 });
  for (let n = 0; n < 2; n += 1) {
    h.last().serverClose(1006);
    await h.clock.advance(60_000);
  }
  h.last().serverClose(1006);
  assert.equal(h.sockets.length, 3);
  assert.equal(h.client.state, "closed");
  assert.deepEqual(
    h.errors.map((e) => e.code),
    ["retries_exhausted"],
  );
  await h.clock.advance(600_000);
  assert.equal(h.sockets.length, 3);
});

test("a socket that does not open within openTimeoutMs is abandoned and retried", async () => {
  const h = await harness({ openTimeoutMs: 10_000 });
  await h.clock.advance(9_999);
  assert.equal(h.last().closedByClient, null);
  await h.clock.advance(1);
  assert.equal(h.sockets[0].closedByClient?.code, 1000);
  assert.equal(h.states.at(-1).reason, "open_timeout");
  await h.clock.advance(500);
  assert.equal(h.sockets.length, 2);
  h.client.close();
});

test("a token function that fails is reported and retried with backoff", async () => {
  let calls = 0;
  const h = await harness({
    token: async () => {
      calls += 1;
      if (calls === 1) throw new Error("identity provider down");
      return "good-token";
    },
  });
  assert.equal(h.sockets.length, 0);
  assert.deepEqual(
    h.errors.map((e) => [e.code, e.cause?.message]),
    [["token_failed", "identity provider down"]],
  );
  assert.equal(h.states.at(-1).state, "reconnecting");
  await h.clock.advance(500);
  assert.equal(h.sockets.length, 1);
  assert.equal(h.last().token, "good-token");
  h.client.close();
});

test("connect refuses what cannot work, at once", () => {
  const { WebSocket } = fakeSockets();
  assert.throws(() => connect({ url: "http://server.test/dev", WebSocket }), TypeError);
  assert.throws(() => connect({ url: "ws://x/dev", WebSocket, token: "abc" }), TypeError);
  const saved = globalThis.WebSocket;
  try {
    globalThis.WebSocket = undefined;
    assert.throws(() => connect({ url: "ws://x/dev" }), /no WebSocket implementation/);
  } finally {
    globalThis.WebSocket = saved;
  }
});

test("a listener that throws is reported and does not stop the client", async () => {
  const h = await harness();
  h.client.on("open", () => {
    throw new Error("listener bug");
  });
  h.last().open();
  assert.equal(h.client.state, "open");
  assert.deepEqual(
    h.errors.map((e) => e.code),
    ["callback_failed"],
  );
  h.client.close();
});

test("an error nobody listens to is written to the console; one a subscription's onError took is not", async () => {
  const { WebSocket, sockets } = fakeSockets();
  const client = connect({ url: "ws://server.test/dev", WebSocket, random: () => 0 });
  const warned = [];
  const original = console.warn;
  console.warn = (...args) => warned.push(args);
  try {
    const told = [];
    client.subscribe({ table: "events", id: "a" }, () => {}, { onError: (e) => told.push(e.code) });
    client.subscribe({ table: "events", id: "b" }, () => {});
    await settle();
    sockets[0].open();
    sockets[0].receive({ type: "error", code: "forbidden", id: "a", message: "no" });
    sockets[0].receive({ type: "error", code: "forbidden", id: "b", message: "no" });
    assert.deepEqual(told, ["forbidden"]);
    assert.deepEqual(
      warned.map(([, error]) => [error.code, error.subscription]),
      [["forbidden", "b"]],
    );
  } finally {
    console.warn = original;
    client.close();
  }
});
