// @ts-check
/** The real clock and timers; tests pass their own (`clock` option).
 * @type {import("../index.js").Clock} */
export const systemClock = {
  now: () => Date.now(),
  setTimeout: (callback, ms) => globalThis.setTimeout(callback, ms),
  clearTimeout: (handle) => globalThis.clearTimeout(/** @type {any} */ (handle)),
};
