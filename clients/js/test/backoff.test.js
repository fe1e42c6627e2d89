// Reconnect delays: full jitter under a cap that doubles per attempt and stops at maxMs.
import assert from "node:assert/strict";
import { test } from "node:test";

import { backoffDelay } from "../index.js";
import { harness } from "./support/fakes.js";

const bounds = { initialMs: 1000, maxMs: 30_000 };

test("a delay is drawn uniformly below a cap that doubles per attempt", () => {
  for (let attempt = 0; attempt <= 4; attempt += 1) {
    const cap = 1000 * 2 ** attempt;
    assert.equal(backoffDelay(attempt, bounds, () => 0), 0);
    assert.equal(backoffDelay(attempt, bounds, () => 0.5), cap / 2);
    const highest = backoffDelay(attempt, bounds, () => 0.999999);
    assert.ok(highest < cap && highest > cap * 0.999, `attempt ${attempt}: ${highest}`);
  }
});

test("the cap never passes maxMs, however many attempts", () => {
  for (const attempt of [5, 6, 30, 1000, 1e9, Infinity]) {
    const delay = backoffDelay(attempt, bounds, () => 0.999999);
    assert.ok(Number.isFinite(delay) && delay <= 30_000 && delay > 29_000, `${attempt}: ${delay}`);
  }
  assert.equal(backoffDelay(-3, bounds, () => 0.5), 500); // a negative attempt is the first
});

test("a random source out of range cannot push a delay out of bounds", () => {
  assert.equal(backoffDelay(2, bounds, () => 7), 4000);
  assert.equal(backoffDelay(2, bounds, () => -1), 0);
});

test("failed attempts in a row wait the backoff delay, doubling up to maxMs", async () => {
  const h = await harness({ random: () => 0.75, backoff: { initialMs: 1000, maxMs: 5000 } });
  const expected = [750, 1500, 3000, 3750, 3750]; // 0.75 x min(5000, 1000 x 2^n)
  for (const [n, delay] of expected.entries()) {
    const before = h.sockets.length;
    h.last().serverClose(1006); // refused before it opened
    await h.clock.advance(delay - 1);
    assert.equal(h.sockets.length, before, `attempt ${n + 1} came before ${delay} ms`);
    await h.clock.advance(1);
    assert.equal(h.sockets.length, before + 1, `attempt ${n + 1} did not come at ${delay} ms`);
  }
  const reconnecting = h.states.filter((s) => s.state === "reconnecting");
  assert.deepEqual(
    reconnecting.map((s) => [s.attempt, s.delayMs]),
    expected.map((delay, n) => [n + 1, delay]),
  );
});

test("a connection that stayed up minUptimeMs resets the backoff; a shorter one does not", async () => {
  const h = await harness({ random: () => 0.5, minUptimeMs: 5000 });
  h.last().serverClose(1006); // attempt 1: 500 ms
  await h.clock.advance(500);
  h.last().serverClose(1006); // attempt 2: 1000 ms
  await h.clock.advance(1000);
  h.last().open();
  await h.clock.advance(4000); // up for less than minUptimeMs
  h.last().serverClose(1001);
  const short = h.states.at(-1);
  assert.deepEqual([short.state, short.attempt, short.delayMs], ["reconnecting", 3, 2000]);
  await h.clock.advance(2000);
  h.last().open();
  await h.clock.advance(5000); // up for minUptimeMs
  h.last().serverClose(1001);
  const stable = h.states.at(-1);
  assert.deepEqual([stable.state, stable.attempt, stable.delayMs], ["reconnecting", 1, 500]);
  h.client.close();
});
