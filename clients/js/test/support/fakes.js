// A fake clock and a fake WebSocket for the unit tests: time moves only when a test says so,
// and a test plays the server's side of each socket.
import { connect } from "../../index.js";

/** Let promise chains (the token function, async dials) run to their next wait. */
export async function settle() {
  for (let i = 0; i < 5; i += 1) await new Promise((resolve) => setImmediate(resolve));
}

export class FakeClock {
  #now;
  #seq = 0;
  /** @type {Map<number, {at: number, callback: () => void}>} */
  #timers = new Map();

  constructor(start = 1_800_000_000_000) {
    this.#now = start;
  }

  now() {
    return this.#now;
  }

  setTimeout(callback, ms) {
    this.#seq += 1;
    this.#timers.set(this.#seq, { at: this.#now + Math.max(0, ms), callback });
    return this.#seq;
  }

  clearTimeout(handle) {
    this.#timers.delete(handle);
  }

  /** Move time forward by `ms`, running each timer due on the way at its own moment. */
  async advance(ms) {
    const target = this.#now + ms;
    for (let ran = 0; ran < 100_000; ran += 1) {
      await settle();
      let next = null;
      for (const [id, timer] of this.#timers) {
        if (timer.at <= target && (next === null || timer.at < next[1].at)) next = [id, timer];
      }
      if (next === null) break;
      this.#timers.delete(next[0]);
      this.#now = next[1].at;
      next[1].callback();
    }
    this.#now = target;
    await settle();
  }
}

/** A WebSocket class whose instances the test drives as the server would. */
export function fakeSockets() {
  /** @type {FakeWebSocket[]} */
  const sockets = [];

  class FakeWebSocket {
    readyState = 0;
    /** @type {Record<string, any>[]} every message the client sent, parsed */
    sent = [];
    /** @type {{code: number | undefined, reason: string | undefined} | null} */
    closedByClient = null;
    #listeners = { open: [], message: [], close: [], error: [] };

    constructor(url) {
      this.url = url;
      sockets.push(this);
    }

    addEventListener(type, listener) {
      this.#listeners[type].push(listener);
    }

    send(data) {
      if (this.readyState !== 1) throw new Error("send on a socket that is not open");
      this.sent.push(JSON.parse(data));
    }

    close(code, reason) {
      if (this.readyState >= 2) return;
      this.closedByClient = { code, reason };
      this.readyState = 3;
      queueMicrotask(() => this.#dispatch("close", { code: code ?? 1005, reason: reason ?? "" }));
    }

    // -- the server's side --
    open() {
      this.readyState = 1;
      this.#dispatch("open", {});
    }

    receive(message) {
      this.#dispatch("message", { data: JSON.stringify(message) });
    }

    serverClose(code = 1001, reason = "") {
      this.readyState = 3;
      this.#dispatch("close", { code, reason });
    }

    /** What the client sent with this action. */
    actions(action) {
      return this.sent.filter((message) => message.action === action);
    }

    get token() {
      return new URL(this.url).searchParams.get("token");
    }

    #dispatch(type, event) {
      for (const listener of this.#listeners[type]) listener(event);
    }
  }

  return { WebSocket: FakeWebSocket, sockets };
}

/** A client on fake sockets and a fake clock, with its state events, errors and token calls
 * recorded. */
export async function harness(options = {}) {
  const clock = new FakeClock();
  const { WebSocket, sockets } = fakeSockets();
  const states = [];
  const errors = [];
  const calls = { tokens: 0 };
  const client = connect({
    url: "ws://server.test/dev",
    WebSocket,
    clock,
    random: () => 0.5,
    token: async () => `token-${++calls.tokens}`,
    ...options,
  });
  client.on("state", (state, detail) => states.push({ state, ...detail }));
  client.on("error", (error) => errors.push(error));
  await settle();
  return {
    client,
    clock,
    sockets,
    states,
    errors,
    calls,
    last: () => sockets.at(-1),
    stateNames: () => states.map((s) => s.state),
  };
}

/** Answer each subscribe a socket received with `subscribed`, then `resumed` for one that
 * resumes (unless told otherwise), or an empty snapshot for one that asks for a snapshot. */
export function acceptSubscribes(socket, { cursor = "c-now", resume = true } = {}) {
  for (const message of socket.actions("subscribe")) {
    socket.receive({ type: "subscribed", id: message.id, cursor });
    if (message.after && resume) {
      socket.receive({ type: "resumed", id: message.id, replayed: 0, cursor: message.after });
    } else if (message.snapshot && !message.after) {
      socket.receive({ type: "snapshot", id: message.id, items: [], more: false, cursor });
    }
  }
}

let changeSeq = 0;

/** An `event_update` as the server sends it. */
export function change({
  id = `change-${++changeSeq}`,
  matches = { s1: "added" },
  keys = { PK: "ROOM#1", SK: "A" },
  data,
  cursor = `cursor-of-${id}`,
  replay = false,
  action = "created",
} = {}) {
  const message = {
    type: "event_update",
    action,
    table: "events",
    keys,
    matches,
    id,
    sequence: "1",
    timestamp: "2027-01-15T08:00:00.000Z",
  };
  const removedOnly = Object.values(matches).every((type) => type === "removed");
  if (!removedOnly) message.data = data ?? { ...keys, n: 1 };
  if (replay) message.replay = true;
  message.cursor = cursor;
  return message;
}
