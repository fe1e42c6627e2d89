// Types of @realtime-channel/client: the public API, checked by `tsc` against the JavaScript
// that implements it (src/*.js name these types in their JSDoc; test/types.ts checks both).

/** A plain JSON value as the server sends it (DynamoDB values as JSON). */
export type Json = string | number | boolean | null | Json[] | { [key: string]: Json };

/** An item: its attributes by name, values as JSON (numbers a JSON number cannot hold
 * exactly arrive as their exact decimal text). */
export type Item = Record<string, Json>;

/** Key attributes by name, e.g. `{PK: "ROOM#1", SK: "MSG#7"}`. */
export type Keys = Record<string, Json>;

/** One filter condition (see the protocol's Filters): a bare value (equals) or operators. */
export type Condition =
  | string
  | number
  | boolean
  | null
  | {
      eq?: Json;
      ne?: Json;
      lt?: string | number;
      le?: string | number;
      gt?: string | number;
      ge?: string | number;
      between?: [string | number, string | number];
      in?: Json[];
      beginsWith?: string;
      contains?: string | number;
      exists?: boolean;
    };

/** A list of groups (any may match), each mapping attribute paths (`a.b.c`) to conditions
 * (all must hold). */
export type Filter = Array<Record<string, Condition>>;

/** What one `subscribe` asks the server for. */
export interface SubscribeRequest {
  /** The source's label in the program (e.g. `events`), never the physical table name. */
  table: string;
  /** The partition key, or partition and sort key; none: the whole table. */
  key?: Keys;
  filter?: Filter;
  /** Keyed subscriptions only: the key's current items first (the view starts full). */
  snapshot?: boolean;
  /** The subscription's id on the wire, 1-64 characters; default `s1`, `s2`, ... A second
   * subscription with the same id replaces the first. */
  id?: string;
}

/** What happened to an item as seen through one subscription. */
export type ChangeType = "added" | "modified" | "removed";

/** One change, as one subscription sees it (one `event_update`, split per subscription). */
export interface Change {
  /** The subscription's id. */
  subscription: string;
  /** `added` (created, or now matches), `modified`, `removed` (deleted, or no longer
   * matches: then `data` is absent). */
  type: ChangeType;
  /** What DynamoDB did: `created`, `updated` or `deleted`. */
  action: "created" | "updated" | "deleted";
  table: string;
  keys: Keys;
  /** The new image (trimmed to the fields the access rules grant), when `added`/`modified`
   * and not `truncated`. */
  data?: Item;
  /** The image before, when the stack sends old images. */
  old?: Item;
  /** The change's id (the stream record's eventID): what de-duplication compares. */
  id: string;
  sequence?: string;
  timestamp?: string;
  cursor?: string;
  /** True when this change was replayed by a resume rather than sent live. */
  replay: boolean;
  /** True when the item was too large for a message: fetch it by `keys`. */
  truncated: boolean;
  /** Every subscription of this connection the change matched, and how. */
  matches: Record<string, ChangeType>;
}

/** The items one subscription sees now, kept current from its snapshot and its changes. */
export interface View {
  /** Items by a key string built from their key attributes. */
  readonly items: ReadonlyMap<string, Item>;
  readonly size: number;
  /** True once the first snapshot, resume or `subscribed` is in. */
  readonly ready: boolean;
  /** True after a `reset` the client could not refetch through a snapshot, until
   * `replace` is called with items read afresh. */
  readonly stale: boolean;
  /** The item with these key attributes, if the view holds it. */
  get(keys: Keys): Item | undefined;
  /** Replace every item (your own refetch after a `reset`); clears `stale`. */
  replace(items: readonly Item[]): void;
}

/** Told to `onReset` when the server cannot prove the subscription missed nothing. */
export interface ResetInfo {
  subscription: string;
  /** The server's reason: `cursor_invalid`, `cursor_expired`, `replay_too_long`,
   * `replay_incomplete`, `replay_timeout`, `replay_failed`, `resume_off`,
   * `snapshot_too_large`, `snapshot_timeout`, `snapshot_failed`. */
  reason: string;
  cursor?: string;
  /** True: a snapshot follows and will replace the view (keyed subscriptions); false: refetch
   * yourself (table-wide subscriptions, or a snapshot that failed) and call
   * `view.replace(items)`. */
  refetching: boolean;
}

export interface SubscribeOptions {
  /** The subscription could not be made or was taken away: `forbidden`,
   * `invalid_subscription`, `unknown_table`, `too_many_subscriptions`, `internal_error`
   * (after retries), or `reset` when no `onReset` is given. */
  onError?: (error: RealtimeError) => void;
  /** A `reset`; see ResetInfo. Without it, a reset the client cannot refetch for you is
   * reported through `onError` (code `reset`). */
  onReset?: (info: ResetInfo, view: View) => void;
  /** A snapshot has filled the view (the first one, or a refetch after a reset). */
  onSnapshot?: (view: View) => void;
  /** The table's key attribute names (e.g. `["PK", "SK"]`); default: the client's
   * `keyAttributes[table]`, else learnt from the first change. */
  keyAttributes?: readonly string[];
  /** Refetch a keyed subscription through a snapshot after a `reset` (default true). */
  refetch?: boolean;
}

/** What `subscribe` returns: call it to unsubscribe. */
export interface Subscription {
  (): void;
  unsubscribe(): void;
  readonly id: string;
  readonly view: View;
}

export type ConnectionState = "connecting" | "open" | "reconnecting" | "closed";

/** Told with each state: `attempt` (reconnects since the last stable connection), `delayMs`
 * (before the next attempt, with `reconnecting`), and why the connection ended (`code` and
 * `reason` of the close, or the client's own reason: `heartbeat_timeout`, `open_timeout`,
 * `token_failed`, `closed_by_client`, `retries_exhausted`). */
export interface StateDetail {
  attempt?: number;
  delayMs?: number;
  code?: number;
  reason?: string;
}

export interface ClientEvents {
  state: (state: ConnectionState, detail: StateDetail) => void;
  connecting: (detail: StateDetail) => void;
  open: (detail: StateDetail) => void;
  reconnecting: (detail: StateDetail) => void;
  closed: (detail: StateDetail) => void;
  error: (error: RealtimeError) => void;
}

/** Timers and time, injectable for tests. */
export interface Clock {
  now(): number;
  setTimeout(callback: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

/** The part of the WebSocket API the client uses (browsers', Node's, the `ws` package's). */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  addEventListener(type: "open" | "error", listener: (event: unknown) => void): void;
  addEventListener(type: "message", listener: (event: { data: unknown }) => void): void;
  addEventListener(
    type: "close",
    listener: (event: { code?: number; reason?: string }) => void,
  ): void;
}

export type WebSocketConstructor = new (url: string) => WebSocketLike;

export interface ConnectOptions {
  /** `wss://…/{stage}` (the stack's `url` output) or `ws://127.0.0.1:8080/dev` (make dev).
   * It may carry `?token=` already; with `token` the client sets it on each connect. */
  url: string;
  /** Called on every (re)connect and before the token expires (then sent as `auth`). */
  token?: () => Promise<string> | string;
  /** A WebSocket implementation; default the global one (browsers; Node 20 with
   * `--experimental-websocket`; Node 22+). */
  WebSocket?: WebSocketConstructor;
  /** Reconnect delays, full jitter: uniform in [0, min(maxMs, initialMs * 2^attempt)).
   * Default `{initialMs: 1000, maxMs: 30000}`. */
  backoff?: { initialMs?: number; maxMs?: number };
  /** Reconnect attempts in a row before giving up (state `closed`); default Infinity. */
  maxRetries?: number;
  /** A connection open at least this long resets the backoff; default 5,000 ms. */
  minUptimeMs?: number;
  /** A socket not open within this is abandoned and retried; default 30,000 ms. Also the
   * longest wait for the `token` function (then `token_failed`, and retried). */
  openTimeoutMs?: number;
  /** A `ping` this often, below API Gateway's 10-minute idle timeout; default 300,000 ms
   * (5 min); 0 turns the heartbeat off. */
  heartbeatMs?: number;
  /** No message at all within this after a ping: the connection is dead, reconnect;
   * default 30,000 ms. */
  heartbeatTimeoutMs?: number;
  /** The server's maximum connection duration (API Gateway: 2 hours, 7,200,000 ms); the
   * client moves to a new connection before it. 0: no planned reconnect. */
  maxConnectionMs?: number;
  /** How long before `maxConnectionMs` the planned reconnect starts (at a random moment in
   * the first half of this window); default 300,000 ms. */
  renewBeforeMs?: number;
  /** A planned connection not caught up within this is abandoned and retried; default
   * 60,000 ms. */
  renewTimeoutMs?: number;
  /** Refresh the token this long before it expires (at most half its remaining life);
   * default 60,000 ms. */
  refreshBeforeMs?: number;
  /** Change ids each subscription remembers for de-duplication; default 5,000 (the
   * server's longest replay). */
  dedupWindow?: number;
  /** Key attribute names per table label, for the views, e.g. `{events: ["PK", "SK"]}`. */
  keyAttributes?: Record<string, readonly string[]>;
  clock?: Clock;
  /** Uniform in [0, 1); default Math.random. */
  random?: () => number;
}

/** A connection that keeps itself alive and its subscriptions current. */
export interface Client {
  readonly state: ConnectionState;
  subscribe(
    request: SubscribeRequest,
    onChange: (change: Change, view: View) => void,
    options?: SubscribeOptions,
  ): Subscription;
  on<E extends keyof ClientEvents>(event: E, listener: ClientEvents[E]): () => void;
  /** Close for good: state `closed`, no reconnect. */
  close(): void;
}

/** Connect (asynchronously: listeners added right after this call see `connecting`). */
export declare function connect(options: ConnectOptions): Client;

/** Reconnect delay for `attempt` (0 first): full jitter, see ConnectOptions.backoff. */
export declare function backoffDelay(
  attempt: number,
  bounds: { initialMs: number; maxMs: number },
  random: () => number,
): number;

export declare class RealtimeError extends Error {
  constructor(
    code: string,
    message: string,
    details?: { subscription?: string | undefined; cause?: unknown },
  );
  /** The server's error code, or the client's own (`token_failed`, `retries_exhausted`,
   * `reset`, `callback_failed`). */
  readonly code: string;
  /** The subscription the error concerns, if any. */
  readonly subscription: string | undefined;
}
