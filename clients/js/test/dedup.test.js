// De-duplication by change id, per subscription, across reconnects, in a bounded window.
import assert from "node:assert/strict";
import { test } from "node:test";

import { RecentIds } from "../src/recent.js";
import { acceptSubscribes, change, harness } from "./support/fakes.js";

test("the window remembers the last `limit` ids and forgets the oldest", () => {
  const recent = new RecentIds(3);
  assert.deepEqual(["a", "b", "c"].map((id) => recent.add(id)), [true, true, true]);
  assert.equal(recent.add("b"), false);
  assert.equal(recent.add("d"), true); // "a" is forgotten
  assert.equal(recent.size, 3);
  assert.equal(recent.has("a"), false);
  assert.deepEqual(["b", "c", "d"].map((id) => recent.has(id)), [true, true, true]);
});

test("a resume's replayed overlap is not told again; what was missed is", async () => {
  const h = await harness();
  const told = [];
  h.client.subscribe({ table: "events" }, (c) => told.push([c.id, c.replay]));
  h.last().open();
  acceptSubscribes(h.last());
  h.last().receive(change({ id: "a" }));
  h.last().receive(change({ id: "b" }));
  h.last().receive(change({ id: "b" })); // a broadcaster retry: the same change twice
  h.last().serverClose(1006);
  await h.clock.advance(500);
  const again = h.last();
  again.open();
  again.receive({ type: "subscribed", id: "s1", cursor: "c-now" });
  for (const id of ["a", "b", "c", "d"]) again.receive(change({ id, replay: true }));
  again.receive({ type: "resumed", id: "s1", replayed: 4, cursor: "cursor-of-d" });
  again.receive(change({ id: "d" })); // live after the replay: seen
  again.receive(change({ id: "e" }));
  assert.deepEqual(told, [
    ["a", false],
    ["b", false],
    ["c", true],
    ["d", true],
    ["e", false],
  ]);
  h.client.close();
});

test("de-duplication is per subscription: one change matching two is told to each once", async () => {
  const h = await harness();
  const told = [];
  h.client.subscribe({ table: "events" }, (c) => told.push(`${c.subscription}:${c.id}:${c.type}`));
  h.client.subscribe({ table: "events", key: { PK: "ROOM#1" } }, (c) =>
    told.push(`${c.subscription}:${c.id}:${c.type}`),
  );
  h.last().open();
  acceptSubscribes(h.last());
  const both = change({ id: "x", matches: { s1: "added", s2: "modified" } });
  h.last().receive(both);
  h.last().receive(both);
  assert.deepEqual(told, ["s1:x:added", "s2:x:modified"]);
  h.client.close();
});

test("the window is bounded: an id older than dedupWindow changes is told again", async () => {
  const h = await harness({ dedupWindow: 2 });
  const told = [];
  h.client.subscribe({ table: "events" }, (c) => told.push(c.id));
  h.last().open();
  acceptSubscribes(h.last());
  for (const id of ["a", "b", "c", "b", "a"]) h.last().receive(change({ id }));
  assert.deepEqual(told, ["a", "b", "c", "a"]); // "a" had left the window of 2
  h.client.close();
});
