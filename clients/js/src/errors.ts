// The one Error type the client rejects with.

/** The Error `send()` and `setStatus()` reject with. */
export class CallbridgeError extends Error {
  /** The server's error code (`unknown-recipient`, …), or `timeout`, `not-connected`, `connection-lost`. */
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.name = 'CallbridgeError';
    this.code = code;
  }
}
