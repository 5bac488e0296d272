// Compiled by tests/test_package.py with `tsc --strict` against the packed package's types.
// Each @ts-expect-error must be an error, or tsc fails: the types refuse what the widget would.
import DefaultWidget, {
  RetellWidget,
  type CallEndDetail,
  type ErrorCode,
  type RetellWidgetOptions,
  type TranscriptItem,
  type WidgetState,
} from 'retell-widget';

const options: RetellWidgetOptions = {
  proxyEndpoint: 'https://gateway.example/api/create-web-call',
  agentId: 'agent_abc',
  position: 'bottom-left',
  theme: 'dark',
  lang: 'de',
  labels: { call: 'Ask us' },
  colors: { primary: '#0a0' },
  metadata: { plan: 'pro' },
  mode: 'hybrid',
  chatAgentId: 'agent_chat',
  transcript: 'events',
  ui: false,
  consent: { text: 'Calls are recorded.', url: 'https://example.com/privacy', version: '2026-12' },
  feedback: true,
  onCallStart: ({ callId }) => callId.toUpperCase(),
  onCallEnd: (d: CallEndDetail) => d.durationMs.toFixed(0),
  onError: (e) => {
    const code: ErrorCode = e.code;
    return [code, e.retryAfter ?? 0];
  },
  onTranscript: (item: TranscriptItem) => item.final && item.content,
};

const widget = new RetellWidget(options);
const same: typeof RetellWidget = DefaultWidget;
const state: WidgetState = widget.state;
widget.start().then(() => widget.mute(), (e: { code: ErrorCode }) => e.code);
widget.unmute();
widget.stop();
widget.agree();
widget.feedback('up', 'Helpful').catch(() => {});
widget.send('Hello').then((answer) => answer[0]?.content);
widget.host.addEventListener('retell-widget:state', (e) => {
  const next: WidgetState = e.detail.state;
  return next;
});
widget.host.addEventListener('retell-widget:call-end', (e) => e.detail.reason);
window.addEventListener('retell-widget:transcript', (e) => e.detail.role);
document.querySelector('retell-widget')?.addEventListener('retell-widget:error', (e) => e.detail.code);
console.log(RetellWidget.version, same, state);

// @ts-expect-error: not a theme
new RetellWidget({ proxyEndpoint: '/x', theme: 'pink' });
// @ts-expect-error: a misspelt option
new RetellWidget({ proxyEndpoint: '/x', agentID: 'agent_abc' });
// @ts-expect-error: consent needs its version
new RetellWidget({ proxyEndpoint: '/x', consent: { text: 'Recorded.' } });
// @ts-expect-error: ratings are up or down
widget.feedback('meh');
// @ts-expect-error: metadata values are strings
new RetellWidget({ proxyEndpoint: '/x', metadata: { n: 1 } });
// @ts-expect-error: a state that does not exist
const wrong: WidgetState = 'ringing';
widget.host.addEventListener('retell-widget:call-start', (e) => {
  // @ts-expect-error: call-start carries the call id, not a state
  return e.detail.state;
});
console.log(wrong);
