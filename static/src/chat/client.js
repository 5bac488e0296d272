// The gateway's chat routes (docs/openapi.yaml), and what each answer means for the visitor.
// The panel never sees a status code: every call resolves to { ok, code?, retryAfter?, body }.
//   POST {base}            start   -> 201 {chat_id, chat_token, expires_at, messages}
//   POST {base}/messages   send    -> 200 {messages: [{role: 'agent', content}]}
//   POST {base}/end        end     -> 204
//   GET  {base}/history    history -> 200 {chat_id, ended, messages} (Bearer chat token)
const retryAfter = (res, body) =>
  Math.max(1, Math.ceil(body.retry_after || res.headers.get('Retry-After') || 5));

// What went wrong with a message, as the panel's error code.
function sendCode(status, error) {
  if (error === 'agent_not_allowed') return 'not_allowed'; // no longer granted to this site
  if (status === 403) return 'expired'; // chat_token_invalid / chat_token_expired: start afresh
  if (status === 409) return 'chat_ended';
  if (error === 'chat_message_limit') return 'limit';
  if (status === 429) return 'rate_limited';
  return status === 504 ? 'timeout' : 'send_failed';
}

// What went wrong starting a chat (the same refusals as a call's token request).
function startCode(status) {
  if (status === 429) return 'rate_limited';
  return status >= 500 ? 'unavailable' : 'not_allowed';
}

export function chatClient(base, signal) {
  async function request(path, { token, body } = {}) {
    const id = crypto.randomUUID ? crypto.randomUUID() : String(Date.now());
    const headers = { 'X-Request-ID': id };
    if (body) headers['Content-Type'] = 'application/json';
    if (token && !body) headers.Authorization = `Bearer ${token}`;
    try {
      const res = await fetch(base + path, {
        method: body ? 'POST' : 'GET',
        headers,
        body: body && JSON.stringify(body),
        credentials: 'omit',
        cache: 'no-store',
        signal,
        keepalive: path === '/end', // an end sent as the page unloads still arrives
      });
      const data = res.status === 204 ? {} : await res.json().catch(() => ({}));
      if (!res.ok) console.error(`[retell-widget] chat ${path || 'start'} ${id}: HTTP ${res.status}`, data);
      return { res, body: data || {} };
    } catch (e) {
      // No CORS headers (origin not allowlisted) and "server down" look the same from here.
      if (!signal?.aborted) console.error(`[retell-widget] chat request to ${base + path} failed (${id}):`, e);
      return { body: {} };
    }
  }

  return {
    // One start request; `ask` for verify.js, which repeats it with a verification token.
    ask: (payload) => async (verification) => {
      const { res, body } = await request('', { body: { ...payload, verification } });
      return res ? [res, body] : [];
    },
    // The start's final answer, after any verification.
    started([res, body]) {
      if (!res) return { ok: false, code: 'unreachable' };
      if (res.ok && body.chat_token) return { ok: true, body };
      const code = res.ok ? 'unavailable' : startCode(res.status);
      return { ok: false, code, retryAfter: code === 'rate_limited' ? retryAfter(res, body) : 0 };
    },
    async send(token, content) {
      const { res, body } = await request('/messages', { body: { chat_token: token, content } });
      if (res?.ok && Array.isArray(body.messages)) return { ok: true, body };
      const code = res ? sendCode(res.status, body.error) : 'send_failed';
      return { ok: false, code, retryAfter: code === 'rate_limited' ? retryAfter(res, body) : 0 };
    },
    end: (token) => request('/end', { body: { chat_token: token } }),
    // ok; or gone: true when the token will never work again (drop it), else a passing failure.
    async history(token) {
      const { res, body } = await request('/history', { token });
      if (res?.ok && Array.isArray(body.messages)) return { ok: true, body };
      return { ok: false, gone: !!res && res.status >= 400 && res.status < 500 && res.status !== 429 };
    },
  };
}
