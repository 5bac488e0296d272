// verify.js: fetched only when the gateway answers `verification_*` (docs/verification.md).
// Gets a token (proof of work, or the site's captcha) and repeats the token request with it;
// a refused token earns one fresh attempt (a new challenge), then the error state.
//   check(widget, body, ask, stale) -> [res, body] of the last token request, for the loader
//   ask(verification?) -> [res, body] (or [] when the request failed outright)
// Verification errors are shown here (the loader has no strings for them): widget.fail(),
// after which stale() is true and the loader stops.
import { captcha } from './captcha.js';
import { pow } from './pow.js';
import { STRINGS } from './strings.js';

async function check(w, body, ask, stale) {
  w.t = { ...STRINGS.en, ...STRINGS[w.host.lang], ...w.t };
  const fail = (code) => w.fail(code, { message: STRINGS.en[`e_${code}`] });
  let res;
  for (let tries = 0; body?.error === 'verification_required' && body.verify && tries < 2; tries++) {
    if (stale()) return []; // cancelled while this file loaded
    w.set('verifying');
    let token;
    try {
      token = await (body.verify.provider === 'pow' ? pow : captcha)(body.verify, w);
    } catch (e) {
      if (stale()) return [];
      console.error('[retell-widget] verification:', e);
      return fail(e.code || 'verification_unavailable'), [];
    } finally {
      w.drop = null;
    }
    if (stale()) return [];
    w.set('connecting');
    [res, body] = await ask(token);
    // Refused (expired, reused, or the provider judged against it): ask for a fresh challenge.
    if (!stale() && body?.error === 'verification_failed' && tries < 1) [res, body] = await ask();
    if (stale()) return [];
  }
  const e = body?.error;
  if (/^verification_/.test(e)) {
    console.error(`[retell-widget] token request: HTTP ${res?.status}`, body);
    return fail(e === 'verification_unavailable' ? e : 'verification_failed'), [];
  }
  return [res, body];
}

export default check;
