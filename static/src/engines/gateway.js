// v3 gateway engine: plain RTCPeerConnection + WHIP-style signalling (POST offer,
// PATCH trickle, DELETE hang-up). Interface shared with the LiveKit engine:
//   factory(emit) -> { connect({token, callId, url, iceServers, stream}), setMuted(bool), hangUp() }
//   emit('live') | emit('level', 0..1) | emit('ended', {reason}) | emit('error', {code, message})
//   emit('transcript', {id, role, content, final}) once live, when connect() had opts.transcript
// Optional: prepare(stream), called while the token request is in flight, builds the peer
// connection and its offer then, so connect() only has to send it.
import { openFeed } from './transcript-feed.js';

const NOT_READY_WINDOW = 15000; // 404 = agent's room not up yet; retry this long
const CONNECT_TIMEOUT = 20000;

// Open the connection to the signalling origin while the offer is being made. The hint goes
// at once (the connection stays): nothing is left in the page. Uncredentialed, as our fetches.
function preconnect(url) {
  const link = document.createElement('link');
  link.rel = 'preconnect';
  link.href = new URL(url).origin;
  link.crossOrigin = 'anonymous';
  document.head.append(link);
  link.remove();
}

function createGatewayEngine(emit) {
  let pc, base, auth, sid, stream, ctx, audio, poll, timer, offer;
  let words, feed; // the live transcript: where it comes from, and its stream's close()
  let done = false;
  let live = false;
  const queue = [];

  const request = (method, path, body) =>
    fetch(base + path, {
      method,
      headers: body ? { Authorization: auth, 'Content-Type': 'application/json' } : { Authorization: auth },
      body: body && JSON.stringify(body),
      credentials: 'omit',
      cache: 'no-store',
      keepalive: method === 'DELETE', // survives page unload
    });

  const trickle = (candidate) =>
    request('PATCH', `/${sid}`, { candidate }).catch((e) => console.warn('[retell-widget] trickle', e));

  function close() {
    done = true;
    clearTimeout(timer);
    clearInterval(poll);
    feed?.();
    if (pc) pc.close();
    if (ctx) ctx.close().catch(() => {});
    if (audio) audio.srcObject = null;
    if (sid) request('DELETE', `/${sid}`).catch(() => {});
    sid = null;
  }

  function finish(event, data) {
    if (done) return;
    close();
    emit(event, data);
  }
  const fail = (code, message) => finish('error', { code: live ? 'call_dropped' : code, message });

  function goLive() {
    if (live || done) return;
    live = true;
    clearTimeout(timer);
    emit('live');
    if (words?.url) feed = openFeed(words, (item) => done || emit('transcript', item));
  }

  // Remote audio plays through an element; Chrome feeds Web Audio from remote
  // WebRTC tracks only while they are also played that way.
  function onTrack(event) {
    const remote = event.streams[0] || new MediaStream([event.track]);
    audio = new Audio();
    audio.autoplay = true;
    audio.srcObject = remote;
    audio.play().catch(() => {});
    ctx = new AudioContext();
    ctx.resume().catch(() => {});
    const analyser = ctx.createAnalyser();
    analyser.fftSize = 512;
    ctx.createMediaStreamSource(remote).connect(analyser);
    const buf = new Float32Array(analyser.fftSize);
    poll = setInterval(() => {
      analyser.getFloatTimeDomainData(buf);
      let sum = 0;
      for (const v of buf) sum += v * v;
      emit('level', Math.min(1, Math.sqrt(sum / buf.length) * 4));
    }, 100);
  }

  // Hung up while the offer was in flight: the gateway may still have made a session.
  async function hangUpLate(res) {
    if (res.ok) {
      sid = (await res.json()).session_id;
      close();
    }
  }

  // Needs only the microphone. No ICE servers yet (they come with the token), so nothing is
  // gathered here: until setLocalDescription() in connect(), nothing goes on the network.
  function prepare(mic) {
    if (pc || done) return;
    stream = mic;
    pc = new RTCPeerConnection();
    for (const track of stream.getAudioTracks()) pc.addTrack(track, stream);
    pc.ontrack = onTrack;
    const control = pc.createDataChannel('control');
    control.onmessage = (e) => {
      let msg;
      try {
        msg = JSON.parse(e.data);
      } catch {
        return;
      }
      if (msg.type === 'status' && (msg.state === 'ended' || msg.state === 'replaced')) {
        finish('ended', { reason: msg.state === 'ended' ? 'agent_ended' : 'replaced' });
      }
    };
    // The channel closing without a status message means the call went away.
    control.onclose = () => fail('connect_failed', 'control channel closed');
    control.onopen = goLive;
    pc.onicecandidate = (e) => {
      if (!e.candidate) return;
      const c = e.candidate.toJSON();
      sid ? trickle(c) : queue.push(c);
    };
    pc.onconnectionstatechange = () => {
      const s = pc.connectionState;
      // Live once the control channel opens; a gateway without one gets a short grace.
      if (s === 'connected') setTimeout(goLive, 3000);
      else if (s === 'failed' || s === 'closed') fail('connect_failed', `connection ${s}`);
    };
    offer = pc.createOffer();
    offer.catch(() => {}); // connect() awaits it and reports the failure
  }

  async function connect(opts) {
    if (!opts.url) return fail('connect_failed', 'no gateway_url in the token response');
    base = String(opts.url).replace(/\/+$/, '') + '/v1/webrtc/sessions';
    auth = `Bearer ${opts.token}`;
    words = opts.transcript;
    preconnect(base);
    timer = setTimeout(() => fail('connect_failed', 'timed out'), CONNECT_TIMEOUT);
    prepare(opts.stream);
    // Before setLocalDescription starts gathering, so the token's STUN/TURN servers are used.
    pc.setConfiguration({ iceServers: opts.iceServers || [] });
    await pc.setLocalDescription(await offer);

    const deadline = Date.now() + NOT_READY_WINDOW;
    let delay = 150;
    let res;
    for (;;) {
      res = await request('POST', '', {
        call_id: opts.callId,
        identity: `web-${opts.callId}`,
        sdp: pc.localDescription.sdp,
      });
      if (done) return hangUpLate(res);
      if (res.status !== 404 || Date.now() + delay > deadline) break;
      await new Promise((r) => setTimeout(r, delay));
      if (done) return;
      delay = Math.min(delay * 2, 1000);
    }
    if (!res.ok) return fail('connect_failed', `gateway answered HTTP ${res.status}`);
    const answer = await res.json();
    sid = answer.session_id;
    if (done) return close();
    await pc.setRemoteDescription({ type: 'answer', sdp: answer.sdp });
    queue.splice(0).forEach(trickle);
  }

  return {
    prepare,
    connect,
    setMuted(muted) {
      // A disabled track sends silence: the uplink carries no voice.
      for (const track of stream.getAudioTracks()) track.enabled = !muted;
    },
    hangUp: close,
  };
}

export default createGatewayEngine;
