// ALTCHA v1 proof of work: the first number in 0..maxnumber with
// hex(SHA-256(salt + String(number))) === challenge, sent as base64 of JSON
// {algorithm, challenge, number, salt, signature} (docs/verification.md).
// WebCrypto digests are asynchronous: they are issued in batches so their round trips
// overlap, and the thread (a worker, or the page as a fallback) gets a turn between batches.
const BATCH = 500;

export async function solve(c, cancelled = () => false) {
  const want = c.challenge.toLowerCase();
  const enc = new TextEncoder();
  const max = Math.min(c.maxnumber, 1e7);
  for (let n = 0; n <= max && !cancelled(); n += BATCH) {
    const batch = [];
    for (let i = n; i <= Math.min(n + BATCH - 1, max); i++) {
      batch.push(crypto.subtle.digest('SHA-256', enc.encode(c.salt + i)));
    }
    const hashes = await Promise.all(batch);
    for (let k = 0; k < hashes.length; k++) {
      const h = new Uint8Array(hashes[k]);
      // Compare the first byte before building any hex: almost every candidate fails there.
      if (h[0] !== parseInt(want.slice(0, 2), 16)) continue;
      if ([...h].map((b) => b.toString(16).padStart(2, '0')).join('') !== want) continue;
      const { algorithm, challenge, salt, signature } = c;
      return btoa(JSON.stringify({ algorithm, challenge, number: n + k, salt, signature }));
    }
  }
  return null;
}
