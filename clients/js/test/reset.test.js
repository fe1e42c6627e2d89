// `reset`: the server cannot prove nothing was missed. Keyed subscriptions refetch through a
// snapshot; table-wide ones (and failed snapshots) go to onReset, or onError when none.
import assert from "node:assert/strict";
import { test } from "node:test";

import { acceptSubscribes, change, harness } from "./support/fakes.js";

const ROOM = { PK: "ROOM#1" };

/** A subscription that saw one change, then a dropped socket and a new one, opened. */
async function resuming(h, request, options = {}) {
  const told = [];
  const resets = [];
  const snapshots = [];
  const errors = [];
  const subscription = h.client.subscribe(request, (c) => told.push(c.id), {
    onSnapshot: (view) => snapshots.push(view.size),
    onError: (e) => errors.push(e.code),
    ...options,
    ...(options.onReset === null ? { onReset: undefined } : { onReset: (info) => resets.push(info) }),
  });
  h.last().open();
  acceptSubscribes(h.last());
  h.last().receive(change({ id: "before", keys: { PK: "ROOM#1", SK: "OLD" } }));
  h.last().serverClose(1006);
  await h.clock.advance(500);
  h.last().open();
  return { told, resets, snapshots, errors, subscription, socket: h.last() };
}

test("a keyed subscription resumes with a snapshot as its refetch and replaces its view", async () => {
  const h = await harness();
  const r = await resuming(h, { table: "events", key: ROOM, snapshot: true });
  assert.deepEqual(r.socket.actions("subscribe")[0], {
    action: "subscribe",
    id: "s1",
    table: "events",
    key: ROOM,
    after: "cursor-of-before",
    snapshot: true,
  });
  r.socket.receive({ type: "subscribed", id: "s1", cursor: "c-now" });
  r.socket.receive({ type: "reset", id: "s1", reason: "cursor_expired", cursor: "c-now" });
  assert.deepEqual(r.resets, [
    { subscription: "s1", reason: "cursor_expired", cursor: "c-now", refetching: true },
  ]);
  r.socket.receive(change({ id: "live", keys: { PK: "ROOM#1", SK: "B" }, data: { PK: "ROOM#1", SK: "B", n: 2 } }));
  r.socket.receive({ type: "snapshot", id: "s1", items: [{ PK: "ROOM#1", SK: "A", n: 1 }], more: true, cursor: "c-now" });
  assert.deepEqual(r.told, ["before"], "a live change was applied before the snapshot ended");
  r.socket.receive({ type: "snapshot", id: "s1", items: [{ PK: "ROOM#1", SK: "B", n: 1 }], more: false, cursor: "c-now" });
  assert.deepEqual(r.told, ["before", "live"]);
  assert.deepEqual(r.snapshots, [0, 2]); // the first snapshot (empty), then the refetch
  const view = r.subscription.view;
  assert.equal(view.get({ PK: "ROOM#1", SK: "OLD" }), undefined, "the view kept an item the snapshot lacks");
  assert.deepEqual(view.get({ PK: "ROOM#1", SK: "B" }), { PK: "ROOM#1", SK: "B", n: 2 });
  assert.equal(view.stale, false);
  assert.deepEqual(r.errors, []);
  h.client.close();
});

test("a keyed subscription without `snapshot` still refetches through one; refetch: false opts out", async () => {
  for (const [options, expected] of [
    [{}, true],
    [{ refetch: false }, undefined],
  ]) {
    const h = await harness();
    const r = await resuming(h, { table: "events", key: ROOM }, options);
    assert.equal(r.socket.actions("subscribe")[0].snapshot, expected);
    h.client.close();
  }
});

test("a table-wide subscription's reset goes to onReset; the view is stale; the reset's cursor is kept", async () => {
  const h = await harness();
  const r = await resuming(h, { table: "events" });
  const first = r.socket.actions("subscribe")[0];
  assert.equal(first.snapshot, undefined);
  r.socket.receive({ type: "subscribed", id: "s1", cursor: "c-now" });
  r.socket.receive({ type: "reset", id: "s1", reason: "replay_too_long", cursor: "c-reset" });
  assert.deepEqual(r.resets, [
    { subscription: "s1", reason: "replay_too_long", cursor: "c-reset", refetching: false },
  ]);
  assert.equal(r.subscription.view.stale, true);
  r.socket.receive(change({ id: "after-reset", keys: { PK: "X", SK: "1" } }));
  assert.deepEqual(r.told, ["before", "after-reset"]);
  r.subscription.view.replace([{ PK: "X", SK: "1", n: 9 }]);
  assert.equal(r.subscription.view.stale, false);
  r.socket.serverClose(1006);
  await h.clock.advance(1000); // the second attempt in a row: backoff 0.5 x 2000 ms
  assert.equal(h.sockets.length, 3);
  h.last().open();
  assert.equal(h.last().actions("subscribe")[0].after, "cursor-of-after-reset");
  h.client.close();
});

test("without onReset, a reset the client cannot refetch is an error with code `reset`", async () => {
  const h = await harness();
  const r = await resuming(h, { table: "events" }, { onReset: null });
  r.socket.receive({ type: "subscribed", id: "s1", cursor: "c-now" });
  r.socket.receive({ type: "reset", id: "s1", reason: "cursor_invalid", cursor: "c-reset" });
  assert.deepEqual(r.errors, ["reset"]);
  assert.deepEqual(
    h.errors.map((e) => [e.code, e.subscription]),
    [["reset", "s1"]],
  );
  h.client.close();
});

test("a refetch that fails (snapshot_too_large) is told as a reset not refetched", async () => {
  const h = await harness();
  const r = await resuming(h, { table: "events", key: ROOM, snapshot: true });
  r.socket.receive({ type: "subscribed", id: "s1", cursor: "c-now" });
  r.socket.receive({ type: "reset", id: "s1", reason: "cursor_expired", cursor: "c-now" });
  r.socket.receive({ type: "reset", id: "s1", reason: "snapshot_too_large", cursor: "c-now" });
  assert.deepEqual(
    r.resets.map((i) => [i.reason, i.refetching]),
    [
      ["cursor_expired", true],
      ["snapshot_too_large", false],
    ],
  );
  assert.equal(r.subscription.view.stale, true);
  r.socket.receive(change({ id: "live" }));
  assert.deepEqual(r.told, ["before", "live"]);
  h.client.close();
});

test("a socket lost during the refetch: the next one starts afresh with a snapshot, not after a cursor", async () => {
  const h = await harness();
  const r = await resuming(h, { table: "events", key: ROOM });
  r.socket.receive({ type: "subscribed", id: "s1", cursor: "c-now" });
  r.socket.receive({ type: "reset", id: "s1", reason: "cursor_expired", cursor: "c-now" });
  r.socket.receive({ type: "snapshot", id: "s1", items: [], more: true, cursor: "c-now" });
  r.socket.serverClose(1006);
  await h.clock.advance(1000);
  assert.equal(h.sockets.length, 3);
  h.last().open();
  assert.deepEqual(h.last().actions("subscribe")[0], {
    action: "subscribe",
    id: "s1",
    table: "events",
    key: ROOM,
    snapshot: true,
  });
  h.client.close();
});
