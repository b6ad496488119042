// @callbridge/client: the dialer side of callbridge (contract §11, §14).

export { CallbridgeClient } from './client.js';
export { CallbridgeError } from './errors.js';
export type {
  BackoffOptions,
  CallbridgeClientOptions,
  SeqStorage,
  TokenIn,
  WebSocketConstructor,
  WebSocketLike,
} from './options.js';
export { CLOSE_CODE_ACTIONS, closeAction } from './close-codes.js';
export type { CloseAction } from './close-codes.js';
export { signEnvelope } from './signing.js';
export type { SignedEnvelope } from './signing.js';
export { webStorage } from './storage.js';
export type * from './types.js';
export type * from './actions.js';

import type { CallbridgeEvent, KnownEventName } from './types.js';

/** Narrow an `'event'` to one of the known event types: `if (isEvent(ev, 'call-hangup')) ev.data.hangupCause`. */
export function isEvent<N extends KnownEventName>(
  ev: CallbridgeEvent,
  name: N,
): ev is Extract<CallbridgeEvent, { event: N }> {
  return ev.event === name;
}
