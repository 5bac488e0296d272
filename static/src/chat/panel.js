// The chat panel's markup, built once inside the widget's shadow root. Every string is set
// with textContent or an attribute, never parsed. Class names start with c- where the loader
// has one of its own (its $() finds the first match); `.hint` is shared on purpose: the
// captcha of a check slots in under it (src/verify/captcha.js).
import { createLog } from '../ui/log.js';

const ICON = (d) =>
  `<svg viewBox="0 0 24 24" aria-hidden="true" focusable="false"><path d="${d}"/></svg>`;
const SEND = ICON('M2 21 23 12 2 3v7l15 2-15 2z');
const MIN = ICON('M5 11h14v2H5z');
const MIC = ICON('M12 14a3 3 0 0 0 3-3V5a3 3 0 0 0-6 0v6a3 3 0 0 0 3 3zm5-3a5 5 0 0 1-10 0H5a7 7 0 0 0 6 6.9V21h2v-3.1a7 7 0 0 0 6-6.9z');

let ids = 0; // one input id per panel, for its <label>

export function buildPanel(t, voice) {
  const id = `rw-chat-input-${++ids}`;
  const section = document.createElement('section');
  section.className = 'chat';
  section.setAttribute('aria-label', t('chat_title'));
  section.innerHTML = `<div class="c-head"><span class="c-title"></span><button type="button" class="c-min">${MIN}</button></div>
<div class="c-note" hidden><p class="c-msg"></p><p class="hint"></p><button type="button" class="c-again"></button></div>
<form class="c-form"><label class="c-label" for="${id}"></label><textarea id="${id}" rows="2" maxlength="2000"></textarea><button type="submit" class="c-send">${SEND}</button></form>
<div class="c-act"><button type="button" class="c-end"></button><button type="button" class="c-voice">${MIC}<span></span></button></div>`;
  const $ = (c) => section.querySelector(`.c-${c}`);
  const log = createLog({ label: t('messages'), who: { agent: t('agent'), user: t('you') } });
  $('head').after(log.el);
  $('title').textContent = t('chat_title');
  $('min').setAttribute('aria-label', t('minimise'));
  $('label').textContent = t('input');
  $('send').setAttribute('aria-label', t('send'));
  $('end').textContent = t('end_chat');
  $('voice').lastChild.textContent = t('voice');
  $('voice').hidden = !voice;
  const input = section.querySelector('textarea');
  input.placeholder = t('placeholder');
  return {
    section,
    log,
    input,
    $,
    hint: section.querySelector('.hint'),
  };
}
