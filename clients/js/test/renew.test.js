// The planned reconnect before the server's maximum connection duration (API Gateway: 2 h):
// a new socket opens and resubscribes after each cursor while the old one still delivers;
// the old one closes only once the new one has caught up. No gap, nothing twice.
import assert from "node:assert/strict";
import { test } from "node:test";

import { acceptSubscribes, change, harness } from "./support/fakes.js";

const PLAN = { maxConnectionMs: 600_000, renewBeforeMs: 100_000, heartbeatMs: 0 };
const RENEW_AT = 600_000 - 100_000 + 0.5 * 50_000; // random() is 0.5 in the harness

async function subscribed(h, request = { table: "events", key: { PK: "ROOM#1" } }) {
  const told = [];
  const subscription = h.client.subscribe(request, (c) => told.push(c.id));
  const socket = h.last();
  socket.open();
  acceptSubscribes(socket, { cursor: "c-now" });
  return { told, subscription, socket };
}

test("a new socket takes over before the cut, with no gap and nothing told twice", async () => {
  const h = await harness(PLAN);
  const { told, socket: old } = await subscribed(h);
  old.receive(change({ id: "c1" }));
  await h.clock.advance(RENEW_AT - 1);
  assert.equal(h.sockets.length, 1);
  await h.clock.advance(1);
  assert.equal(h.sockets.length, 2, "no planned reconnect");
  const next = h.last();
  assert.equal(next.token, "token-2"); // a fresh token for the new socket
  next.open();
  assert.deepEqual(next.actions("subscribe"), [
    { action: "subscribe", id: "s1", table: "events", key: { PK: "ROOM#1" }, after: "cursor-of-c1", snapshot: true },
  ]);
  assert.equal(old.closedByClient, null, "the old socket closed before the new one caught up");
  old.receive(change({ id: "c2" })); // the old socket still delivers meanwhile
  next.receive({ type: "subscribed", id: "s1", cursor: "c-later" });
  next.receive(change({ id: "c1", replay: true })); // the replay's overlap: seen already
  next.receive(change({ id: "c2", replay: true }));
  next.receive(change({ id: "c3" })); // live on the new socket: held until resumed
  old.receive(change({ id: "c3" }));
  assert.equal(old.closedByClient, null);
  next.receive({ type: "resumed", id: "s1", replayed: 2, cursor: "cursor-of-c2" });
  assert.deepEqual(old.closedByClient, { code: 1000, reason: "planned_reconnect" });
  next.receive(change({ id: "c4" }));
  old.receive(change({ id: "c5" })); // a straggler on the closed socket: ignored
  assert.deepEqual(told, ["c1", "c2", "c3", "c4"]);
  assert.deepEqual(h.stateNames(), ["connecting", "open"], "the state left open");
  // the new socket plans its own renewal, from when it opened
  await h.clock.advance(RENEW_AT);
  assert.equal(h.sockets.length, 3);
  h.client.close();
});

test("by default the planned reconnect starts in the five minutes before the 2-hour cut", async () => {
  for (const [random, at] of [
    [0, 6_900_000],
    [0.999, 7_049_850],
  ]) {
    const h = await harness({ heartbeatMs: 0, random: () => random });
    h.last().open();
    await h.clock.advance(at - 1);
    assert.equal(h.sockets.length, 1);
    await h.clock.advance(1);
    assert.equal(h.sockets.length, 2, `random ${random}: no renewal at ${at} ms`);
    h.client.close();
  }
});

test("a new socket that does not catch up in renewTimeoutMs is dropped; the old one stays, then a retry", async () => {
  const h = await harness({ ...PLAN, renewTimeoutMs: 10_000 });
  const { told, socket: old } = await subscribed(h);
  await h.clock.advance(RENEW_AT);
  const slow = h.last();
  slow.open();
  slow.receive({ type: "subscribed", id: "s1", cursor: "c-x" }); // no `resumed` ever
  await h.clock.advance(10_000);
  assert.equal(slow.closedByClient?.reason, "renew_timeout");
  assert.equal(old.closedByClient, null);
  old.receive(change({ id: "still-here" }));
  assert.deepEqual(told, ["still-here"]);
  await h.clock.advance(500); // backoff before the next try
  assert.equal(h.sockets.length, 3);
  assert.deepEqual(h.stateNames(), ["connecting", "open"]);
  h.client.close();
});

test("if the old socket is cut while the new one catches up, the new one carries on", async () => {
  const h = await harness(PLAN);
  const { told, socket: old } = await subscribed(h);
  old.receive(change({ id: "c1" }));
  await h.clock.advance(RENEW_AT);
  const next = h.last();
  next.open();
  next.receive({ type: "subscribed", id: "s1", cursor: "c-later" });
  next.receive(change({ id: "c2" })); // live, held until resumed
  old.serverClose(1001, "Going away"); // the cut
  assert.deepEqual(h.stateNames(), ["connecting", "open"]);
  assert.deepEqual(told, ["c1"]);
  next.receive({ type: "resumed", id: "s1", replayed: 0, cursor: "cursor-of-c1" });
  assert.deepEqual(told, ["c1", "c2"]);
  assert.equal(h.sockets.length, 2);
  h.client.close();
});

test("without subscriptions the new socket takes over as soon as it opens", async () => {
  const h = await harness(PLAN);
  h.last().open();
  await h.clock.advance(RENEW_AT);
  h.last().open();
  assert.deepEqual(h.sockets[0].closedByClient, { code: 1000, reason: "planned_reconnect" });
  h.client.close();
});

test("maxConnectionMs 0 turns the planned reconnect off", async () => {
  const h = await harness({ ...PLAN, maxConnectionMs: 0 });
  h.last().open();
  await h.clock.advance(24 * 3_600_000);
  assert.equal(h.sockets.length, 1);
  h.client.close();
});

test("a planned reconnect still waiting for its token when the old socket is cut gives way to the reconnect", async () => {
  let release = () => {};
  let calls = 0;
  const h = await harness({
    ...PLAN,
    token: () => {
      calls += 1;
      if (calls !== 2) return `token-${calls}`;
      return new Promise((resolve) => {
        release = () => resolve("token-2");
      });
    },
  });
  h.last().open();
  await h.clock.advance(RENEW_AT); // the renewal asks for its token, which does not come yet
  h.last().serverClose(1001); // the cut
  await h.clock.advance(500);
  assert.equal(h.sockets.length, 2); // the reconnect's socket
  h.last().open();
  release();
  await h.clock.advance(0);
  assert.equal(h.sockets.length, 2, "a stale planned reconnect opened a socket");
  assert.deepEqual(h.stateNames(), ["connecting", "open", "reconnecting", "connecting", "open"]);
  h.client.close();
});

test("a refetch on the new socket keeps a change the old socket delivered after the snapshot was read", async () => {
  const h = await harness(PLAN);
  const { told, subscription, socket: old } = await subscribed(h);
  old.receive(change({ id: "c1", keys: { PK: "ROOM#1", SK: "A" } }));
  await h.clock.advance(RENEW_AT);
  const next = h.last();
  next.open();
  next.receive({ type: "subscribed", id: "s1", cursor: "c-later" });
  next.receive({ type: "reset", id: "s1", reason: "replay_too_long", cursor: "c-later" });
  // the server read the snapshot (A only), then B was written: both sockets carry it live
  const b = change({ id: "c2", keys: { PK: "ROOM#1", SK: "B" } });
  old.receive(b); // told, and put in the view
  next.receive(b); // held on the new socket until its snapshot ends
  next.receive({
    type: "snapshot",
    id: "s1",
    items: [{ PK: "ROOM#1", SK: "A", n: 1 }],
    more: false,
    cursor: "c-later",
  });
  assert.deepEqual(told, ["c1", "c2"], "a change told twice");
  assert.equal(old.closedByClient?.reason, "planned_reconnect");
  assert.deepEqual(
    [...subscription.view.items.values()].map((item) => item.SK).sort(),
    ["A", "B"],
    "the refetch on the new socket wiped an item the old socket had delivered",
  );
  h.client.close();
});
