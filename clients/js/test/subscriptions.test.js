// Subscriptions: what is sent, resubscribing after each cursor, holding live changes back
// while catching up, the view, refusals and unsubscribe.
import assert from "node:assert/strict";
import { test } from "node:test";

import { acceptSubscribes, change, harness } from "./support/fakes.js";

test("subscribe sends the request as the protocol spells it, on open or at once when open", async () => {
  const h = await harness();
  h.client.subscribe({ table: "events" }, () => {});
  const filter = [{ status: { in: ["paid", "ready"] }, total: { gt: 20 } }];
  h.client.subscribe({ table: "orders", key: { PK: "R#42" }, filter, snapshot: true, id: "mine" }, () => {});
  assert.equal(h.last().sent.length, 0); // not open yet: sent on open
  h.last().open();
  h.client.subscribe({ table: "events", key: { PK: "ROOM#9", SK: "MSG#1" } }, () => {});
  assert.deepEqual(h.last().actions("subscribe"), [
    { action: "subscribe", id: "s1", table: "events" },
    { action: "subscribe", id: "mine", table: "orders", key: { PK: "R#42" }, filter, snapshot: true },
    { action: "subscribe", id: "s2", table: "events", key: { PK: "ROOM#9", SK: "MSG#1" } },
  ]);
  h.client.close();
});

test("after a drop every subscription resumes after its own last cursor", async () => {
  const h = await harness();
  h.client.subscribe({ table: "events" }, () => {});
  h.client.subscribe({ table: "events", key: { PK: "ROOM#1" } }, () => {}, { refetch: false });
  h.client.subscribe({ table: "events", key: { PK: "ROOM#2" } }, () => {});
  h.last().open();
  acceptSubscribes(h.last(), { cursor: "c-subscribed" });
  h.last().receive(change({ id: "x", matches: { s1: "added", s2: "added" }, cursor: "c-x" }));
  h.last().receive(change({ id: "y", matches: { s1: "modified" }, cursor: "c-y" }));
  h.last().serverClose(1006);
  await h.clock.advance(500);
  h.last().open();
  assert.deepEqual(
    h.last().actions("subscribe").map((m) => [m.id, m.after]),
    [
      ["s1", "c-y"],
      ["s2", "c-x"],
      ["s3", "c-subscribed"], // nothing arrived: the `subscribed` cursor, "now" then
    ],
  );
  h.client.close();
});

test("while resuming, replayed changes apply at once and live ones wait for `resumed`", async () => {
  const h = await harness();
  const told = [];
  const sub = h.client.subscribe({ table: "events" }, (c) => told.push(c.id));
  h.last().open();
  acceptSubscribes(h.last());
  h.last().receive(change({ id: "a", keys: { PK: "P", SK: "1" }, data: { PK: "P", SK: "1", v: 1 } }));
  h.last().serverClose(1006);
  await h.clock.advance(500);
  const socket = h.last();
  socket.open();
  socket.receive({ type: "subscribed", id: "s1", cursor: "c-now" });
  socket.receive(change({ id: "live-new", keys: { PK: "P", SK: "1" }, data: { PK: "P", SK: "1", v: 3 }, matches: { s1: "modified" } }));
  socket.receive(change({ id: "missed", keys: { PK: "P", SK: "1" }, data: { PK: "P", SK: "1", v: 2 }, matches: { s1: "modified" }, replay: true }));
  assert.deepEqual(told, ["a", "missed"]);
  assert.equal(sub.view.get({ PK: "P", SK: "1" }).v, 2);
  socket.receive({ type: "resumed", id: "s1", replayed: 1, cursor: "cursor-of-missed" });
  assert.deepEqual(told, ["a", "missed", "live-new"]);
  assert.equal(sub.view.get({ PK: "P", SK: "1" }).v, 3, "an older replayed change won over a newer live one");
  h.client.close();
});

test("a snapshot fills the view; added, modified and removed keep it current", async () => {
  const h = await harness();
  const changes = [];
  const sub = h.client.subscribe({ table: "events", key: { PK: "ROOM#1" }, snapshot: true }, (c, view) =>
    changes.push([c.type, c.id, view.size]),
  );
  assert.equal(sub.view.ready, false);
  h.last().open();
  const socket = h.last();
  socket.receive({ type: "subscribed", id: "s1", cursor: "c-now" });
  socket.receive(change({ id: "early", keys: { PK: "ROOM#1", SK: "C" }, matches: { s1: "added" } }));
  socket.receive({ type: "snapshot", id: "s1", items: [{ PK: "ROOM#1", SK: "A", n: 1 }], more: true, cursor: "c-now" });
  assert.equal(sub.view.ready, false);
  socket.receive({ type: "snapshot", id: "s1", items: [{ PK: "ROOM#1", SK: "B", n: 1 }], more: false, cursor: "c-now" });
  assert.equal(sub.view.ready, true);
  socket.receive(change({ id: "m", keys: { PK: "ROOM#1", SK: "A" }, data: { PK: "ROOM#1", SK: "A", n: 2 }, matches: { s1: "modified" } }));
  socket.receive(change({ id: "r", keys: { PK: "ROOM#1", SK: "B" }, matches: { s1: "removed" }, action: "deleted" }));
  assert.deepEqual(changes, [
    ["added", "early", 3],
    ["modified", "m", 3],
    ["removed", "r", 2],
  ]);
  assert.deepEqual([...sub.view.items.values()].map((i) => [i.SK, i.n]).sort(), [
    ["A", 2],
    ["C", 1],
  ]);
  h.client.close();
});

test("the view keys items by the table's key attributes, given or learnt", async () => {
  for (const options of [{ keyAttributes: ["PK", "SK"] }, {}]) {
    const h = await harness();
    const sub = h.client.subscribe({ table: "events", key: { PK: "R" }, snapshot: true }, () => {}, options);
    h.last().open();
    h.last().receive({ type: "subscribed", id: "s1", cursor: "c" });
    h.last().receive({ type: "snapshot", id: "s1", items: [{ PK: "R", SK: "1", n: 1 }, { PK: "R", SK: "2", n: 1 }], more: false, cursor: "c" });
    assert.equal(sub.view.get({ PK: "R", SK: "2" }).n, 1);
    h.last().receive(change({ id: "u", keys: { SK: "2", PK: "R" }, data: { PK: "R", SK: "2", n: 5 }, matches: { s1: "modified" } }));
    assert.equal(sub.view.size, 2, `${JSON.stringify(options)}: the change did not replace its item`);
    assert.equal(sub.view.get({ PK: "R", SK: "2" }).n, 5);
    h.client.close();
  }
});

test("a refused subscription is reported with the server's code, and not resubscribed", async () => {
  const h = await harness();
  const refused = [];
  h.client.subscribe({ table: "events" }, () => {}, { onError: (e) => refused.push([e.code, e.subscription, e.message]) });
  const told = [];
  h.client.subscribe({ table: "events", key: { PK: "USER#me" } }, (c) => told.push(c.id));
  h.last().open();
  const message = "this connection may not subscribe to that";
  h.last().receive({ type: "error", code: "forbidden", id: "s1", message });
  h.last().receive({ type: "subscribed", id: "s2", cursor: "c" });
  h.last().receive(change({ id: "mine", matches: { s1: "added", s2: "added" } }));
  assert.deepEqual(refused, [["forbidden", "s1", message]]);
  assert.deepEqual(h.errors.map((e) => [e.code, e.subscription]), [["forbidden", "s1"]]);
  assert.deepEqual(told, ["mine"]);
  h.last().serverClose(1006);
  await h.clock.advance(500);
  h.last().open();
  assert.deepEqual(h.last().actions("subscribe").map((m) => m.id), ["s2"]);
  h.client.close();
});

test("internal_error on subscribe is retried, then reported", async () => {
  const h = await harness();
  h.client.subscribe({ table: "events" }, () => {});
  h.last().open();
  for (let n = 1; n <= 3; n += 1) {
    h.last().receive({ type: "error", code: "internal_error", id: "s1", message: "try again" });
    await h.clock.advance(10_000);
    assert.equal(h.last().actions("subscribe").length, n + 1);
  }
  assert.equal(h.errors.length, 0);
  h.last().receive({ type: "error", code: "internal_error", id: "s1", message: "try again" });
  assert.deepEqual(h.errors.map((e) => e.code), ["internal_error"]);
  h.client.close();
});

test("unsubscribe tells the server, stops the callbacks and is not resubscribed", async () => {
  const h = await harness();
  const told = [];
  const unsubscribe = h.client.subscribe({ table: "events" }, (c) => told.push(c.id));
  h.last().open();
  acceptSubscribes(h.last());
  h.last().receive(change({ id: "before" }));
  unsubscribe();
  assert.deepEqual(h.last().actions("unsubscribe"), [{ action: "unsubscribe", id: "s1" }]);
  h.last().receive(change({ id: "in-flight" })); // one already on its way: ignored
  assert.deepEqual(told, ["before"]);
  h.last().serverClose(1006);
  await h.clock.advance(500);
  h.last().open();
  assert.equal(h.last().actions("subscribe").length, 0);
  h.client.close();
});

test("a socket lost during the first snapshot: the next one asks for the snapshot again", async () => {
  const h = await harness();
  h.client.subscribe({ table: "events", key: { PK: "R" }, snapshot: true }, () => {});
  h.last().open();
  h.last().receive({ type: "subscribed", id: "s1", cursor: "c" });
  h.last().receive({ type: "snapshot", id: "s1", items: [], more: true, cursor: "c" });
  h.last().serverClose(1006);
  await h.clock.advance(500);
  h.last().open();
  const again = h.last().actions("subscribe")[0];
  assert.equal(again.after, undefined, "resumed after a cursor with half a snapshot");
  assert.equal(again.snapshot, true);
  h.client.close();
});

test("a callback that throws is reported and later changes still arrive", async () => {
  const h = await harness();
  const told = [];
  h.client.subscribe({ table: "events" }, (c) => {
    told.push(c.id);
    if (c.id === "bad") throw new Error("bug in the app");
  });
  h.last().open();
  acceptSubscribes(h.last());
  h.last().receive(change({ id: "bad" }));
  h.last().receive(change({ id: "good" }));
  assert.deepEqual(told, ["bad", "good"]);
  assert.deepEqual(h.errors.map((e) => [e.code, e.cause.message]), [["callback_failed", "bug in the app"]]);
  h.client.close();
});

test("subscribing again with the same id replaces the subscription", async () => {
  const h = await harness();
  const first = [];
  const second = [];
  h.client.subscribe({ table: "events", id: "feed" }, (c) => first.push(c.id));
  h.last().open();
  acceptSubscribes(h.last());
  h.client.subscribe({ table: "events", key: { PK: "R" }, id: "feed" }, (c) => second.push(c.id));
  acceptSubscribes(h.last());
  h.last().receive(change({ id: "x", matches: { feed: "added" } }));
  assert.deepEqual([first, second], [[], ["x"]]);
  assert.throws(() => h.client.subscribe({ table: "events", id: "" }, () => {}), TypeError);
  assert.throws(() => h.client.subscribe({ table: "events", snapshot: true }, () => {}), TypeError);
  h.client.close();
});

test("a resume's replay of changes already told still replays them into the view, in order, untold", async () => {
  // The snapshot had item A; A was then deleted live. After a drop the server replays its
  // overlap: A's creation (before the snapshot: no duplicate by id, applied) and A's delete
  // (a duplicate). The view must end without A, and the delete must not be told twice.
  const h = await harness();
  const told = [];
  const key = { PK: "ROOM#1", SK: "A" };
  const sub = h.client.subscribe({ table: "events", key: { PK: "ROOM#1" }, snapshot: true }, (c) =>
    told.push([c.type, c.id, c.replay]),
  );
  h.last().open();
  let socket = h.last();
  socket.receive({ type: "subscribed", id: "s1", cursor: "c-now" });
  socket.receive({ type: "snapshot", id: "s1", items: [{ ...key, n: 1 }], more: false, cursor: "c-now" });
  socket.receive(change({ id: "del", keys: key, matches: { s1: "removed" }, action: "deleted" }));
  assert.equal(sub.view.get(key), undefined);
  socket.serverClose(1006);
  await h.clock.advance(500);
  socket = h.last();
  socket.open();
  socket.receive({ type: "subscribed", id: "s1", cursor: "c-later" });
  socket.receive(change({ id: "create", keys: key, data: { ...key, n: 1 }, matches: { s1: "added" }, replay: true }));
  socket.receive(change({ id: "del", keys: key, matches: { s1: "removed" }, action: "deleted", replay: true }));
  socket.receive({ type: "resumed", id: "s1", replayed: 2, cursor: "cursor-of-del" });
  assert.equal(sub.view.get(key), undefined, "a deleted item came back after the resume");
  assert.deepEqual(told, [
    ["removed", "del", false],
    ["added", "create", true], // before the snapshot: told once, as a replay
  ]);
  h.client.close();
});
