// @ts-check
/** One subscription across sockets: what it asked for, its view, its last cursor, the change
 * ids it has seen; and, per socket, its progress there (a Link): live changes are held back
 * while that socket catches up (a resume until `resumed`, a snapshot until its last page),
 * replayed ones are applied as they come, and every change goes through de-duplication. */
import { RealtimeError } from "./errors.js";
import { RecentIds } from "./recent.js";
import { View } from "./view.js";

/** @typedef {import("../index.js").SubscribeRequest} SubscribeRequest */
/** @typedef {import("../index.js").SubscribeOptions} SubscribeOptions */
/** @typedef {import("../index.js").Change} Change */
/** @typedef {import("../index.js").ChangeType} ChangeType */
/** @typedef {import("../index.js").Item} Item */
/** @typedef {import("../index.js").View} ViewType */
/** @typedef {Record<string, any>} Message */
/** @typedef {{report(error: RealtimeError, subscription?: SubscriptionState): void,
 *   caughtUp(connection: any): void}} Owner */

const CHANGE_TYPES = new Set(["added", "modified", "removed"]);

/** A subscription's progress on one socket. */
export class Link {
  /** "live": changes apply as they come; "resume": waiting for `resumed`/`reset`;
   * "snapshot": waiting for the last snapshot page.
   * @type {"live" | "resume" | "snapshot"} */
  mode = "live";
  subscribed = false;
  snapshotRequested = false;
  detached = false;
  /** @type {Message[]} live changes held back while catching up */
  held = [];
  /** @type {Item[]} snapshot items gathered until the last page */
  pages = [];
  /** @type {string | undefined} */
  subscribedCursor = undefined;

  /** @param {SubscriptionState} subscription @param {number} retries */
  constructor(subscription, retries) {
    this.subscription = subscription;
    this.retries = retries;
  }

  /** Caught up on this socket: receiving every change as it happens. */
  get live() {
    return this.subscribed && this.mode === "live";
  }

  detach() {
    this.detached = true;
    this.held = [];
    this.pages = [];
  }
}

export class SubscriptionState {
  /** @type {string | null} the cursor of the last change processed: resume after it */
  cursor = null;
  /** a reset's refetch (snapshot) is under way: until it completes, a new socket subscribes
   * afresh with a snapshot rather than after a cursor */
  refetchPending = false;

  /**
   * @param {string} id
   * @param {SubscribeRequest} request
   * @param {(change: Change, view: ViewType) => void} onChange
   * @param {SubscribeOptions} options
   * @param {readonly string[] | undefined} keyAttributes
   * @param {number} dedupWindow
   * @param {Owner} owner
   */
  constructor(id, request, onChange, options, keyAttributes, dedupWindow, owner) {
    this.id = id;
    this.request = request;
    this.onChange = onChange;
    this.options = options;
    this.owner = owner;
    this.view = new View(keyAttributes);
    this.recent = new RecentIds(dedupWindow);
  }

  get keyed() {
    return this.request.key !== undefined && this.request.key !== null;
  }

  /** The `subscribe` to send on a socket, which sets how the link catches up.
   * @param {Link} link @returns {Record<string, unknown>} */
  subscribeMessage(link) {
    /** @type {Record<string, unknown>} */
    const message = { action: "subscribe", id: this.id, table: this.request.table };
    if (this.keyed) message.key = this.request.key;
    if (this.request.filter !== undefined) message.filter = this.request.filter;
    const refetch = this.options.refetch !== false;
    if (this.cursor !== null) {
      message.after = this.cursor;
      // the server sends a snapshot only if the resume ends in `reset`: the refetch
      if (this.keyed && (this.request.snapshot || refetch)) message.snapshot = true;
      link.mode = "resume";
    } else if (this.keyed && (this.request.snapshot || this.refetchPending)) {
      message.snapshot = true;
      link.mode = "snapshot";
    } else {
      link.mode = "live";
    }
    link.snapshotRequested = message.snapshot === true;
    return message;
  }

  /** `subscribed`, `snapshot`, `resumed`, `reset`, `unsubscribed` for this subscription.
   * @param {unknown} connection @param {Link} link @param {Message} message */
  handle(connection, link, message) {
    if (link.detached) return;
    switch (message.type) {
      case "subscribed":
        link.subscribed = true;
        link.retries = 0;
        if (typeof message.cursor === "string") link.subscribedCursor = message.cursor;
        if (link.mode === "live") {
          if (this.cursor === null && link.subscribedCursor) this.cursor = link.subscribedCursor;
          this.#caughtUp(connection, link);
        }
        return;
      case "snapshot":
        this.#page(connection, link, message);
        return;
      case "resumed":
        if (link.mode === "resume") this.#caughtUp(connection, link);
        return;
      case "reset":
        this.#reset(connection, link, message);
        return;
      default:
        return;
    }
  }

  /** An `event_update` that names this subscription.
   * @param {unknown} _connection @param {Link} link @param {Message} message */
  change(_connection, link, message) {
    if (link.detached) return;
    if (message.replay === true || link.live) this.#apply(message);
    else link.held.push(message); // applied, in order, once this socket has caught up
  }

  /** @param {unknown} connection @param {Link} link @param {Message} message */
  #page(connection, link, message) {
    if (link.mode !== "snapshot") return;
    if (Array.isArray(message.items)) link.pages.push(...message.items);
    if (Array.isArray(message.truncated)) link.pages.push(...message.truncated); // keys only
    if (message.more === true) return;
    const items = link.pages;
    link.pages = [];
    this.view.replace(items);
    this.refetchPending = false;
    const cursor = typeof message.cursor === "string" ? message.cursor : link.subscribedCursor;
    if (cursor) this.cursor = cursor;
    this.#callback("onSnapshot", () => this.options.onSnapshot?.(this.view));
    this.#caughtUp(connection, link, true);
  }

  /** @param {unknown} connection @param {Link} link @param {Message} message */
  #reset(connection, link, message) {
    if (link.mode === "live") return; // a reset answers only a resume or a snapshot
    const reason = typeof message.reason === "string" ? message.reason : "unknown";
    const cursor = typeof message.cursor === "string" ? message.cursor : undefined;
    const refetching =
      link.mode === "resume" && link.snapshotRequested && !reason.startsWith("snapshot_");
    /** @type {import("../index.js").ResetInfo} */
    const info = { subscription: this.id, reason, refetching };
    if (cursor !== undefined) info.cursor = cursor;
    if (refetching) {
      // the snapshot pages follow; until the last one, a new socket would start afresh
      link.mode = "snapshot";
      this.cursor = null;
      this.refetchPending = true;
    } else {
      this.refetchPending = false;
      if (cursor !== undefined) this.cursor = cursor; // "keep the reset's cursor as your last"
      this.view.markStale();
    }
    if (this.options.onReset) {
      const onReset = this.options.onReset;
      this.#callback("onReset", () => onReset(info, this.view));
    } else if (!refetching) {
      this.owner.report(
        new RealtimeError(
          "reset",
          `subscription ${this.id} was reset (${reason}): changes may be missing; refetch and` +
            " call view.replace(items)",
          { subscription: this.id },
        ),
        this,
      );
    }
    if (!refetching) this.#caughtUp(connection, link);
  }

  /** @param {unknown} connection @param {Link} link
   * @param {boolean} [replaced] a snapshot just replaced the view: the held changes (live
   * since the subscription was stored on this socket) go into the view, in order, even those
   * already told: another socket (the old one of a planned reconnect) may have told one
   * after the snapshot was read, and the snapshot lacks it */
  #caughtUp(connection, link, replaced = false) {
    link.mode = "live";
    link.subscribed = true;
    const held = link.held;
    link.held = [];
    for (const message of held) {
      if (link.detached) return;
      this.#apply(message, replaced);
    }
    if (!this.view.stale) this.view.markReady();
    this.owner.caughtUp(connection);
  }

  /** @param {Message} message @param {boolean} [intoView] a duplicate still updates the view
   * (without being told again) */
  #apply(message, intoView = false) {
    const type = message.matches?.[this.id];
    if (!CHANGE_TYPES.has(type)) return;
    const id = typeof message.id === "string" ? message.id : undefined;
    const duplicate = id !== undefined && !this.recent.add(id);
    // A duplicate is never told again. A live one was applied already, unless a snapshot
    // replaced the view since (`intoView`). A replayed one goes into the view again all the
    // same: a replay runs in order to the present, and its start may reach before the
    // snapshot the view holds, so skipping a repeated delete there would bring back an item
    // the replay's earlier, new-looking creation re-added.
    if (duplicate && !intoView && message.replay !== true) return;
    const keys = message.keys && typeof message.keys === "object" ? message.keys : {};
    this.view.apply(type, keys, type === "removed" ? undefined : message.data);
    if (!this.refetchPending && typeof message.cursor === "string") this.cursor = message.cursor;
    if (duplicate) return;
    /** @type {Change} */
    const change = {
      subscription: this.id,
      type,
      action: message.action,
      table: message.table,
      keys,
      id: id ?? "",
      replay: message.replay === true,
      truncated: message.truncated === true,
      matches: message.matches,
    };
    if (message.data !== undefined && type !== "removed") change.data = message.data;
    if (message.old !== undefined) change.old = message.old;
    for (const field of /** @type {const} */ (["sequence", "timestamp", "cursor"])) {
      if (typeof message[field] === "string") change[field] = message[field];
    }
    this.#callback("onChange", () => this.onChange(change, this.view));
  }

  /** Run a user callback; what it throws is reported, never breaks the client.
   * @param {string} name @param {() => void} run */
  #callback(name, run) {
    try {
      run();
    } catch (cause) {
      this.owner.report(
        new RealtimeError("callback_failed", `${name} of subscription ${this.id} threw`, {
          subscription: this.id,
          cause,
        }),
      );
    }
  }
}
