// transcript.js: the live transcript in the call panel (docs/widget.md, "Live transcript").
// The loader fetches it, with transcript.css, when a call with a transcript goes live, and
// hands it the engines' items, one shape for v2 and v3: {id, role: 'agent' | 'user', content,
// final} (an id seen before replaces its line).
//   factory(widget) -> show(item?)
// The panel shows with the call's first line: a stream that fails leaves nothing on screen.
// Lines go through the chat's log (src/ui/log.js): a growing line sits in its aria-live="off"
// holder and is updated in place; once final it moves into the log and is read out, once.
import { createLog } from '../ui/log.js';
import { STRINGS } from './strings.js';

const NARROW = '(max-width: 480px)'; // phones: collapsed until the visitor opens it
const CHEVRON = '<svg viewBox="0 0 24 24" aria-hidden="true" focusable="false"><path d="M16.6 8.6 12 13.2 7.4 8.6 6 10l6 6 6-6z"/></svg>';

function createTranscript(w) {
  const t = (k) => w.o.labels?.[k] ?? STRINGS[w.host.lang]?.[k] ?? STRINGS.en[k];
  const wrap = document.createElement('div');
  wrap.className = 't-wrap';
  wrap.innerHTML = `<button type="button" class="t-toggle" aria-controls="t-log">${CHEVRON}<span></span></button>`;
  const toggle = wrap.firstChild;
  toggle.lastChild.textContent = t('transcript');
  const log = createLog({ label: t('transcript'), who: { agent: t('agent'), user: t('you') } });
  log.el.id = 't-log'; // ids are scoped to the shadow root
  log.el.setAttribute('aria-relevant', 'additions'); // a line corrected later is not read again
  wrap.append(log.el);
  w.$('live').after(wrap);

  // Collapsed, the log leaves the accessibility tree too: a screen reader hears nothing more.
  const expand = (open) => {
    toggle.setAttribute('aria-expanded', String(open));
    log.el.hidden = !open;
    if (open) log.el.scrollTop = log.el.scrollHeight;
  };
  expand(!matchMedia(NARROW).matches);
  toggle.addEventListener('click', () => expand(log.el.hidden));

  const lines = new Map(); // id -> its final entry
  let growing = null; // { id, line } of the one line still growing

  const settle = () => {
    const entry = growing?.line.done();
    if (entry) lines.set(growing.id, entry);
    growing = null;
  };
  const forget = () => {
    wrap.hidden = true;
    growing = null;
    lines.clear();
    log.clear();
  };
  forget();

  // Every call starts with requesting-mic: the last call's lines go then. Once the call is
  // over (ended, error), the line that was growing is final.
  new MutationObserver((records) => {
    const state = w.host.dataset.state;
    if (state === 'requesting-mic' || records.some((r) => r.oldValue === 'requesting-mic')) forget();
    if (state !== 'live') settle();
  }).observe(w.host, { attributeFilter: ['data-state'], attributeOldValue: true });

  function apply({ id, role, content, final }) {
    const entry = lines.get(id);
    if (entry) return void (entry.lastChild.textContent = content); // corrected in place
    if (growing?.id === id) {
      growing.line.set(content);
      if (final) settle();
      return;
    }
    settle(); // someone else speaks: the line before is over
    if (final) lines.set(id, log.add(role, content));
    else growing = { id, line: log.grow(role, content) };
  }

  return (item) => {
    if (!item) return;
    wrap.hidden = false;
    apply(item);
  };
}

export default createTranscript;
