// consent.js: the consent step before a call (docs/widget.md, "Consent"). widget.js shows the
// panel in state 'consent' (title, Cancel) and calls this, with consent.css:
//   factory(widget) -> Promise, resolved on "Agree and call", or once the state moves on
// (Cancel, close, destroy: widget.js then sees its run is stale and does not go on).
// The site's text is shown as text, never parsed; the link only to an http(s) URL.
import { STRINGS } from './strings.js';

const safe = (url) => {
  try {
    const u = new URL(url, location.href);
    return /^https?:$/.test(u.protocol) ? u.href : null;
  } catch {
    return null;
  }
};

export default async function consent(w) {
  const t = (k) => w.o.labels?.[k] ?? STRINGS[w.host.lang]?.[k] ?? STRINGS.en[k];
  const c = w.o.consent || {};
  const gen = w.gen;
  // Every way out of this state but Agree bumps the widget's run (stale: widget.js goes no
  // further); any other way out would be no consent, so it rejects.
  const quit = () => (w.gen === gen ? Promise.reject(new Error('consent: left without agreeing')) : undefined);
  await w.css('consent');
  if (w.state !== 'consent') return quit();
  const box = document.createElement('div');
  box.className = 'consent';
  box.innerHTML = '<p class="cs-text" id="cs-text"></p>';
  const text = box.firstChild;
  text.textContent = c.text || '';
  const href = c.url && safe(c.url);
  if (href) {
    const a = document.createElement('a');
    a.className = 'cs-link';
    a.href = href;
    a.target = '_blank';
    a.rel = 'noopener noreferrer';
    a.innerHTML = '<span></span> <span class="cs-sr"></span>';
    a.firstChild.textContent = t('consent_link');
    a.lastChild.textContent = t('consent_new_tab');
    box.append(a);
  }
  const agree = document.createElement('button');
  agree.type = 'button';
  agree.className = 'cs-agree';
  agree.textContent = t('consent_agree');
  agree.setAttribute('aria-describedby', 'cs-text');
  w.$('msg').after(box);
  w.$('hang').before(agree);
  // Long legal text scrolls inside the panel: then the keyboard must reach it too.
  if (text.scrollHeight > text.clientHeight) text.tabIndex = 0;
  const announce = () => (w.$('sr').textContent = text.textContent);
  announce();
  if (w.root.activeElement) agree.focus();

  let agreed;
  return new Promise((resolve) => {
    const esc = (e) => e.key === 'Escape' && w.stop();
    const moved = (e) => {
      if (e.detail.state === 'consent') return announce(); // relabelled (the page's language)
      done();
      resolve(agreed || quit());
    };
    const done = () => {
      box.remove();
      agree.remove();
      w.host.removeEventListener('retell-widget:state', moved);
      w.root.removeEventListener('keydown', esc);
    };
    w.host.addEventListener('retell-widget:state', moved);
    w.root.addEventListener('keydown', esc);
    // Removed as the state moves on to requesting-mic: meanwhile consent.css hides it, so the
    // widget moves keyboard focus on to Cancel.
    agree.addEventListener('click', () => {
      agreed = true;
      resolve();
      setTimeout(done);
    });
  });
}
