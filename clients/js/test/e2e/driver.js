// The client under test, driven end to end by tests/clients/test_js_client.py against the real
// emulator: commands arrive as JSON lines on stdin, everything observable leaves as JSON
// lines on stdout (states, changes, errors, and a trace of every socket: what it sent, what
// the server answered, who closed it).
//
//   RC_URL=ws://127.0.0.1:PORT/dev RC_SECRET=... node --experimental-websocket driver.js
//
// Node-only (node:crypto mints tokens as handlers/tokens.py does; node:readline reads the
// commands); the library itself imports nothing from Node.
import { createHmac } from "node:crypto";
import { createInterface } from "node:readline";

import { connect } from "../../index.js";

const URL_ = process.env.RC_URL;
const SECRET = process.env.RC_SECRET;
if (!URL_ || !SECRET) throw new Error("RC_URL and RC_SECRET must be set");
if (typeof WebSocket !== "function") throw new Error("run node with --experimental-websocket");

/** @param {Record<string, unknown>} event */
function out(event) {
  process.stdout.write(`${JSON.stringify({ t: Date.now(), ...event })}\n`);
}

/** A token the emulator accepts: handlers/tokens.py's format (sorted keys, no spaces). */
function mint(user, ttlSeconds, claims = {}) {
  const payload = { ...claims, exp: Math.floor(Date.now() / 1000) + ttlSeconds, sub: user };
  const sorted = Object.fromEntries(Object.entries(payload).sort(([a], [b]) => (a < b ? -1 : 1)));
  const part = Buffer.from(JSON.stringify(sorted)).toString("base64url");
  return `${part}.${createHmac("sha256", SECRET).update(part).digest("base64url")}`;
}

let socketCount = 0;

/** The platform's WebSocket, with every socket's life traced. */
class TracedWebSocket extends WebSocket {
  constructor(url) {
    super(url);
    const n = socketCount++;
    this.n = n;
    out({ event: "socket", n, phase: "created" });
    this.addEventListener("open", () => out({ event: "socket", n, phase: "open" }));
    this.addEventListener("close", (e) =>
      out({ event: "socket", n, phase: "closed", code: e.code, reason: e.reason, byClient: !!this.byClient }),
    );
    this.addEventListener("message", (e) => {
      const message = JSON.parse(e.data);
      const { type, id, replay, reason, code, matches } = message;
      out({ event: "server", n, type, id, replay: replay === true, reason, code, matches });
    });
  }

  send(data) {
    const { action, id, after, snapshot, token } = JSON.parse(data);
    out({ event: "sent", n: this.n, action, id, after: after ?? null, snapshot: !!snapshot, token: !!token });
    super.send(data);
  }

  close(code, reason) {
    this.byClient = true;
    out({ event: "socket", n: this.n, phase: "closing", code, reason });
    super.close(code, reason);
  }
}

let client = null;
const subscriptions = new Map();
let tokens = 0;

const commands = {
  connect({ user, ttl = 3600, claims = {}, options = {} }) {
    client = connect({
      url: URL_,
      WebSocket: TracedWebSocket,
      token: async () => {
        tokens += 1;
        out({ event: "token", count: tokens });
        return mint(user, ttl, claims);
      },
      ...options,
    });
    client.on("state", (state, detail) => out({ event: "state", state, ...detail }));
    client.on("error", (error) =>
      out({ event: "error", code: error.code, subscription: error.subscription ?? null, message: error.message }),
    );
  },

  subscribe({ name, request, options = {} }) {
    const subscription = client.subscribe(
      request,
      (change) =>
        out({
          event: "change",
          name,
          subscription: change.subscription,
          id: change.id,
          type: change.type,
          keys: change.keys,
          data: change.data ?? null,
          replay: change.replay,
        }),
      {
        ...options,
        onError: (error) => out({ event: "sub_error", name, code: error.code, message: error.message }),
        onReset: (info) => out({ event: "reset", name, ...info }),
        onSnapshot: (view) => out({ event: "snapshot", name, size: view.size }),
      },
    );
    subscriptions.set(name, subscription);
    out({ event: "subscribing", name, id: subscription.id });
  },

  view({ name }) {
    const view = subscriptions.get(name).view;
    out({ event: "view", name, ready: view.ready, stale: view.stale, items: [...view.items.values()] });
  },

  unsubscribe({ name }) {
    subscriptions.get(name)();
  },

  close() {
    client?.close();
    setTimeout(() => process.exit(0), 200);
  },
};

const lines = createInterface({ input: process.stdin });
lines.on("line", (line) => {
  const command = JSON.parse(line);
  try {
    commands[command.op](command);
    out({ event: "done", op: command.op });
  } catch (error) {
    out({ event: "failed", op: command.op, message: String(error?.stack ?? error) });
  }
});
lines.on("close", () => {
  client?.close();
  setTimeout(() => process.exit(0), 200);
});
out({ event: "started" });
