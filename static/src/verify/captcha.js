// Turnstile, hCaptcha, reCAPTCHA v3. Loads the provider's own script only now (a third party:
// never on page load), renders its widget in the panel and resolves the token.
//
// The captcha lives in the light DOM: a <div slot="verify"> child of <retell-widget>, shown
// inside the panel through a <slot>. Provider scripts find, measure and style their container
// through the document (none documents shadow-root support), so a container inside our
// shadow root is not reliable; slotted, it still sits in the panel, in its tab order.
const SCRIPTS = {
  turnstile: () => 'https://challenges.cloudflare.com/turnstile/v0/api.js?render=explicit',
  hcaptcha: () => 'https://js.hcaptcha.com/1/api.js?render=explicit',
  recaptcha: (key) => `https://www.google.com/recaptcha/api.js?render=${encodeURIComponent(key)}`,
};
const GLOBALS = { turnstile: 'turnstile', hcaptcha: 'hcaptcha', recaptcha: 'grecaptcha' };
const scripts = {};

const error = (code, message) => Object.assign(new Error(message), { code });
const failed = (why) => error('verification_failed', `captcha: ${why}`);

function load(provider, key) {
  const name = GLOBALS[provider];
  return (scripts[provider] ||= new Promise((resolve, reject) => {
    if (window[name]) return resolve(window[name]); // the page loaded it itself
    const s = document.createElement('script');
    s.src = SCRIPTS[provider](key);
    s.async = true;
    s.onload = () => (window[name] ? resolve(window[name]) : s.onerror());
    s.onerror = () => {
      s.remove();
      delete scripts[provider];
      reject(error('verification_unavailable', `${s.src} failed to load (network or CSP)`));
    };
    document.head.appendChild(s);
  }));
}

// Each provider: (api, verify, element, lang, cleanups) -> Promise<token>.
const PROVIDERS = {
  turnstile: (api, v, el, lang, cleanups) =>
    new Promise((resolve, reject) => {
      const id = api.render(el, {
        sitekey: v.site_key,
        language: lang,
        callback: resolve,
        'error-callback': (code) => reject(failed(`turnstile error ${code}`)),
        'expired-callback': () => reject(failed('turnstile token expired')),
        'timeout-callback': () => reject(failed('turnstile challenge timed out')),
      });
      cleanups.push(() => api.remove?.(id));
    }),
  hcaptcha: async (api, v, el, lang, cleanups) => {
    const id = api.render(el, { sitekey: v.site_key, size: 'invisible', hl: lang });
    cleanups.push(() => api.remove?.(id));
    try {
      return (await api.execute(id, { async: true })).response;
    } catch (e) {
      throw failed(`hcaptcha ${e}`);
    }
  },
  recaptcha: (api, v) =>
    new Promise((resolve, reject) =>
      api.ready(() => api.execute(v.site_key, { action: v.action }).then(resolve, (e) => reject(failed(e)))),
    ),
};

export async function captcha(v, w) {
  const run = PROVIDERS[v.provider];
  if (!run || !v.site_key) throw error('verification_unavailable', `unknown check ${v.provider}`);
  const cleanups = [];
  let over = false;
  w.drop = () => {
    over = true;
    cleanups.splice(0).forEach((f) => {
      try {
        f();
      } catch {
        /* the provider's widget is already gone */
      }
    });
  };
  const api = await load(v.provider, v.site_key);
  if (over) throw error('cancelled', 'cancelled');
  // A slot of its own under the panel's hint, gone with the check: the voice panel and the
  // chat panel share one shadow root, and a second slot of the same name would get nothing.
  const slot = document.createElement('slot');
  slot.name = 'verify';
  w.root.querySelector('.hint').after(slot);
  cleanups.push(() => slot.remove());
  const el = document.createElement('div');
  el.slot = 'verify';
  el.className = 'retell-widget-verify';
  el.style.cssText = 'margin-top:8px;max-width:100%;overflow:auto';
  w.host.append(el);
  cleanups.push(() => el.remove());
  try {
    return await run(api, v, el, w.host.lang, cleanups);
  } finally {
    w.drop();
  }
}
