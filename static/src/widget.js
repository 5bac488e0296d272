// The widget: UI in a Shadow DOM, state machine, token request. Knows nothing about WebRTC:
// call engines are separate parts, fetched on demand, sharing one tiny interface. So is the
// check a site may ask for before a call (verify, with its own strings: docs/widget.md), the
// text chat (chat + its stylesheet), the consent step and the feedback form. How a part is
// fetched is the entry's business: loader.js (the CDN file) adds script and link tags, index.js
// (the npm package's ES module) imports chunks a bundler splits. Nothing here runs on import,
// so a server-side render can import it.
import { LANGS, STRINGS } from './i18n.js';

const PREFIX = 'retell-widget:';
// part(name) -> Promise<factory>; sheet(root, name) -> Promise, settled once the stylesheet
// applies or failed (never hangs). Set by the entry.
let part, sheet;
export const platform = (p, s) => ((part = p), (sheet = s));
const parts = {}; // name -> Promise<factory>, fetched once (again after a failure)
const load = (name) =>
  (parts[name] ||= part(name).catch((e) => {
    delete parts[name];
    throw e;
  }));
const POSITIONS = ['bottom-right', 'bottom-left', 'top-right', 'top-left'];
const THEMES = ['purple', 'blue', 'green', 'dark', 'light'];
const MODES = ['voice', 'chat', 'hybrid'];
const COLORS = { primary: '--a', background: '--bg', text: '--fg' };
const LONG = 300; // seconds: a budget_exhausted pause longer than this offers no retry

const ICON = (d) =>
  `<svg viewBox="0 0 24 24" aria-hidden="true" focusable="false"><path d="${d}"/></svg>`;
const MIC = ICON('M12 14a3 3 0 0 0 3-3V5a3 3 0 0 0-6 0v6a3 3 0 0 0 3 3zm5-3a5 5 0 0 1-10 0H5a7 7 0 0 0 6 6.9V21h2v-3.1a7 7 0 0 0 6-6.9z');
const CHAT = ICON('M20 2H4a2 2 0 0 0-2 2v18l4-4h14a2 2 0 0 0 2-2V4a2 2 0 0 0-2-2z');
const CLOSE = ICON('M19 6.4 17.6 5 12 10.6 6.4 5 5 6.4l5.6 5.6L5 17.6 6.4 19l5.6-5.6 5.6 5.6 1.4-1.4-5.6-5.6z');
const HANG = ICON('M12 9c-1.6 0-3.1.3-4.6.7v3.1c0 .4-.2.7-.6.9-.9.5-1.8 1.1-2.5 1.8a1 1 0 0 1-1.4 0L.3 13a1 1 0 0 1 0-1.4C3.4 8.7 7.5 7 12 7s8.6 1.7 11.7 4.6a1 1 0 0 1 0 1.4l-2.5 2.5a1 1 0 0 1-1.4 0c-.8-.7-1.6-1.3-2.5-1.8a1 1 0 0 1-.6-.9V9.7C15.1 9.3 13.6 9 12 9z');

// Opens the connection a request will use, ahead of it: a hint, removed at once (the
// connection stays), so nothing is left in the page. Uncredentialed, like our fetches.
const preconnect = (url) => {
  if (!url) return;
  const link = document.createElement('link');
  link.rel = 'preconnect';
  link.href = new URL(url, location.href).origin;
  link.crossOrigin = 'anonymous';
  document.head.append(link);
  link.remove();
};

const fmt = (ms) => {
  const s = Math.floor(ms / 1000);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
};

export class RetellWidget {
  constructor(options = {}) {
    const o = (this.o = options);
    if (!o.proxyEndpoint && !o.chatEndpoint) throw new TypeError('RetellWidget: proxyEndpoint is required');
    // The gateway takes 1-64 visible ASCII characters: say so now, not as a refused call.
    if (o.consent && !/^[!-~]{1,64}$/.test(o.consent.version)) throw new TypeError('RetellWidget: consent.version must be 1-64 characters, no spaces');
    const lang = String(o.lang || document.documentElement.lang || navigator.language || 'en')
      .slice(0, 2)
      .toLowerCase();
    this.t = { ...STRINGS.en, ...o.labels };
    this.gen = 0;
    this.s = {}; // stylesheets in the shadow root, by name
    // Headless (ui: false, data-ui="none"): no launcher and no panel, the page draws its own
    // controls from the events and data-state; nothing of ours is shown or styled.
    const ui = (this.ui = o.ui !== false && o.ui !== 'none');
    // Live transcript: true (data-transcript) shows it in the panel; 'events' only tells the host.
    const tx = o.transcript;
    this.tx = tx === 'events' ? tx : tx === '' || (!!tx && tx !== 'false');
    const host = (this.host = document.createElement('retell-widget'));
    host.widget = this; // a zero-JS embed's page finds its widget here
    host.hidden = !ui; // headless: the element only carries data-state and the events
    host.dataset.position = POSITIONS.includes(o.position) ? o.position : POSITIONS[0];
    host.dataset.theme = THEMES.includes(o.theme) ? o.theme : THEMES[0];
    host.lang = LANGS.includes(lang) ? lang : 'en';
    const mode = (this.mode = host.dataset.mode = MODES.includes(o.mode) ? o.mode : o.chatAgentId ? 'hybrid' : 'voice');
    // The chat's sessionStorage entry: one per endpoint and chat agent, so widgets never share.
    this.key = `${PREFIX}chat:${o.chatEndpoint || o.proxyEndpoint}:${o.chatAgentId || ''}`;
    const root = (this.root = host.attachShadow({ mode: 'open' }));
    root.innerHTML = `<div class="w" hidden>
<button type="button" class="launch">${mode === 'chat' ? CHAT : MIC}<span></span></button><button type="button" class="type">${CHAT}<span></span></button>
<section class="panel">
<div class="head"><span class="title"></span><button type="button" class="close">${CLOSE}</button></div>
<p class="msg"></p><p class="hint"></p>
<div class="live"><span class="timer">0:00</span><span class="meter" aria-hidden="true"><i></i></span><span class="talk"></span></div>
<div class="act"><button type="button" class="mute" aria-pressed="false">${MIC}<span></span></button><button type="button" class="hang">${HANG}<span></span></button><button type="button" class="retry"></button><button type="button" class="alt">${CHAT}<span></span></button></div>
</section><div class="sr" role="status" aria-live="polite"></div></div>`;
    const styled = ui && this.css('retell-widget');
    const $ = (this.$ = (c) => root.querySelector(`.${c}`));
    for (const [k, v] of Object.entries(o.colors || {})) {
      if (COLORS[k]) $('w').style.setProperty(COLORS[k], v);
    }
    // Reveal only once our own styles and the page's language apply, so the host page never
    // sees raw markup or English flashing before German. Either failing still reveals.
    const strings =
      host.lang === 'en' || !ui
        ? null
        : load(`i18n-${host.lang}`).then(
            (words) => (this.t = { ...STRINGS.en, ...words, ...o.labels }),
            () => {},
          );
    this.ready = Promise.all([styled, strings]).then(() => {
      this.label();
      $('w').hidden = !ui;
    });

    const on = (c, fn) => $(c).addEventListener('click', fn);
    const quiet = () => this.start().catch(() => {});
    const chat = () => this.openChat().catch(() => {});
    on('launch', mode === 'chat' ? chat : quiet);
    on('retry', mode === 'chat' ? chat : quiet);
    on('type', chat);
    on('alt', chat);
    on('hang', () => this.stop());
    on('close', () => this.reset());
    on('mute', () => (this.muted ? this.unmute() : this.mute()));
    // Prefetch what the launcher starts when the visitor shows intent.
    // ...and the connection to the gateway the token request will use (nothing is sent).
    const intent = () => {
      if (o.consent && !this.consented()) load('consent').catch(() => {});
      (mode === 'chat' ? this.chat() : load('engine-gateway')).catch(() => {});
      preconnect(o.proxyEndpoint);
    };
    $('launch').addEventListener('pointerenter', intent);
    $('launch').addEventListener('focus', intent);
    root.addEventListener('keydown', (e) => {
      if (e.key === 'Escape' && (this.state === 'live' || this.state === 'connecting')) this.stop();
    });
    this.label();
    this.set('idle');
    (document.body || document.documentElement).appendChild(host);
    // This tab had a chat open on an earlier page: it comes back (chat.js reads its history).
    try {
      if (mode !== 'voice' && JSON.parse(sessionStorage.getItem(this.key))?.open) this.chat().then((c) => c.restore(), () => {});
    } catch {}
  }

  // Every fixed text, from this.t (again once the page's language has loaded).
  label() {
    const { $, t } = this;
    const text = (c, v) => ($(c).textContent = v);
    const span = (c, v) => ($(c).lastChild.textContent = v);
    span('launch', this.mode === 'chat' ? t.open_chat : t.call);
    span('type', t.type);
    span('alt', t.type);
    span('mute', t.mute);
    // A named <section> is a region landmark. The close button shows an icon, not a "×"
    // character, so its name comes from the label alone (WCAG 2.5.3, label in name).
    $('panel').setAttribute('aria-label', t.title);
    $('close').setAttribute('aria-label', t.close);
    text('title', t.title);
    text('talk', t.speaking);
    if (this.state && this.state !== 'idle') this.set(this.state, this.detail);
  }

  set(state, detail) {
    const { $, t } = this;
    const focused = this.root.activeElement;
    this.state = state;
    this.detail = detail;
    this.host.dataset.state = state;
    const err = state === 'error' ? detail : null;
    const msg = err ? t[`e_${err.code}`] || err.message : t[{ 'requesting-mic': 'mic' }[state] || state] || '';
    $('msg').textContent = msg;
    $('hint').textContent = err ? (t[`h_${err.code}`] || '').replace('{s}', err.retryAfter) : '';
    $('hang').lastChild.textContent = state === 'live' ? t.hangup : t.cancel;
    // Blocked or missing microphone: typing still works, where the site has a chat agent.
    $('alt').hidden = this.mode !== 'hybrid' || !/mic/.test(err?.code);
    $('retry').textContent = state === 'ended' ? t.again : t.retry;
    $('sr').textContent = state === 'idle' ? '' : [msg, $('hint').textContent].join(' ');
    clearInterval(this.wait);
    const retry = $('retry');
    const wait = err && err.retryAfter;
    // A spent minute budget refills at the next UTC day or month: a retry button would only
    // fail again, so it is offered only when the pause is short. Closing the panel still works.
    retry.hidden = err?.code === 'budget_exhausted' && wait > LONG;
    retry.disabled = !!wait;
    if (wait && !retry.hidden) {
      // The button and hint count down on screen; the live region speaks only at the end.
      const until = Date.now() + wait * 1000;
      const tick = () => {
        const s = Math.ceil((until - Date.now()) / 1000);
        $('hint').textContent = (t[`h_${err.code}`] || '').replace('{s}', Math.max(s, 1));
        retry.textContent = s > 0 ? `${t.retry} (${fmt(s * 1000)})` : t.retry;
        if (s > 0) return;
        clearInterval(this.wait);
        retry.disabled = false;
        $('sr').textContent = t.ready;
      };
      tick();
      this.wait = setInterval(tick, 1000);
    }
    // Keep keyboard users in the widget: move focus only if it was already here.
    if (focused) {
      const next = { idle: 'launch', live: 'mute', ended: 'retry', error: retry.disabled ? 'close' : 'retry' }[state];
      if (next || !focused.getClientRects().length) $(next || 'hang').focus();
    }
    this.fire('state', { state });
  }

  // A throwing host callback must not break the call flow.
  call(name, arg) {
    try {
      this.o[name]?.(arg);
    } catch (e) {
      console.error(`[retell-widget] ${name} threw`, e);
    }
  }

  // On the widget's element, bubbling to window: a page with two widgets tells them apart by
  // the event's target, and a framework wrapper listens on its own widget's element only.
  fire(name, detail) {
    (this.host.isConnected ? this.host : window).dispatchEvent(new CustomEvent(PREFIX + name, { detail, bubbles: true }));
  }

  // A stylesheet in the shadow root, once.
  css(name) {
    return (this.s[name] ||= sheet(this.root, name));
  }

  // Whether this site's visitor agreed to this version of the consent text (localStorage;
  // where storage is refused, they are asked before each call). agree() records it.
  consented(now) {
    const key = `${PREFIX}consent:${this.o.consent?.version}`;
    try {
      return now ? localStorage.setItem(key, Date.now()) : !!localStorage.getItem(key);
    } catch {}
  }

  agree() {
    this.consented(1);
  }

  start() {
    if (this.pending) return this.pending;
    if (this.state === 'live') return Promise.resolve();
    const pending = (this.pending = new Promise((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    }));
    this.run(++this.gen); // may settle at once (headless, no consent yet)
    return pending;
  }

  async run(gen) {
    const o = this.o;
    const stale = () => gen !== this.gen;
    // Consent first, then the microphone. Headless, the page asks and calls agree().
    const consent = o.consent;
    if (consent && !this.consented()) {
      if (!this.ui) return this.fail('consent_required');
      this.set('consent');
      try {
        await (await load('consent'))(this); // settles on "Agree", or when the state moves on
      } catch (e) {
        console.error('[retell-widget]', e);
        return stale() || this.fail('unavailable');
      }
      if (stale()) return;
      this.agree();
    }
    this.set('requesting-mic');
    preconnect(o.proxyEndpoint); // opens while the visitor answers the prompt; sends nothing
    // Mic first: never mint a token for a visitor who then denies the microphone.
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({
        audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1 },
      });
    } catch (e) {
      console.warn('[retell-widget] microphone:', e);
      const denied = e.name === 'NotAllowedError' || e.name === 'SecurityError';
      return stale() || this.fail(denied ? 'mic_denied' : 'no_mic');
    }
    // Cancelled while the prompt was open: this stream belongs to no call.
    if (stale()) return stream.getTracks().forEach((track) => track.stop());
    this.stream = stream;
    this.set('connecting');
    const emit = (event, data) => stale() || this.onEngine(event, data);
    // An engine fetched on hover or focus builds its peer connection during the token request.
    const early = parts['engine-gateway']
      ?.then((make) => stale() || (this.engine = make(emit)).prepare?.(stream))
      .catch(() => {}); // then connect() builds it
    const payload = {
      agent_id: o.agentId,
      metadata: o.metadata,
      dynamic_variables: o.dynamicVariables,
      consent_version: consent ? String(consent.version) : undefined,
    };
    let id;
    // One token request; [] when it failed outright.
    const ask = async (verification) => {
      id = crypto.randomUUID ? crypto.randomUUID() : String(Date.now());
      try {
        const res = await fetch(o.proxyEndpoint, {
          method: 'POST',
          headers: { 'Content-Type': 'application/json', 'X-Request-ID': id },
          body: JSON.stringify({ ...payload, verification }),
          credentials: 'omit',
          cache: 'no-store',
        });
        return [res, await res.json().catch(() => ({}))];
      } catch (e) {
        // No CORS headers (origin not allowlisted) and "server down" look the same from here.
        console.error(`[retell-widget] token request to ${o.proxyEndpoint} failed (request ${id}):`, e);
        return [];
      }
    };
    let [res, body] = await ask();
    if (stale()) return;
    // The site asks for a proof that a person is here: verify.js (lazily loaded, with its
    // strings) gets a token and asks again, or shows the verification error itself.
    if (/^verification_/.test(body?.error)) {
      try {
        [res, body] = await (await load('verify'))(this, body, ask, stale);
      } catch (e) {
        console.error('[retell-widget]', e);
        return stale() || this.fail('unavailable');
      }
      if (stale()) return;
    }
    if (!res) return this.fail('unreachable');
    if (!res.ok) {
      console.error(`[retell-widget] token request ${id}: HTTP ${res.status}`, body);
      const s = res.status;
      const retryAfter = Math.max(1, Math.ceil(body.retry_after || res.headers.get('Retry-After') || 30));
      // busy: the concurrency cap; budget_exhausted: the site's minutes are spent.
      const code = s === 429 && ['busy', 'budget_exhausted'].includes(body.error) ? body.error : 'rate_limited';
      return s === 429 ? this.fail(code, { retryAfter }) : this.fail(s >= 500 ? 'unavailable' : 'not_allowed');
    }
    const name = body.transport === 'livekit' ? 'livekit' : 'gateway';
    let engine;
    try {
      engine = (name === 'gateway' && (await early, this.engine)) || (await load(`engine-${name}`))(emit);
    } catch (e) {
      console.error('[retell-widget]', e);
      return stale() || this.fail('connect_failed');
    }
    if (stale()) return;
    if (engine !== this.engine) this.engine?.hangUp(); // a v2 call: the early v3 engine goes
    this.engine = engine;
    this.callId = body.call_id;
    // Its source: the gateway's stream (v3, where the site has it on) or the SDK (v2).
    this.said = this.tx && (name === 'livekit' || !!body.transcript_url);
    engine
      .connect({
        token: body.access_token,
        callId: body.call_id,
        url: body.gateway_url,
        iceServers: body.ice_servers,
        stream: this.stream,
        transcript: this.said && { url: body.transcript_url, token: body.transcript_token, base: o.proxyEndpoint },
      })
      .catch((e) => stale() || this.onEngine('error', { code: 'connect_failed', message: String(e) }));
  }

  onEngine(event, data) {
    if (event === 'level') {
      const meter = this.$('meter');
      meter.style.setProperty('--l', data.toFixed(3));
      this.$('w').classList.toggle('talking', data > 0.04);
    } else if (event === 'live' && this.state === 'connecting') {
      this.t0 = Date.now();
      this.tick = setInterval(() => (this.$('timer').textContent = fmt(Date.now() - this.t0)), 1000);
      this.$('timer').textContent = '0:00';
      this.set('live');
      this.resolve();
      this.pending = null;
      this.fire('call-start', { callId: this.callId });
      this.call('onCallStart', { callId: this.callId });
      if (this.said) this.words();
    } else if (event === 'transcript') {
      this.words(data);
    } else if (event === 'ended') {
      this.end(data.reason);
    } else if (event === 'error') {
      if (data.message) console.error('[retell-widget] call:', data.message);
      this.fail(data.code);
    }
  }

  // Each transcript item goes to the host; with `transcript: true`, transcript.js (+ .css,
  // fetched when such a call goes live) shows it. Items wait in order until it is in.
  words(item) {
    if (item) {
      this.fire('transcript', item);
      this.call('onTranscript', item);
    }
    if (this.tx !== true) return;
    (this.x ||= Promise.all([load('transcript'), this.css('transcript')]).then(
      ([make]) => make(this),
      (e) => console.warn('[retell-widget] transcript:', e),
    )).then((show) => show?.(item));
  }

  // Tear down the call and the mic; returns how long the call was live.
  release() {
    clearInterval(this.tick);
    this.drop?.(); // a check still running: its worker or captcha goes
    this.drop = null;
    this.engine?.hangUp();
    this.engine = null;
    this.stream?.getTracks().forEach((track) => track.stop());
    this.stream = null;
    this.muted = false;
    this.$('mute').setAttribute('aria-pressed', 'false');
    this.$('w').classList.remove('talking', 'muted');
    const ms = this.t0 ? Date.now() - this.t0 : 0;
    this.t0 = 0;
    return ms;
  }

  end(reason) {
    const wasLive = this.state === 'live';
    this.gen++;
    const durationMs = this.release();
    if (wasLive) {
      this.fb = null;
      this.set('ended');
      this.fire('call-end', { durationMs, reason });
      this.call('onCallEnd', { durationMs, reason });
      if (this.o.feedback) this.feedback().catch(() => {});
    } else {
      this.settle({ code: 'cancelled', message: 'Call cancelled' });
      this.set('idle');
    }
  }

  fail(code, extra) {
    const wasLive = this.state === 'live';
    this.gen++;
    const durationMs = this.release();
    const error = { code, message: STRINGS.en[`e_${code}`], ...extra };
    this.set('error', error);
    if (wasLive) {
      this.fire('call-end', { durationMs, reason: code });
      this.call('onCallEnd', { durationMs, reason: code });
    }
    this.settle(error);
    this.fire('error', error);
    this.call('onError', error);
  }

  settle(error) {
    if (this.pending) this.reject(error);
    this.pending = null;
  }

  stop() {
    if (this.state === 'live' || this.pending) this.end('hangup');
  }

  mute() {
    this.setMuted(true);
  }

  unmute() {
    this.setMuted(false);
  }

  setMuted(muted) {
    if (this.state !== 'live') return;
    this.muted = muted;
    this.engine.setMuted(muted);
    this.$('mute').setAttribute('aria-pressed', String(muted));
    this.$('w').classList.toggle('muted', muted);
    this.fire('mute', { muted });
  }

  // Feedback on the call that just ended: the form (feedback: true) sends it, or the page does
  // with a rating ('up' or 'down') and an optional comment. feedback.js posts it.
  feedback(rating, comment) {
    const id = this.callId;
    const form = (this.fb ||= load('feedback').then(
      (make) => make(this, id),
      (e) => {
        this.fb = null; // fetched again next time
        throw e;
      },
    ));
    return rating ? form.then((f) => f.send(rating, comment)) : form;
  }

  // Back to the launcher from ended/error.
  reset() {
    if (this.state === 'live' || this.pending) this.stop();
    this.set('idle');
  }

  destroy() {
    this.gen++;
    this.release();
    this.settle({ code: 'cancelled', message: 'Widget destroyed' });
    clearInterval(this.wait);
    this.c?.then((c) => c.destroy());
    this.host.remove();
    this.state = 'destroyed';
  }

  // The chat lives in chat.js, fetched (with chat.css) on first use; these hand over to it.
  chat() {
    return (this.c ||= Promise.all([load('chat'), this.css('chat'), this.ready]).then(
      ([make]) => make(this, load),
      (e) => {
        this.c = null;
        throw e;
      },
    ));
  }

  use(fn) {
    return this.chat().then(fn, (e) => {
      console.error('[retell-widget]', e);
      this.fail('unavailable');
      throw this.detail;
    });
  }

  openChat() {
    return this.use((c) => c.open());
  }

  send(text) {
    return this.use((c) => c.send(text));
  }

  endChat() {
    return this.use((c) => c.end());
  }
}

RetellWidget.version = __VERSION__;
