// @ts-check
/** The client: one logical connection made of sockets over time. It reconnects with
 * full-jitter backoff, pings below the idle timeout, moves to a new socket before the
 * server's maximum connection duration (the new one caught up before the old one closes),
 * refreshes its token, and resubscribes every subscription after its last cursor. */
import { backoffDelay } from "./backoff.js";
import { systemClock } from "./clock.js";
import { RealtimeError } from "./errors.js";
import { Link, SubscriptionState } from "./subscription.js";

/** @typedef {import("../index.js").ConnectOptions} ConnectOptions */
/** @typedef {import("../index.js").ConnectionState} ConnectionState */
/** @typedef {import("../index.js").StateDetail} StateDetail */
/** @typedef {import("../index.js").ClientEvents} ClientEvents */
/** @typedef {import("../index.js").Clock} Clock */
/** @typedef {import("../index.js").WebSocketLike} WebSocketLike */
/** @typedef {import("../index.js").WebSocketConstructor} WebSocketConstructor */
/** @typedef {import("../index.js").SubscribeRequest} SubscribeRequest */
/** @typedef {import("../index.js").SubscribeOptions} SubscribeOptions */
/** @typedef {import("../index.js").Subscription} Subscription */
/** @typedef {import("../index.js").Change} Change */
/** @typedef {import("../index.js").View} ViewType */
/** @typedef {Record<string, any>} Message a parsed server message */
/** @typedef {import("../index.js").Client} ClientType */

const OPEN = 1;
const SUBSCRIPTION_RETRIES = 3; // internal_error on subscribe: retried this often, then reported

/** @param {ConnectOptions} options @returns {import("../index.js").Client} */
export function connect(options) {
  return new RealtimeClient(options);
}

/** One socket and what the server holds for it (each subscription's progress on it). */
export class Connection {
  /** @type {Map<string, Link>} subscription id -> its progress on this socket */
  links = new Map();
  /** @type {Set<unknown>} timers to clear when the socket ends */
  timers = new Set();
  /** @type {number | null} */
  openedAt = null;
  ended = false;
  authPending = false;
  lastMessageAt = 0;
  pings = 0;
  /** @type {unknown} the pending token refresh */
  refreshTimer = null;
  /** @type {number | null} the token's expiry, as the server last told it (ms) */
  expiresAt = null;

  /** @param {WebSocketLike} socket @param {"primary" | "renewal"} role */
  constructor(socket, role) {
    this.socket = socket;
    this.role = role;
  }

  get open() {
    return !this.ended && this.openedAt !== null && this.socket.readyState === OPEN;
  }

  /** @param {Record<string, unknown>} message */
  send(message) {
    if (this.open) this.socket.send(JSON.stringify(message));
  }
}

/** @implements {ClientType} */
export class RealtimeClient {
  /** @type {ConnectionState} */
  #state = "connecting";
  /** @type {Map<string, SubscriptionState>} */
  #subscriptions = new Map();
  /** @type {{[E in keyof ClientEvents]?: Set<ClientEvents[E]>}} */
  #listeners = {};
  /** @type {Connection | null} the socket in use */
  #primary = null;
  /** @type {Connection | null} a planned reconnect's socket, catching up */
  #renewal = null;
  #attempt = 0; // reconnects in a row since the last stable connection
  #renewFailures = 0;
  #nextId = 1;
  #closed = false;
  /** @type {unknown} */
  #reconnectTimer = null;
  /** @type {unknown} */
  #renewTimer = null;

  /** @param {ConnectOptions} options */
  constructor(options) {
    if (typeof options?.url !== "string" || !/^wss?:\/\//i.test(options.url)) {
      throw new TypeError("connect: url must be a ws:// or wss:// URL");
    }
    const Socket = options.WebSocket ?? /** @type {any} */ (globalThis).WebSocket;
    if (typeof Socket !== "function") {
      throw new TypeError(
        "connect: no WebSocket implementation: pass one as the WebSocket option" +
          " (Node 20: run node with --experimental-websocket, or pass the ws package's)",
      );
    }
    if (options.token !== undefined && typeof options.token !== "function") {
      throw new TypeError("connect: token must be a function returning a token (or its promise)");
    }
    /** @type {WebSocketConstructor} */
    this.WebSocket = Socket;
    this.url = options.url;
    this.token = options.token;
    /** @type {Clock} */
    this.clock = options.clock ?? systemClock;
    this.random = options.random ?? Math.random;
    const backoff = options.backoff ?? {};
    this.settings = {
      initialMs: positive(backoff.initialMs, 1000),
      maxMs: positive(backoff.maxMs, 30_000),
      maxRetries: options.maxRetries ?? Infinity,
      minUptimeMs: nonNegative(options.minUptimeMs, 5000),
      openTimeoutMs: positive(options.openTimeoutMs, 30_000),
      heartbeatMs: nonNegative(options.heartbeatMs, 300_000),
      heartbeatTimeoutMs: positive(options.heartbeatTimeoutMs, 30_000),
      maxConnectionMs: nonNegative(options.maxConnectionMs, 7_200_000),
      renewBeforeMs: positive(options.renewBeforeMs, 300_000),
      renewTimeoutMs: positive(options.renewTimeoutMs, 60_000),
      refreshBeforeMs: positive(options.refreshBeforeMs, 60_000),
      dedupWindow: positive(options.dedupWindow, 5000),
    };
    this.keyAttributes = options.keyAttributes ?? {};
    // Start after the caller had a chance to add listeners (they see `connecting`).
    Promise.resolve().then(() => {
      if (!this.#closed) this.#setState("connecting", { attempt: 0 });
      this.#dial("primary");
    });
  }

  get state() {
    return this.#state;
  }

  /**
   * @template {keyof ClientEvents} E
   * @param {E} event
   * @param {ClientEvents[E]} listener
   * @returns {() => void}
   */
  on(event, listener) {
    /** @type {Set<ClientEvents[E]>} */
    const set = this.#listeners[event] ?? new Set();
    this.#listeners[event] = /** @type {any} */ (set);
    set.add(listener);
    return () => {
      set.delete(listener);
    };
  }

  /**
   * @param {SubscribeRequest} request
   * @param {(change: Change, view: ViewType) => void} onChange
   * @param {SubscribeOptions} [options]
   * @returns {Subscription}
   */
  subscribe(request, onChange, options = {}) {
    if (typeof request?.table !== "string" || request.table === "") {
      throw new TypeError("subscribe: table must be the source's label, a non-empty string");
    }
    if (typeof onChange !== "function") {
      throw new TypeError("subscribe: onChange must be a function");
    }
    if (request.snapshot && request.key === undefined) {
      throw new TypeError("subscribe: snapshot needs a key (a table-wide subscription has none)");
    }
    const id = request.id ?? this.#freshId();
    if (typeof id !== "string" || id.length < 1 || id.length > 64) {
      throw new TypeError("subscribe: id must be a string of 1 to 64 characters");
    }
    this.#forget(id); // the same id again replaces it (the server does the same)
    const keyAttributes = options.keyAttributes ?? this.keyAttributes[request.table];
    const subscription = new SubscriptionState(
      id,
      request,
      onChange,
      options,
      keyAttributes,
      this.settings.dedupWindow,
      this,
    );
    this.#subscriptions.set(id, subscription);
    for (const connection of this.#connections()) {
      if (connection.open) this.#sendSubscribe(connection, subscription);
    }
    const unsubscribe = () => this.#unsubscribe(id, subscription);
    return Object.assign(unsubscribe, { id, view: subscription.view, unsubscribe });
  }

  close() {
    if (this.#closed) return;
    this.#closed = true;
    this.clock.clearTimeout(this.#reconnectTimer);
    this.clock.clearTimeout(this.#renewTimer);
    for (const connection of this.#connections()) this.#end(connection, "closed_by_client");
    this.#primary = null;
    this.#renewal = null;
    this.#setState("closed", { reason: "closed_by_client" });
  }

  // -- used by SubscriptionState -----------------------------------------------------------

  /** @internal @param {RealtimeError} error @param {SubscriptionState} [subscription] */
  report(error, subscription) {
    const onError = subscription?.options.onError;
    if (onError) {
      try {
        onError(error);
      } catch (cause) {
        this.#emit("error", new RealtimeError("callback_failed", "onError threw", { cause }));
      }
    }
    if (onError && !this.#listeners.error?.size) return; // told, so not a console warning
    this.#emit("error", error);
  }

  /** @internal A link finished catching up: a planned reconnect may be ready to take over.
   * @param {Connection} connection */
  caughtUp(connection) {
    if (connection === this.#renewal) this.#maybePromote(connection);
  }

  /** @internal @param {Connection} connection @param {SubscriptionState} subscription */
  resend(connection, subscription) {
    if (connection.open && this.#subscriptions.get(subscription.id) === subscription) {
      this.#sendSubscribe(connection, subscription);
    }
  }

  // -- sockets -------------------------------------------------------------------------------

  /** Open a socket, with a fresh token.
   * @param {"primary" | "renewal"} role
   * @param {Connection | null} [replacing] for a renewal: the connection it is to replace */
  async #dial(role, replacing = null) {
    if (this.#closed) return;
    let url = this.url;
    if (this.token) {
      const token = await this.#fetchToken();
      if (this.#closed) return;
      if (token === null) {
        if (role === "primary") this.#scheduleReconnect({ reason: "token_failed" });
        else this.#renewalFailed();
        return;
      }
      url = withToken(this.url, token);
    }
    const stale = this.#renewal !== null || this.#primary !== replacing || !replacing?.open;
    if (role === "renewal" && stale) {
      return; // the connection it was to replace is gone (a reconnect took over) or replaced
    }
    let socket;
    try {
      socket = new this.WebSocket(url);
    } catch (cause) {
      const error = new RealtimeError("open_failed", "the WebSocket could not be created", {
        cause,
      });
      this.#emit("error", error);
      if (role === "primary") this.#scheduleReconnect({ reason: "open_failed" });
      else this.#renewalFailed();
      return;
    }
    const connection = new Connection(socket, role);
    if (role === "primary") this.#primary = connection;
    else this.#renewal = connection;
    socket.addEventListener("open", () => this.#opened(connection));
    socket.addEventListener("message", (event) => this.#received(connection, event.data));
    socket.addEventListener("close", (event) => {
      /** @type {StateDetail} */
      const detail = { reason: event.reason || "closed" };
      if (typeof event.code === "number") detail.code = event.code;
      this.#lost(connection, detail);
    });
    socket.addEventListener("error", () => {}); // a close event follows
    this.#after(connection, this.settings.openTimeoutMs, () => {
      if (connection.openedAt === null) this.#lost(connection, { reason: "open_timeout" });
    });
  }

  /** @param {Connection} connection */
  #opened(connection) {
    if (connection.ended || this.#closed) return;
    const now = this.clock.now();
    connection.openedAt = now;
    connection.lastMessageAt = now;
    connection.send({ action: "hello" }); // its answer: the token's expiry and the limits
    for (const subscription of this.#subscriptions.values()) {
      this.#sendSubscribe(connection, subscription);
    }
    this.#heartbeat(connection);
    if (connection.role === "primary") {
      this.#setState("open", { attempt: this.#attempt });
      this.#planRenewal(connection);
    } else {
      this.#maybePromote(connection);
    }
  }

  /** @param {Connection} connection @param {unknown} data */
  #received(connection, data) {
    if (connection.ended || typeof data !== "string") return;
    connection.lastMessageAt = this.clock.now();
    /** @type {Message} */
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      return; // the server sends JSON only
    }
    if (message === null || typeof message !== "object") return;
    switch (message.type) {
      case "pong":
        return;
      case "hello":
      case "authenticated":
        if (message.type === "authenticated") connection.authPending = false;
        this.#planRefresh(connection, message.expiresAt);
        return;
      case "event_update":
        this.#change(connection, message);
        return;
      case "error":
        this.#serverError(connection, message);
        return;
      default: {
        const subscription = typeof message.id === "string" && this.#subscriptions.get(message.id);
        const link = connection.links.get(message.id);
        if (subscription && link && link.subscription === subscription) {
          subscription.handle(connection, link, message);
        }
      }
    }
  }

  /** @param {Connection} connection @param {Message} message */
  #change(connection, message) {
    const matches = message.matches;
    if (matches === null || typeof matches !== "object") return;
    for (const id of Object.keys(matches)) {
      const subscription = this.#subscriptions.get(id);
      const link = connection.links.get(id);
      if (subscription && link && link.subscription === subscription) {
        subscription.change(connection, link, message);
      }
    }
  }

  /** @param {Connection} connection @param {Message} message */
  #serverError(connection, message) {
    const code = typeof message.code === "string" ? message.code : "unknown_error";
    const text = typeof message.message === "string" ? message.message : code;
    const id = typeof message.id === "string" ? message.id : undefined;
    const subscription = id === undefined ? undefined : this.#subscriptions.get(id);
    const link = id === undefined ? undefined : connection.links.get(id);
    if (subscription && link && link.subscription === subscription) {
      if (code === "internal_error" && link.retries < SUBSCRIPTION_RETRIES) {
        link.retries += 1;
        const delay = backoffDelay(link.retries, this.settings, this.random);
        this.#after(connection, delay, () => this.resend(connection, subscription));
        return;
      }
      // refused (forbidden, invalid_subscription, unknown_table, too_many_subscriptions, or
      // taken away by `auth`): the server holds nothing, and a resubscribe would be refused too
      this.#forget(subscription.id);
      this.report(new RealtimeError(code, text, { subscription: subscription.id }), subscription);
      return;
    }
    if (code === "invalid_token" && connection.authPending) {
      connection.authPending = false; // refused: nothing changed; try again later
      this.#after(connection, this.#retryDelay(), () => this.#refresh(connection));
    }
    this.#emit("error", new RealtimeError(code, text, { subscription: id }));
  }

  /** The socket ended (closed by the server or the network, or given up on by us).
   * @param {Connection} connection @param {StateDetail} detail */
  #lost(connection, detail) {
    if (connection.ended) return;
    this.#end(connection, detail.reason ?? "closed");
    if (this.#closed) return;
    if (connection === this.#renewal) {
      this.#renewal = null;
      this.#renewalFailed();
      return;
    }
    if (connection !== this.#primary) return; // an old socket already replaced
    this.#primary = null;
    const renewal = this.#renewal;
    if (renewal?.open) {
      // cut while the planned reconnect was catching up: it carries on as the connection
      this.#promote(renewal);
      return;
    }
    if (renewal) {
      this.#end(renewal, "replaced");
      this.#renewal = null;
    }
    this.clock.clearTimeout(this.#renewTimer);
    const uptime = connection.openedAt === null ? 0 : this.clock.now() - connection.openedAt;
    if (connection.openedAt !== null && uptime >= this.settings.minUptimeMs) this.#attempt = 0;
    this.#scheduleReconnect(detail);
  }

  /** @param {StateDetail} detail */
  #scheduleReconnect(detail) {
    if (this.#closed) return;
    if (this.#attempt >= this.settings.maxRetries) {
      this.#closed = true;
      const error = new RealtimeError(
        "retries_exhausted",
        `gave up after ${this.#attempt} reconnect attempts`,
      );
      this.#setState("closed", { ...detail, attempt: this.#attempt, reason: "retries_exhausted" });
      this.#emit("error", error);
      return;
    }
    const delayMs = backoffDelay(this.#attempt, this.settings, this.random);
    this.#attempt += 1;
    this.#setState("reconnecting", { ...detail, attempt: this.#attempt, delayMs });
    this.#reconnectTimer = this.clock.setTimeout(() => {
      this.#reconnectTimer = null;
      if (this.#closed) return;
      this.#setState("connecting", { attempt: this.#attempt });
      this.#dial("primary");
    }, delayMs);
  }

  /** Stop a socket and its timers; its later events are ignored.
   * @param {Connection} connection @param {string} reason */
  #end(connection, reason) {
    if (connection.ended) return;
    connection.ended = true;
    for (const timer of connection.timers) this.clock.clearTimeout(timer);
    connection.timers.clear();
    for (const link of connection.links.values()) link.detach();
    connection.links.clear();
    try {
      connection.socket.close(1000, reason.slice(0, 100));
    } catch {
      // already closed
    }
  }

  /** @param {Connection} connection @param {number} ms @param {() => void} callback */
  #after(connection, ms, callback) {
    const timer = this.clock.setTimeout(() => {
      connection.timers.delete(timer);
      if (!connection.ended && !this.#closed) callback();
    }, ms);
    connection.timers.add(timer);
    return timer;
  }

  // -- heartbeat -----------------------------------------------------------------------------

  /** Ping every heartbeatMs; a ping with no message at all after it within
   * heartbeatTimeoutMs means the connection is dead (a half-open TCP connection never
   * closes on its own). @param {Connection} connection */
  #heartbeat(connection) {
    if (this.settings.heartbeatMs === 0) return;
    this.#after(connection, this.settings.heartbeatMs, () => {
      connection.pings += 1;
      const sentAt = this.clock.now();
      connection.send({ action: "ping", id: connection.pings });
      this.#after(connection, this.settings.heartbeatTimeoutMs, () => {
        if (connection.lastMessageAt < sentAt) {
          this.#lost(connection, { reason: "heartbeat_timeout" });
        }
      });
      this.#heartbeat(connection);
    });
  }

  // -- token refresh -------------------------------------------------------------------------

  /** @param {Connection} connection @param {unknown} expiresAt */
  #planRefresh(connection, expiresAt) {
    if (!this.token || typeof expiresAt !== "string") return;
    const expiry = Date.parse(expiresAt);
    if (Number.isNaN(expiry)) return;
    if (connection.expiresAt !== null && expiry <= connection.expiresAt) {
      if (expiry < connection.expiresAt) return; // an older answer arriving late
      // `auth` went through but the token function gave no later expiry: refreshing again
      // cannot help; the server closes the connection at expiry and the reconnect asks again
      this.#emit(
        "error",
        new RealtimeError(
          "token_failed",
          "the token function returned a token that expires no later than the one in use",
        ),
      );
      return;
    }
    connection.expiresAt = expiry;
    clearTimer(this.clock, connection, connection.refreshTimer);
    const left = expiry - this.clock.now();
    const lead = Math.min(this.settings.refreshBeforeMs, left / 2);
    connection.refreshTimer = this.#after(connection, Math.max(0, left - lead), () =>
      this.#refresh(connection),
    );
  }

  /** @param {Connection} connection */
  async #refresh(connection) {
    if (!this.token || !connection.open) return;
    const token = await this.#fetchToken();
    if (!connection.open || this.#closed) return;
    if (token === null) {
      this.#after(connection, this.#retryDelay(), () => this.#refresh(connection));
      return;
    }
    connection.authPending = true;
    connection.send({ action: "auth", token });
  }

  /** The token function's answer; null when it failed (reported as `token_failed`), also when
   * it did not answer within openTimeoutMs (a hung token endpoint must not stall the client
   * for ever: the caller retries, which calls the function again). */
  async #fetchToken() {
    /** @type {unknown} */
    let timer = null;
    try {
      const answer = Promise.resolve().then(() => this.token?.());
      answer.catch(() => {}); // a late failure, after the timeout, is no unhandled rejection
      const timeout = new Promise((_, reject) => {
        const ms = this.settings.openTimeoutMs;
        timer = this.clock.setTimeout(() => {
          reject(new Error(`the token function did not answer within ${ms} ms`));
        }, ms);
      });
      const token = await Promise.race([answer, timeout]);
      if (typeof token !== "string" || token === "") {
        throw new TypeError("the token function gave no token (a non-empty string)");
      }
      return token;
    } catch (cause) {
      if (!this.#closed) {
        const error = new RealtimeError("token_failed", "the token function failed", { cause });
        this.#emit("error", error);
      }
      return null;
    } finally {
      this.clock.clearTimeout(timer);
    }
  }

  /** A refresh that failed is tried again after this: between initialMs and 4 x initialMs. */
  #retryDelay() {
    return this.settings.initialMs + backoffDelay(1, this.settings, this.random) * 1.5;
  }

  // -- planned reconnect ---------------------------------------------------------------------

  /** Before the server's maximum duration, at a random moment in the first half of the
   * renewBeforeMs window. @param {Connection} connection */
  #planRenewal(connection) {
    this.clock.clearTimeout(this.#renewTimer);
    this.#renewTimer = null;
    const { maxConnectionMs, renewBeforeMs } = this.settings;
    if (maxConnectionMs === 0 || connection.openedAt === null) return;
    const at = Math.max(0, maxConnectionMs - renewBeforeMs + (this.random() * renewBeforeMs) / 2);
    const wait = Math.max(0, connection.openedAt + at - this.clock.now());
    this.#renewTimer = this.clock.setTimeout(() => this.#renew(), wait);
  }

  #renew() {
    this.#renewTimer = null;
    if (this.#closed || this.#renewal || !this.#primary?.open) return;
    this.#dial("renewal", this.#primary);
    this.#renewTimer = this.clock.setTimeout(() => {
      this.#renewTimer = null;
      const renewal = this.#renewal;
      if (renewal) {
        this.#renewal = null;
        this.#end(renewal, "renew_timeout");
        this.#renewalFailed();
      }
    }, this.settings.renewTimeoutMs);
  }

  #renewalFailed() {
    if (this.#closed || !this.#primary?.open) return;
    this.clock.clearTimeout(this.#renewTimer);
    const delay = backoffDelay(this.#renewFailures, this.settings, this.random);
    this.#renewFailures += 1;
    this.#renewTimer = this.clock.setTimeout(() => this.#renew(), delay);
  }

  /** @param {Connection} connection */
  #maybePromote(connection) {
    if (connection !== this.#renewal || !connection.open) return;
    for (const subscription of this.#subscriptions.values()) {
      const link = connection.links.get(subscription.id);
      if (!link || !link.live) return;
    }
    this.#promote(connection);
  }

  /** The planned reconnect caught up: it becomes the connection, the old one closes.
   * @param {Connection} connection */
  #promote(connection) {
    const old = this.#primary;
    this.#renewal = null;
    this.#primary = connection;
    connection.role = "primary";
    this.#renewFailures = 0;
    if (old) this.#end(old, "planned_reconnect");
    this.#planRenewal(connection);
  }

  // -- subscriptions -------------------------------------------------------------------------

  /** @param {Connection} connection @param {SubscriptionState} subscription */
  #sendSubscribe(connection, subscription) {
    const previous = connection.links.get(subscription.id);
    const link = new Link(subscription, previous?.retries ?? 0);
    previous?.detach();
    connection.links.set(subscription.id, link);
    connection.send(subscription.subscribeMessage(link));
  }

  /** @param {string} id @param {SubscriptionState} subscription */
  #unsubscribe(id, subscription) {
    if (this.#subscriptions.get(id) !== subscription) return;
    this.#forget(id);
    for (const connection of this.#connections()) {
      connection.send({ action: "unsubscribe", id });
    }
    if (this.#renewal) this.#maybePromote(this.#renewal);
  }

  /** Drop a subscription locally (its later messages are ignored). @param {string} id */
  #forget(id) {
    const subscription = this.#subscriptions.get(id);
    if (!subscription) return;
    this.#subscriptions.delete(id);
    for (const connection of this.#connections()) {
      connection.links.get(id)?.detach();
      connection.links.delete(id);
    }
    if (this.#renewal) this.#maybePromote(this.#renewal);
  }

  #freshId() {
    for (;;) {
      const id = `s${this.#nextId++}`;
      if (!this.#subscriptions.has(id)) return id;
    }
  }

  /** @returns {Connection[]} */
  #connections() {
    return [this.#primary, this.#renewal].filter((c) => c !== null);
  }

  // -- events --------------------------------------------------------------------------------

  /** @param {ConnectionState} state @param {StateDetail} detail */
  #setState(state, detail) {
    this.#state = state;
    this.#emit("state", state, detail);
    this.#emit(state, detail);
  }

  /**
   * @template {keyof ClientEvents} E
   * @param {E} event
   * @param {Parameters<ClientEvents[E]>} args
   */
  #emit(event, ...args) {
    const listeners = this.#listeners[event];
    if (!listeners || listeners.size === 0) {
      // an error nobody listens to is still shown, never swallowed
      if (event === "error") console.warn("realtime-channel client:", args[0]);
      return;
    }
    for (const listener of [...listeners]) {
      try {
        /** @type {(...a: unknown[]) => void} */ (listener)(...args);
      } catch (cause) {
        if (event !== "error") {
          const message = `a ${event} listener threw`;
          this.#emit("error", new RealtimeError("callback_failed", message, { cause }));
        }
      }
    }
  }
}

/** @param {Clock} clock @param {Connection} connection @param {unknown} timer */
function clearTimer(clock, connection, timer) {
  if (timer === undefined || timer === null) return;
  clock.clearTimeout(timer);
  connection.timers.delete(timer);
}

/** The URL with `token` set (replacing one it carries).
 * @param {string} url @param {string} token */
export function withToken(url, token) {
  const parsed = new URL(url);
  parsed.searchParams.set("token", token);
  return parsed.toString();
}

/** @param {number | undefined} value @param {number} fallback */
function positive(value, fallback) {
  return typeof value === "number" && value > 0 ? value : fallback;
}

/** @param {number | undefined} value @param {number} fallback */
function nonNegative(value, fallback) {
  return typeof value === "number" && value >= 0 ? value : fallback;
}
