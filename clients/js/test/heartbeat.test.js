// The heartbeat: a ping below API Gateway's 10-minute idle timeout, and a dead connection
// (no answer at all) noticed and replaced.
import assert from "node:assert/strict";
import { test } from "node:test";

import { harness } from "./support/fakes.js";

test("by default the first ping comes before the 10-minute idle timeout, then one each interval", async () => {
  const h = await harness();
  const socket = h.last();
  socket.open();
  await h.clock.advance(300_000 - 1);
  assert.equal(socket.actions("ping").length, 0);
  await h.clock.advance(1);
  assert.deepEqual(socket.actions("ping"), [{ action: "ping", id: 1 }]);
  socket.receive({ type: "pong", id: 1 });
  for (let n = 2; n <= 4; n += 1) {
    await h.clock.advance(300_000);
    socket.receive({ type: "pong", id: n });
  }
  assert.deepEqual(
    socket.actions("ping").map((p) => p.id),
    [1, 2, 3, 4],
  );
  assert.equal(h.sockets.length, 1);
  assert.equal(h.client.state, "open");
  h.client.close();
});

test("a ping with no answer within heartbeatTimeoutMs: the connection is dead, reconnect", async () => {
  const h = await harness({ heartbeatMs: 60_000, heartbeatTimeoutMs: 10_000 });
  const dead = h.last();
  dead.open();
  await h.clock.advance(60_000 + 9_999);
  assert.equal(h.client.state, "open");
  await h.clock.advance(1);
  assert.equal(h.client.state, "reconnecting");
  assert.equal(h.states.at(-1).reason, "heartbeat_timeout");
  assert.equal(dead.closedByClient?.code, 1000);
  await h.clock.advance(500);
  assert.equal(h.sockets.length, 2);
  dead.receive({ type: "pong", id: 1 }); // too late, and from a socket given up on: ignored
  assert.equal(h.client.state, "connecting");
  h.client.close();
});

test("any message after the ping shows the connection is alive", async () => {
  const h = await harness({ heartbeatMs: 60_000, heartbeatTimeoutMs: 10_000 });
  const socket = h.last();
  socket.open();
  await h.clock.advance(60_000 + 5_000);
  socket.receive({ type: "hello", version: 2, expiresAt: null, limits: { subscriptions: 20 } });
  await h.clock.advance(60_000);
  assert.equal(h.sockets.length, 1);
  assert.equal(h.client.state, "open");
  h.client.close();
});

test("heartbeatMs 0 turns the heartbeat off", async () => {
  const h = await harness({ heartbeatMs: 0, maxConnectionMs: 0 });
  h.last().open();
  await h.clock.advance(3_600_000);
  assert.equal(h.last().actions("ping").length, 0);
  h.client.close();
});

test("each socket pings on its own schedule; an old socket's timers stop with it", async () => {
  const h = await harness({ heartbeatMs: 60_000 });
  h.last().open();
  await h.clock.advance(30_000);
  h.last().serverClose(1006);
  await h.clock.advance(500);
  h.last().open();
  await h.clock.advance(60_000);
  assert.equal(h.sockets[0].actions("ping").length, 0);
  assert.equal(h.sockets[1].actions("ping").length, 1);
  h.client.close();
});
