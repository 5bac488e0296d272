// v2 (LiveKit) calls: the SDK's `update` event holds only the last 5 utterances ({role,
// content}), the last one growing word by word. This keeps the whole call's transcript: the
// part of the window that overlaps the lines already known replaces them, what comes after
// them is new; a line is never added twice. Items have the engines' one shape, with ids
// stable for the call ("v2-<n>"): a line is final once a later one exists, or at end().
//   const merge = windowMerge();
//   merge(update.transcript) -> the items that changed, in order; merge.end() -> the same
const WINDOW = 5; // retell-client-js-sdk 2.0.8

const norm = (s) => s.toLowerCase().replace(/[^\p{L}\p{N}]+/gu, ' ').trim();

// The same utterance, seen again: equal, grown, or corrected (speech recognition revises the
// end of what it heard, so half a common start is enough).
function alike(a, b) {
  const x = norm(a.content);
  const y = norm(b.content);
  if (x.startsWith(y) || y.startsWith(x)) return true;
  let i = 0;
  while (i < x.length && x[i] === y[i]) i++;
  return i >= Math.min(x.length, y.length) / 2;
}

export function windowMerge() {
  const lines = []; // {id, role, content, final}

  // Where the window starts among the known lines: the smallest offset whose overlap matches
  // (the window moves on by one utterance at a time), by role and content, else by role only.
  function offset(win) {
    const n = lines.length;
    const fits = (k, same) =>
      win.every((u, j) => k + j >= n || (u.role === lines[k + j].role && same(u, lines[k + j])));
    // A window shorter than it can be is the whole call so far.
    if (win.length < WINDOW && fits(0, alike)) return 0;
    for (const same of [alike, () => true]) {
      for (let k = Math.max(0, n - win.length); k < n; k++) if (fits(k, same)) return k;
    }
    return Math.max(0, n - win.length); // nothing fits: replace rather than repeat
  }

  function merge(transcript) {
    if (!Array.isArray(transcript)) return [];
    const win = transcript
      .filter((u) => u && (u.role === 'agent' || u.role === 'user') && typeof u.content === 'string')
      .slice(-WINDOW);
    if (!win.length) return [];
    const k = offset(win);
    const changed = new Set();
    win.forEach((u, j) => {
      const line = lines[k + j];
      if (!line) {
        lines.push({ id: `v2-${k + j}`, role: u.role, content: u.content, final: false });
        changed.add(k + j);
      } else if (line.content !== u.content || line.role !== u.role) {
        Object.assign(line, { role: u.role, content: u.content });
        changed.add(k + j);
      }
    });
    lines.forEach((line, i) => {
      if (!line.final && i < lines.length - 1) {
        line.final = true;
        changed.add(i);
      }
    });
    return [...changed].sort((a, b) => a - b).map((i) => ({ ...lines[i] }));
  }

  merge.end = () => {
    const last = lines.at(-1);
    if (!last || last.final) return [];
    last.final = true;
    return [{ ...last }];
  };
  return merge;
}
