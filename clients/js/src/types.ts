// The shapes of the callbridge dialer protocol (contract §4, §5, §8) as
// TypeScript types. Fields marked optional are present when Telnyx sent them.

import type { TelnyxErrorDetails } from './actions.js';

/** A user's presence status (contract §4 `status`). */
export type Status = 'available' | 'away' | 'busy';

/** Every server message is one JSON text frame of this shape. */
export interface ServerFrame<D = unknown> {
  event: string;
  data: D;
  /** Only on stored events. */
  seq?: number;
  /** Only on stored events: the Telnyx event id, or the message id (§8). */
  id?: string;
  ts?: string;
}

/** `data` of any data object the package does not know the fields of. */
export interface GenericData {
  [key: string]: unknown;
}

/** Fields every call event may carry (contract §5). */
export interface CallEventBase {
  callControlId?: string;
  callLegId?: string;
  callSessionId?: string;
  connectionId?: string;
  direction?: 'inbound' | 'outbound';
  from?: string;
  to?: string;
  /** Telnyx's `payload.state`, as sent. */
  state?: string;
  occurredAt?: string;
  /** base64-decoded; parsed as JSON when it is JSON, else the decoded text. */
  clientState?: unknown;
  /** Who the event was routed to. */
  userIds?: string[];
  /** The Telnyx `payload` object, unchanged. */
  raw?: GenericData;
}

export interface CallInitiatedData extends CallEventBase {
  callerIdName?: string;
  startTime?: string;
}

export interface CallAnsweredData extends CallEventBase {
  startTime?: string;
}

export interface CallBridgedData extends CallEventBase {
  startTime?: string;
}

export interface CallHangupData extends CallEventBase {
  hangupCause?: string;
  hangupSource?: string;
  sipHangupCause?: string;
  startTime?: string;
  endTime?: string;
  /** Whole seconds, end − start rounded down, when both are present. */
  durationSecs?: number;
}

export interface DtmfReceivedData extends CallEventBase {
  digit?: string;
}

export interface RecordingUrls {
  mp3?: string;
  wav?: string;
}

export interface CallRecordingSavedData extends CallEventBase {
  recordingUrls?: RecordingUrls;
  publicRecordingUrls?: RecordingUrls;
  recordingStartedAt?: string;
  recordingEndedAt?: string;
  channels?: string;
}

export interface CallMachineDetectionEndedData extends CallEventBase {
  result?: string;
}

export interface CallMachineGreetingEndedData extends CallEventBase {
  result?: string;
}

export interface CallGatherEndedData extends CallEventBase {
  digits?: string;
  status?: string;
}

/** A stored §8 message between users (or to everyone on a call). */
export interface MessageData<P = unknown> {
  from: string;
  to: string | null;
  call: string | null;
  /** Any JSON value, exactly as the sender wrote it. */
  payload: P;
  ref: string | null;
}

/** The stored events the contract names, by event name. */
export interface StoredEventDataMap {
  'call-initiated': CallInitiatedData;
  'call-answered': CallAnsweredData;
  'call-bridged': CallBridgedData;
  'call-hangup': CallHangupData;
  'dtmf-received': DtmfReceivedData;
  'call-recording-saved': CallRecordingSavedData;
  'call-machine-detection-ended': CallMachineDetectionEndedData;
  'call-machine-greeting-ended': CallMachineGreetingEndedData;
  'call-gather-ended': CallGatherEndedData;
  message: MessageData;
}

export type KnownEventName = keyof StoredEventDataMap;

/** A stored event (it has `seq` and `id`) of a given name. */
export interface StoredEventOf<N extends string, D> {
  event: N;
  data: D;
  seq: number;
  id: string;
  ts: string;
}

/** The stored events the contract names: a discriminated union on `event`. */
export type KnownEvent = {
  [N in KnownEventName]: StoredEventOf<N, StoredEventDataMap[N]>;
}[KnownEventName];

/**
 * Any stored event: the known ones, or another event type Telnyx sent
 * (unknown types are delivered, not dropped). Use `isEvent(ev, name)` to
 * narrow to one of the known ones.
 */
export type CallbridgeEvent = KnownEvent | StoredEventOf<string, GenericData>;

/** One entry of `snapshot.activeCalls` and of `client.activeCalls`. */
export interface ActiveCall {
  callControlId: string;
  callSessionId?: string;
  direction?: string;
  from?: string;
  to?: string;
  state: 'ringing' | 'answered' | 'bridged';
  startedAt?: string;
  answeredAt?: string;
}

export interface Snapshot {
  status: Status;
  activeCalls: ActiveCall[];
}

export interface SigningInfo {
  alg: 'HMAC-SHA256';
  required: boolean;
  windowSecs: number;
}

export interface ConnectedData {
  clientId: string;
  /** The token's email, else the stored email, else the user id. */
  user: string;
  userId: string;
  protocol: number;
  heartbeatSecs: number;
  /** The user's highest stored `seq` (0 when none). */
  lastSeq: number;
  /** Present when the server accepts (or requires) signed messages (§9). */
  signing?: SigningInfo;
}

export interface ResumedData {
  from: number;
  to: number;
  gap: boolean;
}

/** What `send()` resolves with: the server's `sent` data. */
export interface SentData {
  ref: string;
  id: string;
  recipients: string[];
}

/** `data` of a server `error` frame. */
export interface ServerErrorData {
  code: string;
  message: string;
  ref?: string;
  /** `telnyx-rejected` (§14): Telnyx's HTTP status and `errors`. */
  telnyx?: TelnyxErrorDetails;
}

export type ConnectionState = 'idle' | 'connecting' | 'connected' | 'reconnecting' | 'stopped';

export interface StateChange {
  from: ConnectionState;
  to: Exclude<ConnectionState, 'idle'>;
  /** Set on `reconnecting`: the delay until the next try (0: at once). */
  retryInMs?: number;
  /** The close code of the connection that just ended, when it had one. */
  closeCode?: number;
  /** The close reason, or what went wrong (for example getToken's error). */
  reason?: string;
}

export interface GapInfo {
  /** The client's `lastSeq` before the gap. */
  from: number;
  /** Where the client continues from. */
  to: number;
}

export interface StoppedInfo {
  /** The close code that stopped the client (4003, 1008), if any. */
  closeCode?: number;
  reason: string;
}

/** Where a message goes: a user, or everyone on a call (§8). */
export type SendRequest<P = unknown> =
  | { to: string; call?: undefined; payload: P }
  | { call: string; to?: undefined; payload: P };

/** Where a signal goes: a user, or everyone on a call (§14, the rules of §8). */
export type SignalTarget = { to: string; call?: undefined } | { call: string; to?: undefined };

/** A signal from another user (or another connection of this user), §14: not stored, no `seq`. */
export interface SignalData<D = unknown> {
  /** The sender's user id. */
  from: string;
  /** Set when the signal was sent to a user. */
  to?: string;
  /** Set when the signal was sent to everyone on a call (the id the sender used). */
  call?: string;
  /** The signal's name, e.g. `'typing'`. */
  name: string;
  /** Any JSON value, as the sender wrote it (at most 1,024 bytes of JSON text). */
  data: D;
}

type EventListeners = {
  [N in KnownEventName]: (data: StoredEventDataMap[N], ev: StoredEventOf<N, StoredEventDataMap[N]>) => void;
};

/** The listener signature of every event name the client emits. */
export interface ClientEventMap extends EventListeners {
  /** Every stored event, exactly once, in `seq` order. */
  event: (ev: CallbridgeEvent) => void;
  state: (change: StateChange) => void;
  snapshot: (snapshot: Snapshot) => void;
  /** History no longer reached back: resync (for example from the admin API). */
  gap: (gap: GapInfo) => void;
  /** The client stopped by itself for good (4003, repeated 1008, no token). */
  stopped: (info: StoppedInfo) => void;
  connected: (data: ConnectedData) => void;
  resumed: (data: ResumedData) => void;
  'status-changed': (data: { status: Status }) => void;
  /** A server `error` frame that answers no `send()`/`callAction()`/`dial()` (e.g. a refused `signal()` or `setStatus()`). */
  error: (data: ServerErrorData) => void;
  /** A signal (§14): not stored, not an `'event'`, no `seq`. */
  signal: (data: SignalData) => void;
  /** `activeCalls` changed (after a snapshot or a call event). */
  calls: (calls: ActiveCall[]) => void;
  /** Every frame the server sent, as parsed, before the client handles it. */
  frame: (frame: ServerFrame) => void;
}

/**
 * The listener for an event name: typed for the names above; for any other
 * name (a custom `/api/broadcast` event, an event type not listed here)
 * `(data, frame)`.
 */
export type Listener<N extends string> = N extends keyof ClientEventMap
  ? ClientEventMap[N]
  : (data: GenericData, frame: ServerFrame<GenericData>) => void;
