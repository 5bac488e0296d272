// chat.js: text chat with the site's chat agent, through the gateway (docs/widget.md, "Chat").
// Fetched by the loader on "Type instead" (or when this tab has a chat to resume), with
// chat.css; the loader keeps only the launcher buttons and stubs that call in here:
//   factory(widget, load) -> { open(), restore(), send(text), end(), destroy() }
// The chat's token stays in sessionStorage under widget.key (this tab only), so the chat
// survives navigation within the site: its history comes back from the gateway.
import { chatClient } from './client.js';
import { buildPanel } from './panel.js';
import { STRINGS } from './strings.js';

const MAX = 2000; // characters of one message (the gateway's limit)
const OVER = ['expired', 'chat_ended', 'limit', 'not_allowed']; // the chat cannot go on
const WAITING = ['starting', 'verifying', 'sending'];

function createChat(w, load) {
  const o = w.o;
  const lang = w.host.lang;
  const t = (k) => o.labels?.[k] ?? STRINGS[lang]?.[k] ?? STRINGS.en[k] ?? w.t[k] ?? '';
  const page = location.href;
  const base = (
    o.chatEndpoint ? new URL(o.chatEndpoint, page) : new URL('chat', new URL(o.proxyEndpoint, page))
  ).href.replace(/\/+$/, '');
  const aborter = new AbortController();
  const api = chatClient(base, aborter.signal);
  const ui = buildPanel(t, w.mode === 'hybrid');
  const { log, input, $ } = ui;
  w.$('panel').after(ui.section);

  let token = null;
  let chatId = null;
  let gen = 0; // bumped to cancel whatever is in flight
  let status = 'idle';
  let opening = null; // the open() in progress, shared
  let restoring = null; // the resume on page load, which an open() waits for
  let again = null; // what the notice's button does
  let timer;
  // verify.js drives this as it drives the call panel (set, fail, drop, t, host, root).
  const check = { host: w.host, root: ui.section, t: { ...o.labels }, set: () => {}, fail: () => {} };

  const store = {
    get() {
      try {
        return JSON.parse(sessionStorage.getItem(w.key));
      } catch {
        return null; // storage off (privacy mode, sandboxed frame): the chat lasts one page
      }
    },
    set(open) {
      try {
        sessionStorage.setItem(w.key, JSON.stringify({ token, open }));
      } catch {}
    },
    drop() {
      try {
        sessionStorage.removeItem(w.key);
      } catch {}
    },
  };

  const inside = () => !!w.root.activeElement;
  const error = (code, extra) => ({
    code,
    message: STRINGS.en[`ce_${code}`] || check.t[`e_${code}`] || `chat: ${code}`,
    chat: true,
    ...extra,
  });
  const tell = (name, detail, callback) => {
    w.fire(name, detail);
    w.call(callback, detail);
  };

  function setStatus(next) {
    status = next;
    w.host.dataset.chat = next;
    $('send').disabled = WAITING.includes(next);
  }

  // The notice above the input: a message, a hint, one button (or none), read out once.
  function notice(msg, hint = '', button = null, action = null) {
    clearTimeout(timer);
    $('note').hidden = !msg;
    $('msg').textContent = msg;
    ui.hint.textContent = hint;
    $('again').hidden = !button;
    $('again').disabled = false;
    $('again').textContent = button || '';
    again = action;
    w.$('sr').textContent = msg ? `${msg} ${hint}` : '';
  }
  const words = (code, s) => [
    t(`ce_${code}`) || check.t[`e_${code}`] || t(`e_${code}`),
    (t(`ch_${code}`) || check.t[`h_${code}`] || t(`h_${code}`)).replace('{s}', s),
  ];
  function problem(code, retryAfter, action) {
    const [msg, hint] = words(code, retryAfter);
    notice(msg, hint, t('retry'), action);
    if (retryAfter) {
      // Retry-After: the retry is offered once it has passed.
      $('again').disabled = true;
      timer = setTimeout(() => {
        $('again').disabled = false;
        w.$('sr').textContent = t('ready');
      }, retryAfter * 1000);
    }
    const e = error(code, retryAfter ? { retryAfter } : {});
    tell('error', e, 'onError');
    return e;
  }

  function show(focus) {
    if (w.state === 'live' || w.pending) w.stop();
    if (token) store.set(true);
    w.set('chat');
    log.el.scrollTop = log.el.scrollHeight;
    if (focus) input.focus();
  }

  function agentSays(content) {
    log.add('agent', content);
    tell('message', { role: 'agent', content }, 'onMessage');
  }

  async function start(focus) {
    const mine = ++gen;
    const stale = () => mine !== gen;
    let refused = null;
    check.set = (s) => {
      setStatus(s === 'verifying' ? 'verifying' : 'starting');
      notice(s === 'verifying' ? check.t.verifying : t('starting'));
    };
    check.fail = (code) => {
      refused = code;
      gen++;
    };
    show(focus);
    check.set('connecting');
    const ask = api.ask({ agent_id: o.chatAgentId, metadata: o.metadata, dynamic_variables: o.dynamicVariables });
    let answer = await ask();
    if (!stale() && /^verification_/.test(answer[1]?.error)) {
      try {
        answer = await (await load('verify'))(check, answer[1], ask, stale);
      } catch (e) {
        console.error('[retell-widget]', e);
        if (!stale()) refused = 'unavailable';
      } finally {
        check.drop = null;
      }
    }
    if (refused) return failStart(refused);
    if (stale()) throw error('cancelled');
    const r = api.started(answer);
    if (!r.ok) return failStart(r.code, r.retryAfter);
    token = r.body.chat_token;
    chatId = r.body.chat_id;
    store.set(w.state === 'chat');
    log.clear();
    setStatus('ready');
    notice('');
    tell('chat-start', { chatId }, 'onChatStart');
    for (const m of r.body.messages || []) agentSays(m.content);
    return { chatId };
  }

  function failStart(code, retryAfter) {
    setStatus('error');
    throw problem(code, retryAfter, () => open().catch(() => {}));
  }

  // The chat this tab had on an earlier page: its history, or nothing (false) when its token
  // no longer works. quiet: on page load, nothing on screen unless the chat comes back.
  async function resume(saved, focus, quiet) {
    const mine = ++gen;
    if (!quiet) {
      show(focus);
      setStatus('starting');
      notice(t('starting'));
    }
    const h = await api.history(saved.token);
    if (mine !== gen) throw error('cancelled');
    if (h.ok && !h.body.ended) {
      token = saved.token;
      chatId = h.body.chat_id;
      log.clear();
      for (const m of h.body.messages) if (m.role === 'agent' || m.role === 'user') log.add(m.role, m.content);
      setStatus('ready');
      notice('');
      // On page load the visitor may have started a call meanwhile: the chat waits, minimised.
      if (quiet && w.state !== 'idle') store.set(false);
      else show(focus);
      tell('chat-start', { chatId, resumed: true }, 'onChatStart');
      return true;
    }
    if (h.ok || h.gone) return store.drop(), false; // ended, expired or refused: forgotten
    if (quiet) return false; // the gateway is away for now: the launcher stays, so does the token
    setStatus('error');
    throw problem('unavailable', 0, () => open().catch(() => {}));
  }

  function open() {
    const focus = inside();
    return (opening ||= (async () => {
      await restoring;
      if (token) return show(focus), { chatId };
      const saved = store.get();
      if (saved?.token && (await resume(saved, focus))) return { chatId };
      return start(focus);
    })().finally(() => (opening = null)));
  }

  async function deliver(text, entry) {
    if (entry) entry.removeAttribute('data-failed');
    else entry = log.add('user', text);
    const mine = gen;
    setStatus('sending');
    notice('');
    const typing = log.grow('agent', t('typing'));
    typing.entry.classList.add('typing');
    const r = await api.send(token, text);
    typing.done('');
    if (mine !== gen) throw error('cancelled');
    if (r.ok) {
      setStatus('ready');
      tell('message', { role: 'user', content: text }, 'onMessage');
      for (const m of r.body.messages) agentSays(m.content);
      return r.body.messages.map(({ role, content }) => ({ role, content }));
    }
    entry.dataset.failed = t('not_sent');
    if (OVER.includes(r.code)) {
      over(r.code, text);
      throw error(r.code);
    }
    // Not sent (or not answered): the message stays, marked, and the retry sends it again.
    setStatus('failed');
    throw problem(r.code, r.retryAfter, () => deliver(text, entry).catch(() => {}));
  }

  async function send(text) {
    text = String(text ?? '');
    if (!text.trim()) throw error('empty');
    if (text.length > MAX) throw error('too_long');
    if (WAITING.includes(status)) throw error('busy');
    if (!token) await open();
    else if (w.state !== 'chat') show(false);
    return deliver(text);
  }

  // The chat is over: what the visitor typed is kept for a new one.
  function over(reason, text) {
    const id = chatId;
    token = chatId = null;
    gen++;
    store.drop();
    setStatus('ended');
    const [msg, hint] = words(reason === 'ended' ? 'chat_ended' : reason);
    notice(msg, reason === 'ended' ? '' : hint, t('new_chat'), () => open().catch(() => {}));
    if (text && !input.value) input.value = text;
    if (inside()) $('again').focus();
    tell('chat-end', { chatId: id, reason }, 'onChatEnd');
  }

  async function end() {
    const last = token;
    if (!last) return;
    over('ended');
    await api.end(last);
  }

  // Back to the launcher; the chat goes on (a start or a check in progress is cancelled).
  function minimise() {
    const focus = inside();
    if (!token && WAITING.includes(status)) {
      gen++;
      check.drop?.();
      setStatus('idle');
      notice('');
    }
    if (token) store.set(false);
    w.set('idle');
    if (focus) w.$(w.mode === 'hybrid' ? 'type' : 'launch').focus();
  }

  const submit = () => {
    const text = input.value;
    if (!text.trim() || WAITING.includes(status)) return;
    input.value = '';
    // A chat that could not start gives the text back; a failed send keeps it in the log.
    send(text).catch(() => token || input.value || (input.value = text));
  };
  $('form').addEventListener('submit', (e) => {
    e.preventDefault();
    submit();
  });
  input.addEventListener('keydown', (e) => {
    // Enter sends, Shift+Enter is a new line; an IME composing text keeps its Enter.
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      submit();
    }
  });
  ui.section.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && !e.isComposing) minimise();
  });
  $('min').addEventListener('click', minimise);
  $('again').addEventListener('click', () => again?.());
  $('end').addEventListener('click', () => end().catch(() => {}));
  $('voice').addEventListener('click', () => {
    if (token) store.set(false);
    w.start().catch(() => {});
  });

  return {
    open,
    send,
    end,
    restore() {
      const saved = store.get();
      if (!saved?.token || !saved.open || token) return;
      restoring = resume(saved, false, true).catch(() => {});
    },
    destroy() {
      // The chat itself goes on: a new widget in this tab (say, after a route change) resumes it.
      gen++;
      check.drop?.();
      clearTimeout(timer);
      aborter.abort();
    },
  };
}

export default createChat;
