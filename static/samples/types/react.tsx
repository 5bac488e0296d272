// Compiled with tsc --noEmit against types/react.d.ts (tests/widget/test_types_frameworks.py).
// Each @ts-expect-error must meet an error, or the compile fails.
import { useState } from 'react';
import type { CallEndDetail, WidgetState } from 'retell-widget';
import { RetellWidget, useRetellWidget, type UseRetellWidgetResult } from 'retell-widget/react';

export function Launcher() {
  const [state, setState] = useState<WidgetState>('idle');
  return (
    <>
      <RetellWidget
        proxyEndpoint="/api/create-web-call"
        agentId="agent_x"
        theme="dark"
        labels={{ call: 'Ask us' }}
        consent={{ text: 'This call is recorded.', version: 2 }}
        onStateChange={setState}
        onCallStart={({ callId }) => console.log(callId.toUpperCase())}
        onCallEnd={(d: CallEndDetail) => console.log(d.durationMs.toFixed(0), d.reason)}
        onError={(e) => console.log(e.code, e.retryAfter ?? 0)}
        onTranscript={(t) => console.log(t.role, t.content)}
      />
      <p>{state}</p>
    </>
  );
}

export function CustomButton() {
  const call: UseRetellWidgetResult = useRetellWidget({ proxyEndpoint: '/api/create-web-call', ui: false });
  const live: boolean = call.state === 'live';
  const started: Promise<void> = call.start();
  const element: HTMLElement | undefined = call.widget?.host;
  // @ts-expect-error: not a state
  const talking = call.state === 'talking';
  // @ts-expect-error: callId may be null
  const id: string = call.callId;
  void [started, element, talking, id];
  return (
    <button onClick={call.muted ? call.unmute : call.mute} disabled={!live}>
      {call.error?.code ?? 'mute'}
    </button>
  );
}

// @ts-expect-error: not a theme
export const badTheme = <RetellWidget proxyEndpoint="/x" theme="pink" />;
// @ts-expect-error: a callback's detail is typed
export const badCallback = <RetellWidget proxyEndpoint="/x" onCallStart={(d: { id: number }) => d.id} />;
// @ts-expect-error: not an option
useRetellWidget({ proxyEndpoint: '/x', agent: 'agent_x' });
