// @ts-check
/** Reconnect delays: exponential backoff with full jitter (AWS Architecture Blog,
 * "Exponential Backoff And Jitter"): a delay drawn uniformly from [0, cap), where the cap
 * doubles per attempt from `initialMs` and never passes `maxMs`. Full jitter spreads a crowd
 * of clients that lost their connections at the same moment over the whole window, which is
 * what API Gateway's 500 new connections per second need. */

/**
 * @param {number} attempt 0 for the first retry
 * @param {{initialMs: number, maxMs: number}} bounds
 * @param {() => number} random uniform in [0, 1)
 * @returns {number} milliseconds, 0 <= delay < min(maxMs, initialMs * 2 ** attempt)
 */
export function backoffDelay(attempt, bounds, random) {
  const exponent = Math.min(Math.max(0, Math.floor(attempt)), 52); // 2 ** 53 is plenty
  const cap = Math.min(bounds.maxMs, bounds.initialMs * 2 ** exponent);
  const draw = Math.min(Math.max(random(), 0), 1);
  return Math.max(0, Math.min(cap * draw, cap));
}
