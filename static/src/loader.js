// The CDN file (retell-widget.js): the widget, its parts fetched as files beside this one, the
// `RetellWidget` global and the zero-JS embed. Each part's file hands its factory back through
// RetellWidget._define (build.mjs wraps the part's module so).
import { platform, RetellWidget } from './widget.js';

// Captured while this script runs: the parts and the stylesheets live beside it.
const SELF = document.currentScript;
const BASE = SELF && SELF.src ? new URL('./', SELF.src).href : '';
// A page that pinned the loader with SRI gets the lazily loaded files pinned too.
const SRI = SELF && SELF.integrity ? __SRI__ : null;
const pin = (file, el) => {
  if (SRI) {
    el.integrity = SRI[file];
    el.crossOrigin = 'anonymous';
  }
  el[el.rel ? 'href' : 'src'] = BASE + file;
  return el;
};
const defined = {}; // name -> resolve

platform(
  (name) =>
    new Promise((resolve, reject) => {
      defined[name] = resolve;
      const s = pin(`${name}.js`, document.createElement('script'));
      s.async = true;
      s.onload = () => s.remove();
      s.onerror = () => {
        s.remove();
        reject(new Error(`${name}.js failed to load`));
      };
      document.head.appendChild(s);
    }),
  (root, name) => {
    const link = document.createElement('link');
    link.rel = 'stylesheet';
    root.append(pin(`${name}.css`, link));
    return new Promise((done) => (link.onload = link.onerror = done));
  },
);

RetellWidget._define = (name, factory) => defined[name]?.(factory);
window.RetellWidget = RetellWidget;

// Zero-JS embed: <script src=".../retell-widget.js" data-proxy-endpoint="..." ...>.
const data = SELF && SELF.dataset;
if (data && (data.proxyEndpoint || data.chatEndpoint)) {
  const boot = () =>
    new RetellWidget({
      proxyEndpoint: data.proxyEndpoint,
      agentId: data.agentId,
      position: data.position,
      theme: data.theme,
      lang: data.lang,
      chatAgentId: data.chatAgentId,
      chatEndpoint: data.chatEndpoint,
      mode: data.mode,
      transcript: data.transcript,
      ui: data.ui,
      feedback: data.feedback != null && data.feedback !== 'false',
      consent: data.consentText && { text: data.consentText, url: data.consentUrl, version: data.consentVersion },
    });
  document.body ? boot() : document.addEventListener('DOMContentLoaded', boot);
}
