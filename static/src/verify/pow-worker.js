// The proof-of-work worker: built to a string that verify-pow.js runs from a Blob, since a
// worker must be same-origin with the page and the widget files come from another origin.
import { solve } from './solve.js';

self.onmessage = async (e) => {
  const t0 = performance.now();
  const token = await solve(e.data).catch(() => null);
  self.postMessage({ token, ms: performance.now() - t0 });
};
