// The one Error type the client rejects with.

import type { TelnyxErrorDetails } from './actions.js';

/** The Error `send()`, `setStatus()`, `callAction()`, `dial()` and `signal()` reject with. */
export class CallbridgeError extends Error {
  /** The server's error code (`unknown-recipient`, `telnyx-rejected`, …), or `timeout`, `not-connected`, `connection-lost`. */
  readonly code: string;
  /** `telnyx-rejected` (a call action Telnyx answered with a 4xx): its HTTP status and `errors`. */
  readonly telnyx?: TelnyxErrorDetails;
  constructor(code: string, message: string, telnyx?: TelnyxErrorDetails) {
    super(message);
    this.name = 'CallbridgeError';
    this.code = code;
    if (telnyx) this.telnyx = telnyx;
  }
}
