// The npm package's ES module: `import { RetellWidget } from 'retell-widget'`. The parts are
// dynamic imports, which the page's bundler splits into chunks of its own, and the stylesheets
// are strings applied as constructed sheets (no file to host, nothing for a CSP to refuse).
// Importing this touches neither window nor the DOM: safe in a server-side render.
import { platform, RetellWidget } from './widget.js';

const PARTS = {
  'engine-gateway': () => import('./engines/gateway.js'),
  'engine-livekit': () => import('./engines/livekit.js'),
  verify: () => import('./verify/index.js'),
  chat: () => import('./chat/index.js'),
  transcript: () => import('./transcript/index.js'),
  consent: () => import('./consent/index.js'),
  feedback: () => import('./feedback/index.js'),
  'i18n-es': () => import('./i18n/es.js'),
  'i18n-fr': () => import('./i18n/fr.js'),
  'i18n-de': () => import('./i18n/de.js'),
};
// build.mjs resolves css:<name> to the minified stylesheet, as a string.
const SHEETS = {
  'retell-widget': () => import('css:retell-widget'),
  chat: () => import('css:chat'),
  transcript: () => import('css:transcript'),
  consent: () => import('css:consent'),
  feedback: () => import('css:feedback'),
};

platform(
  (name) => PARTS[name]().then((m) => m.default),
  (root, name) =>
    SHEETS[name]().then(
      ({ default: css }) => {
        if (root.adoptedStyleSheets && typeof CSSStyleSheet === 'function' && 'replaceSync' in CSSStyleSheet.prototype) {
          const s = new CSSStyleSheet();
          s.replaceSync(css);
          root.adoptedStyleSheets = [...root.adoptedStyleSheets, s];
        } else {
          const s = document.createElement('style');
          s.textContent = css;
          root.append(s);
        }
      },
      (e) => console.warn('[retell-widget] stylesheet:', e),
    ),
);

export { RetellWidget };
export default RetellWidget;
