// v3 calls: the live transcript from the gateway's Server-Sent Events (README, "Live
// transcript"), opened once the call is live. It never breaks the call: a refusal (403), a
// stream that keeps failing or bad data only stop the transcript, with a console warning.
//   const close = openFeed({ url, token, base }, (item) => ...);  // item: {id, role, content, final}
// url: the answer's transcript_url, a path resolved against the endpoint (base).
const MAX_FAILURES = 5; // EventSource reconnects by itself (retry: 3000) until then

const warn = (why) => console.warn(`[retell-widget] live transcript stopped: ${why}; the call goes on`);

export function openFeed({ url, token, base }, onItem) {
  let source;
  try {
    const at = new URL(url, new URL(base, location.href));
    at.searchParams.set('token', token);
    source = new EventSource(at); // no cookies: withCredentials stays false
  } catch (e) {
    warn(e);
    return () => {};
  }
  let failures = 0;
  source.onopen = () => (failures = 0);
  source.addEventListener('transcript', (e) => {
    let item;
    try {
      item = JSON.parse(e.data);
    } catch {
      return;
    }
    const { id, role, content, final } = item || {};
    if (typeof id !== 'string' || (role !== 'agent' && role !== 'user') || typeof content !== 'string') return;
    onItem({ id, role, content, final: final === true });
  });
  // The gateway's last word (call ended, token expired, never live): nothing more will come.
  source.addEventListener('end', () => source.close());
  source.onerror = () => {
    // CLOSED: refused (403, another call's or an expired token) or not a stream at all.
    if (source.readyState !== EventSource.CLOSED && ++failures < MAX_FAILURES) return;
    source.close();
    warn(failures ? 'the stream keeps failing' : 'the gateway refused the stream');
  };
  return () => source.close();
}
