// Types of retell-widget/react (src/react/index.js). The widget's own types are index.d.ts's;
// nothing here needs @types/react, which only a TSX file using <RetellWidget /> does.
import type { RetellWidget as Widget, RetellWidgetOptions, WidgetError, WidgetState } from './index.js';

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

export interface UseRetellWidgetResult {
  /** `'idle'` until the widget is made (in an effect: never during a server render). */
  state: WidgetState;
  /** The current (or last) call's id. */
  callId: string | null;
  muted: boolean;
  /** Set while `state` is `'error'`. */
  error: WidgetError | null;
  /** Resolves when the call is live; rejects with a WidgetError. Stable across renders. */
  start: () => Promise<void>;
  stop: () => void;
  mute: () => void;
  unmute: () => void;
  /** The widget itself, once mounted. */
  widget: Widget | null;
}

/**
 * One widget for as long as the component is mounted. Callbacks are read when they fire (a new
 * inline function keeps the widget); a changed option value (agentId, theme, ...) replaces it.
 */
export declare function useRetellWidget(options: UseRetellWidgetOptions): UseRetellWidgetResult;

export type RetellWidgetProps = UseRetellWidgetOptions;

/** The widget as a component: it draws itself in its own element, so this renders null. */
export declare function RetellWidget(props: RetellWidgetProps): null;
