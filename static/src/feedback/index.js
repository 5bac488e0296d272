// feedback.js: the visitor's thumbs up or down on the call that just ended (docs/widget.md,
// "Feedback"). widget.js calls the factory once such a call is over (feedback: true), or when
// the page sends feedback itself (widget.feedback(rating, comment), headless too):
//   factory(widget, callId) -> { send(rating, comment) -> Promise }
// The gateway checks the body (a bad rating is its 400, `invalid`). With a UI and `feedback:
// true`, the form (feedback.css) sits in the ended panel until the state moves on. Every
// string is set with textContent or an attribute, never parsed.
import { STRINGS } from './strings.js';

// A thumb up; the thumb down is the same turned over (feedback.css).
// (No aria-hidden: a button's aria-label names it, the SVG has no name of its own.)
const THUMB = '<svg viewBox="0 0 24 24"><path d="M1 10h4v11H1zm7 11h9.5a2 2 0 0 0 1.9-1.4l2.4-7.2A2 2 0 0 0 19.9 10H14l1-5a2 2 0 0 0-3.6-1.4L7 9v12z"/></svg>';
// Refusals that trying again cannot change: the form goes, with why.
const FINAL = { 403: 'not_allowed', 404: 'unknown_call', 409: 'feedback_exists' };

export default function createFeedback(w, callId) {
  const o = w.o;
  const t = (k) => o.labels?.[k] ?? STRINGS[w.host.lang]?.[k] ?? STRINGS.en[k];
  let busy;
  let view = () => {}; // (text, final): the form shows how a send went, once it is on screen

  async function post(rating, comment) {
    let res;
    let data = {};
    try {
      // Beside create-web-call: /api/feedback.
      res = await fetch(o.feedbackEndpoint || new URL('feedback', new URL(o.proxyEndpoint, location)), {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ call_id: callId, rating, comment }),
        credentials: 'omit',
      });
      data = await res.json().catch(() => data);
    } catch {}
    if (res?.ok) return view(t('feedback_thanks'), 1);
    const s = res?.status;
    const code = !s ? 'unreachable' : s > 499 ? 'unavailable' : s === 429 ? 'rate_limited' : FINAL[s] || 'invalid';
    const key = s === 409 ? 'feedback_exists' : 'feedback_failed';
    view(t(key), FINAL[s]);
    throw { code, message: data.message || STRINGS.en[key], retryAfter: data.retry_after };
  }

  // One send at a time: another while it runs gets its outcome.
  const send = (rating, comment) => (busy ||= post(rating, comment).finally(() => (busy = 0)));

  // Not after a quick "Call again" or close: this call's form is no longer wanted.
  if (w.ui && o.feedback) w.css('feedback').then(() => w.state === 'ended' && w.callId === callId && show());

  function show() {
    const box = document.createElement('form');
    box.className = 'feedback';
    box.innerHTML = `<div class="fb-top"><p></p><div><button type="button" aria-pressed="false">${THUMB}</button><button type="button" aria-pressed="false">${THUMB}</button></div></div><label><span></span><textarea rows="2" maxlength="1000"></textarea></label><p hidden></p><button disabled></button>`;
    const [q, e] = box.querySelectorAll('p');
    const [up, down, input, go] = box.elements;
    const sr = (text) => (w.$('sr').textContent = text);
    q.textContent = t('feedback_question');
    up.setAttribute('aria-label', t('feedback_up'));
    down.setAttribute('aria-label', t('feedback_down'));
    input.previousSibling.textContent = t('feedback_comment');
    go.textContent = t('feedback_send');
    w.$('act').before(box);
    sr(`${w.$('msg').textContent} ${q.textContent}`);

    let rating;
    const rate = (r) => {
      rating = rating === r ? 0 : r;
      up.setAttribute('aria-pressed', rating === 'up');
      down.setAttribute('aria-pressed', rating === 'down');
      go.disabled = !rating;
    };
    up.onclick = () => rate('up');
    down.onclick = () => rate('down');
    box.onsubmit = (ev) => {
      ev.preventDefault();
      // Send stays enabled (disabling it would drop its focus); send() posts once anyway.
      send(rating, input.value.trim() || undefined).catch(() => {});
    };
    view = (text, final) => {
      if (final) {
        // Thanks, or why there is nothing left to send: the form goes.
        const focused = box.contains(w.root.activeElement);
        box.textContent = text;
        view = () => {}; // and stays: a later send's refusal does not replace the thanks
        if (focused) w.$('retry').focus();
      } else e.hidden = !(e.textContent = text);
      sr(text);
    };
    const moved = (ev) => {
      if (ev.detail.state === 'ended') return;
      view = () => {};
      box.remove();
      w.host.removeEventListener('retell-widget:state', moved);
    };
    w.host.addEventListener('retell-widget:state', moved);
  }

  return { send };
}
