// @ts-check
/** @typedef {import("../index.js").Item} Item */
/** @typedef {import("../index.js").ChangeType} ChangeType */
/** @typedef {import("../index.js").Keys} Keys */
/** @typedef {import("../index.js").View} ViewType */

/** The items one subscription sees now, by key: filled by its snapshot, kept current by
 * the `added` / `modified` / `removed` of each change, for those who want state rather than
 * events. Keys are the item's key attributes: given (`keyAttributes`), or learnt from the
 * first change's `keys` (until then, snapshot items are held under a provisional key and
 * re-keyed when the names are known).
 * @implements {ViewType} */
export class View {
  /** @type {Map<string, Item>} */
  #items = new Map();
  /** @type {string[] | null} sorted key attribute names, once known */
  #names;
  #ready = false;
  #stale = false;

  /** @param {readonly string[] | undefined} keyAttributes */
  constructor(keyAttributes) {
    this.#names = keyAttributes && keyAttributes.length > 0 ? [...keyAttributes].sort() : null;
  }

  /** @returns {ReadonlyMap<string, Item>} */
  get items() {
    return this.#items;
  }

  get size() {
    return this.#items.size;
  }

  /** True once the subscription's first snapshot, resume or `subscribed` is in. */
  get ready() {
    return this.#ready;
  }

  /** True after a `reset` the client could not refetch for you, until `replace`. */
  get stale() {
    return this.#stale;
  }

  /** @param {Keys} keys @returns {Item | undefined} */
  get(keys) {
    if (this.#names !== null) return this.#items.get(this.#keyOf(keys));
    for (const item of this.#items.values()) {
      if (Object.entries(keys).every(([name, value]) => item[name] === value)) return item;
    }
    return undefined;
  }

  /** Replace every item (a refetch after a `reset`); clears `stale`.
   * @param {readonly Item[]} items */
  replace(items) {
    this.#items = new Map();
    for (const item of items) this.#items.set(this.#keyOf(item), item);
    this.#stale = false;
    this.#ready = true;
  }

  /** @internal @param {ChangeType} type @param {Keys} keys @param {Item | undefined} data */
  apply(type, keys, data) {
    this.#learn(keys);
    const key = this.#keyOf(keys);
    if (type === "removed") this.#items.delete(key);
    else this.#items.set(key, data ?? { ...keys }); // truncated: the keys only; fetch by keys
  }

  /** @internal */
  markReady() {
    this.#ready = true;
  }

  /** @internal */
  markStale() {
    this.#stale = true;
    this.#ready = true;
  }

  /** @param {Keys} keys */
  #learn(keys) {
    if (this.#names !== null) return;
    this.#names = Object.keys(keys).sort();
    const before = this.#items;
    this.#items = new Map();
    for (const item of before.values()) this.#items.set(this.#keyOf(item), item);
  }

  /** @param {Keys} item */
  #keyOf(item) {
    if (this.#names === null) return `?${JSON.stringify(item)}`; // provisional, see #learn
    return JSON.stringify(this.#names.map((name) => item[name] ?? null));
  }
}
