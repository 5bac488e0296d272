// React wrapper: `useRetellWidget(options)` and `<RetellWidget {...options} />` (renders null:
// the widget draws itself in its own element). React is a peer dependency, never bundled.
// Nothing runs at import and nothing before an effect, so a server render only returns null.
// 'use client': a React Server Component (Next.js app/) may render <RetellWidget> directly.
'use client';
import { useCallback, useEffect, useRef, useState } from 'react';
import { RetellWidget as Widget } from '../index.js';

const CALLBACKS = ['onCallStart', 'onCallEnd', 'onError', 'onTranscript', 'onChatStart', 'onMessage', 'onChatEnd'];
// Props that are React's, not options (a React 19 ref is a plain prop).
const NOT_OPTIONS = new Set(['children', 'ref', 'key', 'onStateChange']);

// The options' value, functions left out: a new inline callback or a new but equal object
// literal (labels, metadata) keeps the widget; a changed agentId, theme, ... replaces it.
const optionsKey = (options) => JSON.stringify(options, (k, v) => (typeof v === 'function' || NOT_OPTIONS.has(k) ? undefined : v));

const notMounted = () => Promise.reject({ code: 'unavailable', message: 'RetellWidget is not mounted yet' });

export function useRetellWidget(options = {}) {
  // The latest options, for the callbacks: read when they fire, so no re-render recreates.
  const latest = useRef(options);
  latest.current = options;
  const ref = useRef(null);
  const reported = useRef('idle');
  const [widget, setWidget] = useState(null);
  const [view, setView] = useState({ state: 'idle', callId: null, muted: false, error: null });
  const key = optionsKey(options);

  useEffect(() => {
    const opts = {};
    for (const [k, v] of Object.entries(latest.current)) if (!NOT_OPTIONS.has(k) && typeof v !== 'function') opts[k] = v;
    for (const name of CALLBACKS) opts[name] = (detail) => latest.current[name]?.(detail);
    const w = new Widget(opts);
    const sync = () =>
      setView({ state: w.state, callId: w.callId ?? null, muted: !!w.muted, error: w.state === 'error' ? w.detail ?? null : null });
    const report = (state) => {
      if (reported.current === state) return;
      reported.current = state;
      try {
        latest.current.onStateChange?.(state);
      } catch (err) {
        console.error('[retell-widget] onStateChange threw', err);
      }
    };
    const onState = (e) => {
      sync();
      report(e.detail.state);
    };
    // Its own element only: two widgets on a page never hear each other.
    const host = w.host;
    host.addEventListener('retell-widget:state', onState);
    host.addEventListener('retell-widget:call-start', sync);
    host.addEventListener('retell-widget:mute', sync);
    ref.current = w;
    setWidget(w);
    sync();
    report(w.state); // a replaced widget starts idle: said once, if the old one was not
    // StrictMode mounts, unmounts and mounts again: each cleanup destroys its own widget (and
    // releases its microphone), so one element is ever left.
    return () => {
      host.removeEventListener('retell-widget:state', onState);
      host.removeEventListener('retell-widget:call-start', sync);
      host.removeEventListener('retell-widget:mute', sync);
      if (ref.current === w) ref.current = null;
      w.destroy();
    };
  }, [key]);

  const start = useCallback(() => (ref.current ? ref.current.start() : notMounted()), []);
  const stop = useCallback(() => ref.current?.stop(), []);
  // The widget fires no event for a mute it did not draw: read it back here.
  const setMuted = useCallback((on) => {
    const w = ref.current;
    if (!w) return;
    on ? w.mute() : w.unmute();
    setView((v) => (v.muted === !!w.muted ? v : { ...v, muted: !!w.muted }));
  }, []);
  const mute = useCallback(() => setMuted(true), [setMuted]);
  const unmute = useCallback(() => setMuted(false), [setMuted]);
  return { ...view, start, stop, mute, unmute, widget };
}

export function RetellWidget(props) {
  useRetellWidget(props);
  return null;
}
