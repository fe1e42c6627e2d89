// @ts-check
/** An error the client reports through its `error` event and a subscription's `onError`.
 * `code` is the server's stable code (`forbidden`, `invalid_subscription`, `invalid_token`,
 * ...) or one of the client's own (`token_failed`, `retries_exhausted`, `reset`,
 * `callback_failed`); `subscription` names the subscription it concerns, when it does. */
export class RealtimeError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   * @param {{subscription?: string | undefined, cause?: unknown}} [details]
   */
  constructor(code, message, details = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = "RealtimeError";
    /** @type {string} */
    this.code = code;
    /** @type {string | undefined} */
    this.subscription = details.subscription;
  }
}
