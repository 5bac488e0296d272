// Types of retell-widget/vue (src/vue/index.js). The widget's own types are index.d.ts's.
import type { DefineSetupFnComponent, MaybeRefOrGetter, Ref, ShallowRef } from 'vue';
import type {
  CallEndDetail,
  CallStartDetail,
  ChatEndDetail,
  ChatStartDetail,
  MessageDetail,
  RetellWidget as Widget,
  RetellWidgetOptions,
  TranscriptItem,
  WidgetError,
  WidgetState,
} from './index.js';

export type {
  CallEndDetail,
  CallStartDetail,
  ErrorCode,
  RetellWidgetOptions,
  TranscriptItem,
  WidgetError,
  WidgetState,
} from './index.js';

/** The widget's options, and a callback for each state it moves to. */
export type UseRetellWidgetOptions = RetellWidgetOptions & {
  onStateChange?: (state: WidgetState) => void;
};

export interface UseRetellWidgetReturn {
  /** `'idle'` until mounted (never made during a server render). */
  state: Readonly<Ref<WidgetState>>;
  callId: Readonly<Ref<string | null>>;
  muted: Readonly<Ref<boolean>>;
  /** Set while `state` is `'error'`. */
  error: Readonly<ShallowRef<WidgetError | null>>;
  widget: Readonly<ShallowRef<Widget | null>>;
  /** Resolves when the call is live; rejects with a WidgetError. */
  start: () => Promise<void>;
  stop: () => void;
  mute: () => void;
  unmute: () => void;
}

/**
 * Call inside setup(). `options`: an object, a reactive() one, a ref or a getter; the widget is
 * made on mount, made anew when an option's value changes, destroyed before unmount.
 */
export declare function useRetellWidget(options: MaybeRefOrGetter<UseRetellWidgetOptions>): UseRetellWidgetReturn;

/** The options as props: every one but the callbacks, which are events. */
export type RetellWidgetProps = {
  [K in keyof RetellWidgetOptions as K extends `on${string}` ? never : K]: RetellWidgetOptions[K];
};

/**
 * Its events: `@call-start` in a template, `onCallStart` in a render function. (Emitted as
 * 'call-start', ...; declared camelCase here, which is how Vue's types name the listener props.)
 */
export type RetellWidgetEmits = {
  callStart: (detail: CallStartDetail) => void;
  callEnd: (detail: CallEndDetail) => void;
  error: (error: WidgetError) => void;
  transcript: (item: TranscriptItem) => void;
  chatStart: (detail: ChatStartDetail) => void;
  message: (detail: MessageDetail) => void;
  chatEnd: (detail: ChatEndDetail) => void;
  stateChange: (state: WidgetState) => void;
};

/** The widget as a component: it draws itself in its own element, so this renders nothing. */
export declare const RetellWidget: DefineSetupFnComponent<RetellWidgetProps, RetellWidgetEmits>;
