// Proof of work (ALTCHA v1). Solves in a Web Worker created from a Blob of its built source
// (a worker must be same-origin with the page; the widget files are not), so the page's CSP
// needs `worker-src blob:`. Where workers are blocked or fail, solves on the page itself, in
// batches that keep it responsive.
import { solve } from './solve.js';

const failed = (message) => Object.assign(new Error(message), { code: 'verification_failed' });

export function pow({ challenge }, w) {
  return new Promise((resolve, reject) => {
    let worker, url;
    let over = false;
    const t0 = performance.now();
    const stop = () => {
      over = true;
      worker?.terminate();
      if (url) URL.revokeObjectURL(url);
    };
    w.drop = stop;
    const done = ({ token, ms }, where) => {
      if (over) return;
      stop();
      console.info(`[retell-widget] proof of work solved ${where} in ${Math.round(ms)} ms`);
      w.powMs = ms; // read by the tests
      token ? resolve(token) : reject(failed('no number solves this challenge'));
    };
    const onPage = (e) => {
      if (over) return;
      console.warn('[retell-widget] no Web Worker (CSP worker-src blob:?), solving on the page:', e);
      worker?.terminate();
      solve(challenge, () => over).then(
        (token) => done({ token, ms: performance.now() - t0 }, 'on the page'),
        (e2) => over || (stop(), reject(e2)),
      );
    };
    try {
      url = URL.createObjectURL(new Blob([__POW_WORKER__], { type: 'text/javascript' }));
      worker = new Worker(url);
      worker.onmessage = (e) => done(e.data, 'in a worker');
      // A CSP without blob: workers fires `error` (some browsers throw instead, below).
      worker.onerror = (e) => (e.preventDefault(), onPage(e.message || 'worker error'));
      worker.postMessage(challenge);
    } catch (e) {
      onPage(e);
    }
  });
}
