// Vue 3 wrapper: the `useRetellWidget(options)` composable and the `RetellWidget` component
// (renders nothing: the widget draws itself in its own element). Vue is a peer dependency,
// never bundled. The widget is made in onMounted, so a server render never makes one.
import { defineComponent, onBeforeUnmount, onMounted, ref, shallowRef, toValue, watch } from 'vue';
import { RetellWidget as Widget } from '../index.js';

const CALLBACKS = ['onCallStart', 'onCallEnd', 'onError', 'onTranscript', 'onChatStart', 'onMessage', 'onChatEnd'];
const NOT_OPTIONS = new Set(['onStateChange']);

// The options' value, functions left out: reading it deeply is what the watcher tracks, so a
// changed agentId, theme or label replaces the widget and a new handler does not.
const optionsKey = (o) => JSON.stringify(o ?? {}, (k, v) => (typeof v === 'function' || NOT_OPTIONS.has(k) ? undefined : v));

/** options: a plain object, a reactive() one, a ref or a getter. Call it inside setup(). */
export function useRetellWidget(options = {}) {
  const state = ref('idle');
  const callId = ref(null);
  const muted = ref(false);
  const error = shallowRef(null);
  const widget = shallowRef(null); // never a deep proxy: the widget owns its element
  const current = () => toValue(options) ?? {};
  let off = null;
  let unwatch = null;

  const sync = () => {
    const w = widget.value;
    state.value = w.state;
    callId.value = w.callId ?? null;
    muted.value = !!w.muted;
    error.value = w.state === 'error' ? (w.detail ?? null) : null;
  };
  const destroy = () => {
    off?.();
    off = null;
    widget.value?.destroy();
    widget.value = null;
  };
  let reported = 'idle';
  const report = (value) => {
    if (reported === value) return;
    reported = value;
    try {
      current().onStateChange?.(value);
    } catch (err) {
      console.error('[retell-widget] onStateChange threw', err);
    }
  };
  const create = () => {
    destroy();
    const opts = {};
    for (const [k, v] of Object.entries(current())) if (!NOT_OPTIONS.has(k) && typeof v !== 'function') opts[k] = v;
    for (const name of CALLBACKS) opts[name] = (detail) => current()[name]?.(detail);
    const w = (widget.value = new Widget(opts));
    const onState = (e) => {
      sync();
      report(e.detail.state);
    };
    // Its own element only: two widgets on a page never hear each other.
    const host = w.host;
    const events = { 'retell-widget:state': onState, 'retell-widget:call-start': sync, 'retell-widget:mute': sync };
    for (const [name, fn] of Object.entries(events)) host.addEventListener(name, fn);
    off = () => Object.entries(events).forEach(([name, fn]) => host.removeEventListener(name, fn));
    sync();
    report(w.state); // a replaced widget starts idle: said once, if the old one was not
  };

  onMounted(() => {
    create();
    unwatch = watch(() => optionsKey(current()), create);
  });
  onBeforeUnmount(() => {
    unwatch?.();
    destroy();
  });

  const setMuted = (on) => {
    const w = widget.value;
    if (!w) return;
    on ? w.mute() : w.unmute();
    muted.value = !!w.muted; // the widget fires no event for a mute it did not draw
  };
  return {
    state,
    callId,
    muted,
    error,
    widget,
    start: () => (widget.value ? widget.value.start() : Promise.reject({ code: 'unavailable', message: 'RetellWidget is not mounted yet' })),
    stop: () => widget.value?.stop(),
    mute: () => setMuted(true),
    unmute: () => setMuted(false),
  };
}

// `default: undefined` where Vue would cast an absent Boolean prop to false (ui: false is
// headless).
const maybe = (type) => ({ type, default: undefined });
const PROPS = {
  proxyEndpoint: String,
  agentId: String,
  position: String,
  theme: String,
  lang: String,
  labels: Object,
  colors: Object,
  metadata: Object,
  dynamicVariables: Object,
  chatAgentId: String,
  chatEndpoint: String,
  feedbackEndpoint: String,
  mode: String,
  transcript: maybe([Boolean, String]),
  ui: maybe([Boolean, String]),
  consent: Object,
  feedback: maybe(Boolean),
};
const EMITS = {
  'call-start': 'onCallStart',
  'call-end': 'onCallEnd',
  error: 'onError',
  transcript: 'onTranscript',
  'chat-start': 'onChatStart',
  message: 'onMessage',
  'chat-end': 'onChatEnd',
  'state-change': 'onStateChange',
};

export const RetellWidget = defineComponent({
  name: 'RetellWidget',
  props: PROPS,
  emits: Object.keys(EMITS),
  setup(props, { emit }) {
    const handlers = Object.fromEntries(Object.entries(EMITS).map(([event, name]) => [name, (d) => emit(event, d)]));
    // Control from the page is the composable's; the component only draws and tells.
    useRetellWidget(() => {
      const opts = { ...handlers };
      for (const k of Object.keys(PROPS)) if (props[k] !== undefined) opts[k] = props[k];
      return opts;
    });
    return () => null;
  },
});
