// Checked by `tsc` (never run): the declared API is usable as documented, refuses misuse,
// and the JavaScript implementation matches what index.d.ts declares.
import {
  backoffDelay,
  type Change,
  type Client,
  connect,
  type ConnectionState,
  RealtimeError,
  type ResetInfo,
  type Subscription,
  type View,
} from "../index.js";
import * as implementation from "../src/client.js";
import * as implementationBackoff from "../src/backoff.js";
import * as implementationErrors from "../src/errors.js";

// the implementation is what the declarations say
const declaredConnect: typeof connect = implementation.connect;
const declaredBackoff: typeof backoffDelay = implementationBackoff.backoffDelay;
const declaredError: typeof RealtimeError = implementationErrors.RealtimeError;
const implementationClient: Client = new implementation.RealtimeClient({ url: "ws://x" });
void [declaredConnect, declaredBackoff, declaredError, implementationClient];

const client: Client = connect({
  url: "ws://127.0.0.1:8080/dev",
  token: async () => "token",
  heartbeatMs: 240_000,
  backoff: { initialMs: 500, maxMs: 10_000 },
  keyAttributes: { events: ["PK", "SK"] },
});
const state: ConnectionState = client.state;
const off: () => void = client.on("state", (next: ConnectionState, detail) => {
  const attempt: number | undefined = detail.attempt;
  void [next, attempt];
});
client.on("error", (error) => {
  const code: string = error.code;
  const subscription: string | undefined = error.subscription;
  void [code, subscription];
});
client.on("reconnecting", ({ delayMs }) => void delayMs);

const subscription: Subscription = client.subscribe(
  { table: "events", key: { PK: "ROOM#1" }, filter: [{ n: { gt: 5 } }], snapshot: true },
  (change: Change, view: View) => {
    const type: "added" | "modified" | "removed" = change.type;
    const title = change.data?.["title"];
    void [type, title, view.get(change.keys), view.items.size];
  },
  {
    onReset: (info: ResetInfo, view) => {
      if (!info.refetching) view.replace([{ PK: "ROOM#1", SK: "A" }]);
    },
    onError: (error: RealtimeError) => void error.code,
  },
);
const id: string = subscription.id;
subscription();
subscription.unsubscribe();
off();
client.close();
void [state, id];

// misuse the declarations refuse
// @ts-expect-error url is required
connect({ token: async () => "t" });
// @ts-expect-error the token function returns a token, not a number
connect({ url: "ws://x", token: async () => 5 });
// @ts-expect-error no such event
client.on("message", () => {});
// @ts-expect-error table is required
client.subscribe({ key: { PK: "x" } }, () => {});
// @ts-expect-error change types are added, modified or removed
const wrong: Change["type"] = "created";
// @ts-expect-error the view is read-only
subscription.view.items = new Map();
void wrong;
