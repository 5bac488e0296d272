"""Fake captcha browser scripts (Turnstile, hCaptcha, reCAPTCHA v3) for Playwright routes."""

from __future__ import annotations

import json

# Fake provider scripts, served by Playwright routes in place of the real ones. Each hands out
# the tokens in __TOKENS__ in turn (minted by the fake siteverify), and records what the widget
# asked for. mode: auto (the token comes by itself, as in managed/invisible mode), click (a
# visible "Verify you are human" button must be pressed), never (no token: stays checking).
FAKE_SCRIPTS = {
    "turnstile": """
window.turnstile = {
  render(el, o) {
    const id = 'ts' + __captcha.renders.length;
    __captcha.renders.push({ sitekey: o.sitekey, language: o.language,
      inDocument: document.contains(el), slot: el.assignedSlot && el.assignedSlot.name,
      inPanel: !!(el.assignedSlot && el.assignedSlot.closest('.panel')) });
    const b = document.createElement('button');
    b.type = 'button';
    b.textContent = 'Verify you are human';
    b.style.cssText = 'min-height:44px;padding:0 12px;background:#fff;color:#111;'
      + 'border:1px solid #111';
    el.append(b);
    const give = () => o.callback(__TOKENS__.shift());
    if (__MODE__ === 'click') b.onclick = give;
    if (__MODE__ === 'auto') setTimeout(give, 30);
    return id;
  },
  remove(id) { __captcha.removed.push(id); },
};""",
    "hcaptcha": """
window.hcaptcha = {
  render(el, o) {
    __captcha.renders.push({ sitekey: o.sitekey, size: o.size, hl: o.hl,
      inDocument: document.contains(el), slot: el.assignedSlot && el.assignedSlot.name });
    return 'hc' + __captcha.renders.length;
  },
  execute(id, o) {
    __captcha.executed.push({ id, async: o && o.async });
    const response = __TOKENS__.shift();
    return new Promise((resolve) => setTimeout(() => resolve({ response }), 30));
  },
  remove(id) { __captcha.removed.push(id); },
};""",
    "recaptcha": """
window.grecaptcha = {
  ready(cb) { setTimeout(cb, 10); },
  execute(key, o) {
    __captcha.executed.push({ key, action: o.action });
    return new Promise((resolve) => setTimeout(() => resolve(__TOKENS__.shift()), 30));
  },
};""",
}
SCRIPT_ROUTES = {
    "turnstile": "https://challenges.cloudflare.com/**",
    "hcaptcha": "https://js.hcaptcha.com/**",
    "recaptcha": "https://www.google.com/recaptcha/**",
}
SCRIPT_URLS = {
    "turnstile": "https://challenges.cloudflare.com/turnstile/v0/api.js?render=explicit",
    "hcaptcha": "https://js.hcaptcha.com/1/api.js?render=explicit",
    "recaptcha": "https://www.google.com/recaptcha/api.js?render=site-key-recaptcha",
}


def fake_captcha(page, provider: str, tokens: list[str], mode: str = "auto") -> None:
    body = (
        "window.__captcha = { renders: [], executed: [], removed: [] };\n"
        + FAKE_SCRIPTS[provider]
        .replace("__TOKENS__", "window.__tokens")
        .replace("__MODE__", json.dumps(mode))
        + f"\nwindow.__tokens = {json.dumps(tokens)};"
    )
    page.route(
        SCRIPT_ROUTES[provider],
        lambda route: route.fulfill(status=200, content_type="text/javascript", body=body),
    )
