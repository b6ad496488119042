// Call actions (contract §14): the actions callbridge's default
// CALLBRIDGE_CALL_ACTIONS allows, each with the body Telnyx's Call Control
// API takes for it. Field names are Telnyx's own (snake_case): callbridge
// passes `params` through to `POST /calls/{call}/actions/{action}` (and
// `POST /calls` for `dial`), setting `command_id`, `client_state` and
// `connection_id` itself. The fields a dialer commonly needs are typed;
// the index signature lets any other Telnyx field through unchecked.
// Types only: nothing here exists at run time.

/** Any other field Telnyx takes for the action, passed through as given. */
export interface MoreTelnyxParams {
  [field: string]: unknown;
}

/** A custom SIP header (`X-…`) Telnyx adds to its SIP message. */
export interface CustomSipHeader {
  name: string;
  value: string;
}

/** A standard SIP header Telnyx lets a request set. */
export interface SipHeader {
  name: 'User-to-User';
  value: string;
}

export type RecordChannels = 'single' | 'dual';
export type RecordFormat = 'wav' | 'mp3';
export type RecordTrack = 'both' | 'inbound' | 'outbound';
export type MuteDtmf = 'none' | 'both' | 'self' | 'opposite';
export type TargetLegs = 'self' | 'opposite' | 'both';
/** A number of repeats, or `'infinity'`. */
export type LoopCount = number | string;

export type AnsweringMachineDetection =
  | 'premium'
  | 'premium_ios_call_screening_detection'
  | 'detect'
  | 'detect_beep'
  | 'detect_words'
  | 'greeting_end'
  | 'disabled';

/** Recording from the moment the call is answered (answer, transfer, bridge, dial). */
export interface RecordOnAnswer {
  record?: 'record-from-answer';
  record_channels?: RecordChannels;
  record_format?: RecordFormat;
  record_track?: RecordTrack;
  record_trim?: 'trim-silence';
  /** Seconds; 0 for no limit. */
  record_max_length?: number;
  /** Stop after this many seconds of silence; 0 for never. */
  record_timeout_secs?: number;
  record_custom_file_name?: string;
}

/** Where Telnyx sends this call's webhooks instead of the application's URL. */
export interface WebhookOverride {
  webhook_url?: string;
  webhook_url_method?: 'POST' | 'GET';
}

/** `answer` an incoming call. */
export interface AnswerParams extends RecordOnAnswer, WebhookOverride, MoreTelnyxParams {
  billing_group_id?: string;
  custom_headers?: CustomSipHeader[];
  sip_headers?: SipHeader[];
  preferred_codecs?: string;
  /** Send silence instead of nothing while no media plays. */
  send_silence_when_idle?: boolean;
  /** Stream the call's audio to this WebSocket URL. */
  stream_url?: string;
  stream_track?: 'inbound_track' | 'outbound_track' | 'both_tracks';
  /** Start transcribing at answer. */
  transcription?: boolean;
}

/** `hangup` a call. */
export interface HangupParams extends MoreTelnyxParams {
  custom_headers?: CustomSipHeader[];
}

/** `reject` an incoming call without answering it. */
export interface RejectParams extends MoreTelnyxParams {
  /** Required: what the caller is told. */
  cause: 'CALL_REJECTED' | 'NOT_FOUND' | 'TEMPORARILY_UNAVAILABLE' | 'USER_BUSY';
}

/** `transfer` a call to a new destination (a new outbound leg). */
export interface TransferParams extends RecordOnAnswer, WebhookOverride, MoreTelnyxParams {
  /** Required: a phone number (E.164) or a SIP URI. */
  to: string;
  /** Caller id of the new leg. */
  from?: string;
  from_display_name?: string;
  /** Audio played to the caller while the new leg rings. */
  audio_url?: string;
  media_name?: string;
  early_media?: boolean;
  timeout_secs?: number;
  time_limit_secs?: number;
  answering_machine_detection?: AnsweringMachineDetection;
  custom_headers?: CustomSipHeader[];
  sip_headers?: SipHeader[];
  sip_auth_username?: string;
  sip_auth_password?: string;
  mute_dtmf?: MuteDtmf;
  /** DTMF to send once the new leg answers. */
  send_digits_on_answer?: string;
  /** Client state for the new leg's webhooks (this call's own client_state is callbridge's). */
  target_leg_client_state?: string;
}

/** `bridge` this call with another one. */
export interface BridgeParams extends RecordOnAnswer, MoreTelnyxParams {
  /** Required: the `callControlId` of the call to bridge with. */
  call_control_id: string;
  mute_dtmf?: MuteDtmf;
  park_after_unbridge?: string;
  hold_after_unbridge?: boolean;
  play_ringtone?: boolean;
  /** A two-letter country code of the ringtone to play, e.g. `'us'`. */
  ringtone?: string;
  prevent_double_bridge?: boolean;
  /** Bridge with the call waiting longest in this queue instead. */
  queue?: string;
}

/** `send_dtmf` tones on the call. */
export interface SendDtmfParams extends MoreTelnyxParams {
  /** Required: `0-9`, `A-D`, `*`, `#`; `w` waits 0.5 s, `W` 1 s. */
  digits: string;
  /** Length of each tone, in ms. */
  duration_millis?: number;
}

/** `speak` text (or SSML) on the call. */
export interface SpeakParams extends MoreTelnyxParams {
  /** Required: the text or SSML. */
  payload: string;
  /** Required: `<Provider>.<Model>.<VoiceId>`, e.g. `'AWS.Polly.Joanna-Neural'`, or `'female'`/`'male'`. */
  voice: string;
  payload_type?: 'text' | 'ssml';
  /** e.g. `'en-US'`; needed by some voices. */
  language?: string;
  service_level?: 'basic' | 'premium';
  target_legs?: TargetLegs;
  loop?: LoopCount;
  /** `'current'` or `'all'`: what to stop of the audio already playing. */
  stop?: string;
}

/** `playback_start`: play an audio file on the call. */
export interface PlaybackStartParams extends MoreTelnyxParams {
  /** An mp3 or wav URL (or `media_name`, or `playback_content`). */
  audio_url?: string;
  media_name?: string;
  /** Base64 of the audio itself. */
  playback_content?: string;
  audio_type?: 'mp3' | 'wav';
  loop?: LoopCount;
  overlay?: boolean;
  cache_audio?: boolean;
  target_legs?: string;
  stop?: string;
}

/** `playback_stop`. */
export interface PlaybackStopParams extends MoreTelnyxParams {
  overlay?: boolean;
  /** `'current'` or `'all'` (the default). */
  stop?: string;
}

/** `record_start`: record the call. */
export interface RecordStartParams extends MoreTelnyxParams {
  /** Required. */
  channels: RecordChannels;
  /** Required. */
  format: RecordFormat;
  /** Seconds; 0 for no limit. */
  max_length?: number;
  /** Stop after this many seconds of silence; 0 for never. */
  timeout_secs?: number;
  play_beep?: boolean;
  recording_track?: RecordTrack;
  trim?: 'trim-silence';
  custom_file_name?: string;
  transcription?: boolean;
}

/** `record_stop`, `record_pause`, `record_resume`. */
export interface RecordControlParams extends MoreTelnyxParams {
  /** One recording of several; all of them when absent. */
  recording_id?: string;
}

/** `enqueue` the call in a queue. */
export interface EnqueueParams extends MoreTelnyxParams {
  /** Required: created if it does not exist. */
  queue_name: string;
  max_size?: number;
  max_wait_time_secs?: number;
  keep_after_hangup?: boolean;
}

/** `leave_queue`. */
export type LeaveQueueParams = MoreTelnyxParams;

/** Each call action by name, with its params. */
export interface CallActionParamsMap {
  answer: AnswerParams;
  hangup: HangupParams;
  reject: RejectParams;
  transfer: TransferParams;
  bridge: BridgeParams;
  send_dtmf: SendDtmfParams;
  speak: SpeakParams;
  playback_start: PlaybackStartParams;
  playback_stop: PlaybackStopParams;
  record_start: RecordStartParams;
  record_stop: RecordControlParams;
  record_pause: RecordControlParams;
  record_resume: RecordControlParams;
  enqueue: EnqueueParams;
  leave_queue: LeaveQueueParams;
}

/** The actions `callAction()` takes (`dial` has `dial()`). */
export type CallActionName = keyof CallActionParamsMap;

/** `params` may be left out when none of the action's fields is required. */
export type CallActionArgs<A extends CallActionName> = {} extends CallActionParamsMap[A]
  ? [params?: CallActionParamsMap[A]]
  : [params: CallActionParamsMap[A]];

/** What an action resolves with: Telnyx's `data`, usually `{ result: 'ok' }`. */
export interface CallActionResult {
  result?: string;
  /** `answer` with `record`: the recording's id. */
  recording_id?: string;
  [field: string]: unknown;
}

/** `dial()`'s params: everything but `to` (its first argument). */
export interface DialParams extends RecordOnAnswer, WebhookOverride, MoreTelnyxParams {
  to?: never;
  /** Caller id: one of the user's `phoneNumbers`, else the server's `CALLBRIDGE_TELNYX_FROM`. */
  from?: string;
  from_display_name?: string;
  timeout_secs?: number;
  time_limit_secs?: number;
  answering_machine_detection?: AnsweringMachineDetection;
  audio_url?: string;
  media_name?: string;
  custom_headers?: CustomSipHeader[];
  sip_headers?: SipHeader[];
  sip_auth_username?: string;
  sip_auth_password?: string;
  send_digits_on_answer?: string;
  /** Bridge the new call with this `callControlId` once answered. */
  link_to?: string;
  bridge_on_answer?: boolean;
  bridge_intent?: boolean;
  prevent_double_bridge?: boolean;
}

/** `dial()` resolves with Telnyx's new call. */
export interface DialResult {
  call_control_id: string;
  call_leg_id: string;
  call_session_id: string;
  is_alive: boolean;
  record_type: 'call';
  call_duration?: number;
  start_time?: string;
  end_time?: string;
  recording_id?: string;
  [field: string]: unknown;
}

/** `data.telnyx` of a `telnyx-rejected` error: Telnyx's HTTP status and its `errors`. */
export interface TelnyxErrorDetails {
  status: number;
  errors: TelnyxApiError[];
}

/** One entry of a Telnyx API `errors` array. */
export interface TelnyxApiError {
  code?: string;
  title?: string;
  detail?: string;
  source?: { pointer?: string; parameter?: string };
  meta?: { [key: string]: unknown };
}

/** The server's `error` codes for a call action (contract §14). */
export type CallActionErrorCode =
  | 'actions-disabled'
  | 'action-not-allowed'
  | 'not-on-call'
  | 'bad-request'
  | 'telnyx-rejected'
  | 'telnyx-unavailable'
  | 'dial-not-configured'
  | 'store-unavailable';
