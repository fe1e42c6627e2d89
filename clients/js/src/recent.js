// @ts-check
/** A bounded set of the most recent ids: what de-duplication by change `id` remembers.
 * Past `limit` ids the oldest is forgotten, so memory stays bounded on a connection that
 * lives for days. A Set iterates in insertion order, which makes eviction O(1). */
export class RecentIds {
  /** @type {Set<string>} */
  #ids = new Set();
  #limit;

  /** @param {number} limit how many ids to remember (at least 1) */
  constructor(limit) {
    this.#limit = Math.max(1, Math.floor(limit));
  }

  /** @param {string} id */
  has(id) {
    return this.#ids.has(id);
  }

  /** Remember `id`; false when it was already remembered (a duplicate).
   * @param {string} id */
  add(id) {
    if (this.#ids.has(id)) return false;
    this.#ids.add(id);
    while (this.#ids.size > this.#limit) {
      const oldest = this.#ids.values().next().value;
      if (oldest === undefined) break;
      this.#ids.delete(oldest);
    }
    return true;
  }

  get size() {
    return this.#ids.size;
  }
}
