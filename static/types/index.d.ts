// Types of the widget (src/widget.js and its parts). tests/test_package.py checks them against
// the source: every option, callback, event, state and error code the source uses is here,
// and a sample compiles (and misuse fails) under `tsc --strict`.

export type Position = 'bottom-right' | 'bottom-left' | 'top-right' | 'top-left';
export type Theme = 'purple' | 'blue' | 'green' | 'dark' | 'light';
export type Mode = 'voice' | 'chat' | 'hybrid';
/** Built-in languages; any other falls back to English. */
export type Lang = 'en' | 'es' | 'fr' | 'de';

/** The `data-state` of the `<retell-widget>` element, and `widget.state`. */
export type WidgetState =
  | 'idle'
  | 'consent'
  | 'requesting-mic'
  | 'verifying'
  | 'connecting'
  | 'live'
  | 'ended'
  | 'error'
  | 'chat'
  | 'destroyed';

/** Codes of a call's errors (docs/widget.md, "States and error codes"). */
export type CallErrorCode =
  | 'mic_denied'
  | 'no_mic'
  | 'rate_limited'
  | 'busy'
  | 'budget_exhausted'
  | 'verification_failed'
  | 'verification_unavailable'
  | 'unavailable'
  | 'unreachable'
  | 'not_allowed'
  | 'connect_failed'
  | 'call_dropped'
  | 'consent_required'
  | 'cancelled';

/** Codes of a chat's errors (`chat: true` on the error). */
export type ChatErrorCode =
  | 'chat_ended'
  | 'expired'
  | 'limit'
  | 'not_allowed'
  | 'rate_limited'
  | 'send_failed'
  | 'timeout'
  | 'unavailable'
  | 'unreachable'
  | 'verification_failed'
  | 'verification_unavailable'
  | 'empty'
  | 'too_long'
  | 'busy'
  | 'cancelled';

/** Codes a feedback post can fail with. */
export type FeedbackErrorCode =
  | 'invalid'
  | 'not_allowed'
  | 'unknown_call'
  | 'feedback_exists'
  | 'rate_limited'
  | 'unavailable'
  | 'unreachable';

export type ErrorCode = CallErrorCode | ChatErrorCode | FeedbackErrorCode;

export interface WidgetError {
  code: ErrorCode;
  /** English; the widget shows its own translated text. */
  message?: string;
  /** Seconds, for `rate_limited`, `busy` and `budget_exhausted`. */
  retryAfter?: number;
  /** Set on a chat's errors. */
  chat?: true;
}

export interface StateDetail {
  state: WidgetState;
}
export interface MuteDetail {
  muted: boolean;
}
export interface CallStartDetail {
  callId: string;
}
export interface CallEndDetail {
  durationMs: number;
  /** `hangup`, `agent_ended`, `replaced` or an error code. */
  reason: 'hangup' | 'agent_ended' | 'replaced' | ErrorCode | (string & {});
}
export interface TranscriptItem {
  id: string;
  role: 'agent' | 'user';
  content: string;
  final: boolean;
}
export interface ChatStartDetail {
  chatId: string;
  resumed?: true;
}
export interface MessageDetail {
  role: 'agent' | 'user';
  content: string;
}
export interface ChatEndDetail {
  chatId: string;
  reason: 'ended' | 'expired' | 'chat_ended' | 'limit' | 'not_allowed' | (string & {});
}

export interface Consent {
  /** Shown as text, never as markup. */
  text: string;
  /** A link shown with the text (http: or https: only). */
  url?: string;
  /** Agreement is remembered per site and version; a new version asks again. */
  version: string | number;
}

/** Every fixed text can be overridden by key (static/src/i18n.js, chat/strings.js, ...). */
export type Labels = Partial<Record<string, string>>;

export interface RetellWidgetOptions {
  /** The gateway's `POST /api/create-web-call` URL. */
  proxyEndpoint?: string;
  agentId?: string;
  position?: Position;
  theme?: Theme;
  colors?: { primary?: string; background?: string; text?: string };
  lang?: Lang | (string & {});
  labels?: Labels;
  /** Flat string → string, stored with the call (and the chat). */
  metadata?: Record<string, string>;
  dynamicVariables?: Record<string, string>;
  chatAgentId?: string;
  /** The gateway's `POST /api/chat` URL (default: beside proxyEndpoint). */
  chatEndpoint?: string;
  mode?: Mode;
  /** `true`: shown in the panel; `'events'`: only the event and onTranscript. */
  transcript?: boolean | 'events' | '';
  /** `false` (or `'none'`): headless, no launcher and no panel; the page draws its controls. */
  ui?: boolean | 'none';
  /** Ask for agreement before the first call. */
  consent?: Consent;
  /** After a call ends, ask thumbs up or down and an optional comment. */
  feedback?: boolean;
  /** The gateway's `POST /api/feedback` URL (default: beside proxyEndpoint). */
  feedbackEndpoint?: string;
  onCallStart?: (detail: CallStartDetail) => void;
  onCallEnd?: (detail: CallEndDetail) => void;
  onError?: (error: WidgetError) => void;
  onTranscript?: (item: TranscriptItem) => void;
  onChatStart?: (detail: ChatStartDetail) => void;
  onMessage?: (detail: MessageDetail) => void;
  onChatEnd?: (detail: ChatEndDetail) => void;
}

/** Events dispatched on `widget.host` (bubbling to `window`) as `retell-widget:<name>`. */
export interface RetellWidgetEventMap {
  'retell-widget:state': CustomEvent<StateDetail>;
  'retell-widget:call-start': CustomEvent<CallStartDetail>;
  'retell-widget:mute': CustomEvent<MuteDetail>;
  'retell-widget:call-end': CustomEvent<CallEndDetail>;
  'retell-widget:error': CustomEvent<WidgetError>;
  'retell-widget:transcript': CustomEvent<TranscriptItem>;
  'retell-widget:chat-start': CustomEvent<ChatStartDetail>;
  'retell-widget:message': CustomEvent<MessageDetail>;
  'retell-widget:chat-end': CustomEvent<ChatEndDetail>;
}

export type Rating = 'up' | 'down';

/** The `<retell-widget>` element, whose listeners know the widget's events. */
export interface RetellWidgetElement extends HTMLElement {
  /** The widget this element belongs to (how a zero-JS embed's page reaches it). */
  readonly widget: RetellWidget;
  addEventListener<K extends keyof RetellWidgetEventMap>(
    type: K,
    listener: (this: RetellWidgetElement, ev: RetellWidgetEventMap[K]) => unknown,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener<K extends keyof HTMLElementEventMap>(
    type: K,
    listener: (this: RetellWidgetElement, ev: HTMLElementEventMap[K]) => unknown,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject, options?: boolean | AddEventListenerOptions): void;
  removeEventListener<K extends keyof RetellWidgetEventMap>(
    type: K,
    listener: (this: RetellWidgetElement, ev: RetellWidgetEventMap[K]) => unknown,
    options?: boolean | EventListenerOptions,
  ): void;
  removeEventListener<K extends keyof HTMLElementEventMap>(
    type: K,
    listener: (this: RetellWidgetElement, ev: HTMLElementEventMap[K]) => unknown,
    options?: boolean | EventListenerOptions,
  ): void;
  removeEventListener(type: string, listener: EventListenerOrEventListenerObject, options?: boolean | EventListenerOptions): void;
}

export declare class RetellWidget {
  constructor(options: RetellWidgetOptions);
  static readonly version: string;
  readonly state: WidgetState;
  readonly muted: boolean;
  /** The current (or last) call's id. */
  readonly callId?: string;
  /** The `<retell-widget>` element: `data-state`, and the events. */
  readonly host: RetellWidgetElement;
  /** false when headless. */
  readonly ui: boolean;
  /** Resolves when the call is live; rejects with a WidgetError. */
  start(): Promise<void>;
  stop(): void;
  mute(): void;
  unmute(): void;
  /** Back to the launcher from `ended` or `error`. */
  reset(): void;
  /** Ends any call, releases the microphone, removes every node it added. */
  destroy(): void;
  openChat(): Promise<{ chatId: string }>;
  send(text: string): Promise<MessageDetail[]>;
  endChat(): Promise<void>;
  /** Records the visitor's agreement to `consent.version` (a headless page's own consent step). */
  agree(): void;
  /** Feedback on the last call; rejects with a WidgetError. */
  feedback(rating: Rating, comment?: string): Promise<void>;
}

declare global {
  interface HTMLElementTagNameMap {
    'retell-widget': RetellWidgetElement;
  }
  interface WindowEventMap extends RetellWidgetEventMap {}
}

export default RetellWidget;
