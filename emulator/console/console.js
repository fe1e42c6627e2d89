// The console page: the JavaScript client (clients/js, served unbundled under /client/)
// showing the emulator at work. Everything protocol-related goes through the client; this
// module only renders what it reports and calls the console's guarded API (/console/...)
// with the per-run console token from the page's URL (?console=TOKEN).
import { connect } from "/client/index.js";

const TOKEN_HEADER = "X-Console-Token";
const FEED_LIMIT = 200;
const ERROR_LIMIT = 50;
const SAMPLE_ITEM = '{"PK": "EVENT#1", "SK": "METADATA", "title": "hello"}';

const consoleToken = new URLSearchParams(location.search).get("console") ?? "";
const $ = (selector) => document.querySelector(selector);

/** An answer of the console's API other than 2xx: its `error` code and `message`. */
class ApiError extends Error {
  constructor(code, message, status) {
    super(message);
    this.code = code;
    this.status = status;
  }
}

/** Call the console's API. `body`: an object, or JSON text sent as it is (exact numbers). */
async function api(method, path, body) {
  const init = { method, headers: { [TOKEN_HEADER]: consoleToken }, cache: "no-store" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = typeof body === "string" ? body : JSON.stringify(body);
  }
  const response = await fetch(path, init);
  let answer = null;
  try {
    answer = await response.json();
  } catch {
    // not JSON: described by the status below
  }
  if (!response.ok) {
    throw new ApiError(
      answer?.error ?? `http_${response.status}`,
      answer?.message ?? response.statusText,
      response.status,
    );
  }
  return answer;
}

// -- small DOM helpers --------------------------------------------------------------------

/** An element with attributes and children (strings become text: nothing is parsed as HTML,
 * so an item's values can never inject markup). */
function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "onclick") element.addEventListener("click", value);
    else if (name === "dataset") Object.assign(element.dataset, value);
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
  return element;
}

const compact = (value) => JSON.stringify(value);

function clock(iso) {
  const moment = iso ? new Date(iso) : new Date();
  return moment.toISOString().slice(11, 23);
}

function showProblem(text) {
  const problem = $("#problem");
  problem.textContent = text;
  problem.hidden = false;
}

function showResult(output, ok, text) {
  output.textContent = text;
  output.dataset.ok = ok ? "true" : "false";
}

/** JSON typed into a field: undefined when empty; a SyntaxError names the field. */
function parseField(name, text) {
  if (text.trim() === "") return undefined;
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new SyntaxError(`${name} is not JSON: ${error.message}`);
  }
}

// -- the page -----------------------------------------------------------------------------

let client = null;
let sources = [];
/** subscription id -> {subscription, request, refused, reset, card} */
const subscriptions = new Map();
/** change id -> its feed entry */
const feedEntries = new Map();

function keyNames(table) {
  return sources.find((source) => source.label === table)?.keys ?? [];
}

function describeRequest(request) {
  const parts = [request.table, request.key ? `key ${compact(request.key)}` : "whole table"];
  if (request.filter) parts.push(`filter ${compact(request.filter)}`);
  if (request.snapshot) parts.push("snapshot");
  return parts.join(" · ");
}

function renderState(state, detail = {}) {
  const badge = $("#state");
  badge.textContent = state;
  badge.dataset.state = state;
  const bits = [];
  if (detail.attempt) bits.push(`attempt ${detail.attempt}`);
  if (detail.delayMs !== undefined) bits.push(`next in ${(detail.delayMs / 1000).toFixed(1)} s`);
  if (detail.reason && state !== "open" && state !== "connecting") {
    bits.push(detail.code ? `${detail.reason} (${detail.code})` : detail.reason);
  }
  $("#state-detail").textContent = bits.join(", ");
  renderStatuses();
}

function statusOf(entry) {
  if (entry.refused) return ["refused", `refused: ${entry.refused.code}`];
  const view = entry.subscription.view;
  if (view.stale) return ["stale", `reset (${entry.reset?.reason ?? "?"}): items may be missing`];
  if (client?.state !== "open") return ["waiting", "waiting for the connection"];
  if (entry.reset?.refetching && !view.ready) return ["subscribing", "refetching"];
  return view.ready ? ["live", "live"] : ["subscribing", "subscribing"];
}

function renderStatuses() {
  for (const entry of subscriptions.values()) {
    const [status, text] = statusOf(entry);
    const label = entry.card.querySelector(".status");
    if (entry.card.dataset.status !== status || label.textContent !== text) {
      entry.card.dataset.status = status;
      label.textContent = text;
    }
    const why = entry.card.querySelector(".why");
    why.textContent = entry.refused ? entry.refused.message : "";
    why.hidden = !entry.refused;
  }
}

function renderItems(entry) {
  const view = entry.subscription.view;
  const table = entry.request.table;
  const names = keyNames(table);
  const rows = [...view.items.values()].map((item) => {
    const key = Object.fromEntries(names.map((name) => [name, item[name]]));
    const shown = names.length ? names.map((name) => `${name}=${item[name]}`).join(" · ") : "";
    return h(
      "tr",
      { class: "item", dataset: { key: compact(key) } },
      h("td", { class: "key" }, shown),
      h("td", {}, h("code", {}, compact(item))),
      h(
        "td",
        {},
        names.length
          ? h("button", { class: "link", type: "button", title: "delete this item", onclick: () => remove(table, key) }, "delete")
          : "",
      ),
    );
  });
  entry.card.querySelector("tbody").replaceChildren(...rows);
  entry.card.querySelector(".count").textContent = `${view.size} item${view.size === 1 ? "" : "s"}`;
  entry.card.querySelector(".items").hidden = view.size === 0;
}

function addToFeed(change) {
  const existing = feedEntries.get(change.id);
  if (existing) return; // one entry per change, whichever subscriptions saw it
  const matches = Object.entries(change.matches ?? {}).map(([id, type]) =>
    h("span", { class: `match ${type}`, dataset: { subscription: id, type } }, `${id} ${type}`),
  );
  const entry = h(
    "li",
    { class: "change", dataset: { id: change.id, action: change.action } },
    h(
      "div",
      { class: "line" },
      h("time", {}, clock(change.timestamp)),
      h("span", { class: `action ${change.action}` }, change.action),
      h("span", { class: "table" }, change.table),
      h("code", { class: "keys" }, compact(change.keys)),
      change.replay ? h("span", { class: "tag" }, "replayed") : null,
      change.truncated ? h("span", { class: "tag" }, "truncated") : null,
    ),
    h("div", { class: "matches" }, matches),
    change.data ? h("code", { class: "data" }, compact(change.data)) : null,
  );
  feedEntries.set(change.id, entry);
  const feed = $("#feed");
  feed.prepend(entry);
  while (feed.children.length > FEED_LIMIT) {
    const last = feed.lastElementChild;
    feedEntries.delete(last.dataset.id);
    last.remove();
  }
  $("#feed-empty").hidden = true;
}

function addError(error) {
  const list = $("#errors");
  list.prepend(
    h(
      "li",
      { dataset: { code: error.code } },
      h("time", {}, clock()),
      h("code", { class: "code" }, error.code),
      error.subscription ? h("span", { class: "muted" }, ` (${error.subscription})`) : null,
      " ",
      error.message,
    ),
  );
  while (list.children.length > ERROR_LIMIT) list.lastElementChild.remove();
  $("#no-errors").hidden = true;
}

/** Subscribe through the client; the card shows the view, its status, a refusal's code. */
function subscribe(request) {
  const entry = { request, refused: null, reset: null, subscription: null, card: null };
  entry.subscription = client.subscribe(
    request,
    (change) => {
      addToFeed(change);
      renderItems(entry);
    },
    {
      onError: (error) => {
        entry.refused = error;
        renderStatuses();
      },
      onSnapshot: () => renderItems(entry),
      onReset: (info) => {
        entry.reset = info;
        renderItems(entry);
        renderStatuses();
      },
    },
  );
  const id = entry.subscription.id;
  subscriptions.get(id)?.card.remove(); // the same id again replaces it
  entry.card = h(
    "article",
    { class: "subscription", dataset: { id, table: request.table, status: "subscribing" } },
    h(
      "header",
      {},
      h("strong", { class: "id" }, id),
      h("code", { class: "request" }, describeRequest(request)),
      h("span", { class: "status" }, "subscribing"),
      h("span", { class: "count muted" }, "0 items"),
      h(
        "button",
        {
          class: "link",
          type: "button",
          onclick: () => {
            entry.subscription.unsubscribe();
            entry.card.remove();
            if (subscriptions.get(id) === entry) subscriptions.delete(id);
          },
        },
        "unsubscribe",
      ),
    ),
    h("p", { class: "why", hidden: true }),
    h(
      "table",
      { class: "items", hidden: true },
      h("thead", {}, h("tr", {}, h("th", {}, "key"), h("th", {}, "item"), h("th", {}))),
      h("tbody"),
    ),
  );
  subscriptions.set(id, entry);
  $("#subscriptions").append(entry.card);
  renderStatuses();
  return entry;
}

async function remove(table, key) {
  const output = $("#write-result");
  try {
    const answer = await api("POST", "/console/delete", { table, key });
    showResult(output, true, `delete: ${answer.table} ${compact(key)}`);
  } catch (error) {
    showResult(output, false, `${error.code ?? "error"}: ${error.message}`);
  }
}

function bindForms() {
  const subscribeForm = $("#subscribe-form");
  subscribeForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const output = $("#subscribe-result");
    const fields = subscribeForm.elements;
    try {
      const request = { table: fields.namedItem("table").value.trim() };
      const key = parseField("key", fields.namedItem("key").value);
      const filter = parseField("filter", fields.namedItem("filter").value);
      if (key !== undefined) request.key = key;
      if (filter !== undefined) request.filter = filter;
      if (fields.namedItem("snapshot").checked) request.snapshot = true;
      if (fields.namedItem("id").value.trim()) request.id = fields.namedItem("id").value.trim();
      const entry = subscribe(request);
      showResult(output, true, `sent: ${entry.subscription.id} (its status is under Subscriptions)`);
    } catch (error) {
      showResult(output, false, error.message);
    }
  });

  const writeForm = $("#write-form");
  writeForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const output = $("#write-result");
    const fields = writeForm.elements;
    const text = fields.namedItem("item").value;
    let item;
    try {
      item = parseField("item", text);
    } catch (error) {
      showResult(output, false, error.message);
      return;
    }
    if (item === null || typeof item !== "object" || Array.isArray(item)) {
      showResult(output, false, "the item must be a JSON object");
      return;
    }
    // the item's own text, so its numbers reach DynamoDB exactly as typed
    const body = `{"table": ${JSON.stringify(fields.namedItem("table").value.trim())}, "item": ${text}}`;
    try {
      const answer = await api("POST", "/console/put", body);
      showResult(output, true, `put: ${answer.table}`);
    } catch (error) {
      showResult(output, false, `${error.code ?? "error"}: ${error.message}`);
    }
  });
}

async function main() {
  if (!consoleToken) {
    renderState("closed", { reason: "no console token" });
    showProblem(
      "This page needs the console token: open the Console URL that make dev printed" +
        " (http://127.0.0.1:PORT/?console=TOKEN); it changes every run.",
    );
    return;
  }
  let config;
  try {
    config = await api("GET", "/console/config");
  } catch (error) {
    renderState("closed", { reason: error.code });
    showProblem(`The emulator refused the console (${error.code}): ${error.message}`);
    return;
  }
  sources = config.sources;
  $("#stack").textContent = `stack '${config.stack}' · user ${config.user} · ${config.url}`;
  $("#sources").replaceChildren(...sources.map((source) => h("option", { value: source.label })));
  const first = sources[0]?.label ?? "";
  $("#subscribe-form").elements.namedItem("table").value = first;
  $("#write-form").elements.namedItem("table").value = first;
  $("#write-form").elements.namedItem("item").value = SAMPLE_ITEM;
  bindForms();

  client = connect({
    url: config.url,
    // called on every (re)connect and before expiry: each gets a fresh token
    token: async () => (await api("POST", "/console/token", {})).token,
    keyAttributes: Object.fromEntries(sources.map((source) => [source.label, source.keys])),
  });
  client.on("state", renderState);
  client.on("error", addError);
  if (first) subscribe({ table: first }); // table-wide: every write shows at once
  else showProblem("This stack declares no source: there is nothing to subscribe to.");
  // a subscription's view turns ready on `subscribed`, which the client reports through
  // the view only: look a few times a second
  setInterval(renderStatuses, 250);
}

main().catch((error) => {
  showProblem(`The console failed: ${error.message}`);
});
