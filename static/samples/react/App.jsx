import { useState } from 'react';
import { RetellWidget, useRetellWidget } from 'retell-widget/react';

// The drop-in component: the widget's own launcher and panel; the page hears the callbacks.
export function WithLauncher({ proxyEndpoint, agentId }) {
  const [log, setLog] = useState([]);
  const note = (line) => setLog((lines) => [...lines, line]);
  return (
    <>
      <RetellWidget
        proxyEndpoint={proxyEndpoint}
        agentId={agentId}
        theme="blue"
        onStateChange={(state) => note(`state ${state}`)}
        onCallStart={({ callId }) => note(`call-start ${callId}`)}
        onCallEnd={({ reason }) => note(`call-end ${reason}`)}
        onError={({ code }) => note(`error ${code}`)}
      />
      <ol id="log">
        {log.map((line, i) => (
          <li key={i}>{line}</li>
        ))}
      </ol>
    </>
  );
}

// Headless (ui: false): no launcher, the page draws its own controls from the hook's state.
export function CustomButton({ proxyEndpoint, agentId }) {
  const { state, callId, muted, error, start, stop, mute, unmute } = useRetellWidget({ proxyEndpoint, agentId, ui: false });
  const inCall = ['requesting-mic', 'verifying', 'connecting', 'live'].includes(state);
  return (
    <div className="call">
      {inCall ? (
        <button id="call" onClick={stop}>
          {state === 'live' ? 'Hang up' : 'Cancel'}
        </button>
      ) : (
        // start() rejects with { code, message } when the call cannot start: `error` shows it.
        <button id="call" onClick={() => start().catch(() => {})}>
          Call us
        </button>
      )}
      <button id="mute" disabled={state !== 'live'} aria-pressed={muted} onClick={muted ? unmute : mute}>
        {muted ? 'Unmute' : 'Mute'}
      </button>
      <output id="state">{state}</output>
      <output id="call-id">{callId ?? ''}</output>
      {error && (
        <p id="error" role="alert">
          {error.code}
        </p>
      )}
    </div>
  );
}

// Mounting and unmounting, a new inline callback on every render (keeps the widget) and a
// changed option (replaces it).
export function Toggle({ proxyEndpoint, agentId }) {
  const [shown, setShown] = useState(true);
  const [theme, setTheme] = useState('purple');
  const [renders, setRenders] = useState(0);
  const [heard, setHeard] = useState('');
  return (
    <>
      <button id="toggle" onClick={() => setShown((s) => !s)}>
        {shown ? 'Remove the widget' : 'Add the widget'}
      </button>
      <button id="theme" onClick={() => setTheme((t) => (t === 'purple' ? 'dark' : 'purple'))}>
        Theme: {theme}
      </button>
      <button id="rerender" onClick={() => setRenders((n) => n + 1)}>
        Re-render ({renders})
      </button>
      {shown && (
        <RetellWidget
          proxyEndpoint={proxyEndpoint}
          agentId={agentId}
          theme={theme}
          labels={{ call: 'Ask us' }}
          onCallStart={() => setHeard(`render ${renders}`)}
        />
      )}
      <output id="heard">{heard}</output>
    </>
  );
}
