// v2 engine: retell-client-js-sdk 2.0.8 (LiveKit), same interface as the gateway engine.
// Works around the SDK's known defects (docs/retell.md):
// - startCall never rejects: we wait for call_started / error ourselves, with a timeout;
// - a denied mic still emits call_started: the loader asks for the mic before we run;
// - stopCall does nothing before the call connected: we disconnect the room directly;
// - a second startCall leaves the first room open: one client per call, connect once.
// Its `update` events hold only the last 5 utterances: v2-transcript.js keeps the whole call.
import { RetellWebClient } from 'retell-client-js-sdk';
import { windowMerge } from './v2-transcript.js';

const CONNECT_TIMEOUT = 20000;

function createLiveKitEngine(emit) {
  const client = new RetellWebClient();
  let done = false;
  let live = false;
  let timer, stream, merge;
  const tell = (items) => items.forEach((item) => emit('transcript', item));

  function close() {
    if (done) return;
    done = true;
    clearTimeout(timer);
    try {
      client.stopCall();
      client.room?.disconnect(); // stopCall skips this when never connected
    } catch (e) {
      console.warn('[retell-widget] livekit stop', e);
    }
  }
  function finish(event, data) {
    if (done) return;
    if (merge) tell(merge.end()); // the call is over: its last line too
    close();
    emit(event, data);
  }

  client.on('call_started', () => {
    if (done || live) return;
    live = true;
    clearTimeout(timer);
    client.startAudioPlayback().catch(() => {});
    emit('live');
  });
  client.on('call_ended', () => finish(live ? 'ended' : 'error', live ? { reason: 'agent_ended' } : { code: 'connect_failed' }));
  client.on('error', (message) => finish('error', { code: live ? 'call_dropped' : 'connect_failed', message }));
  client.on('update', (update) => done || !merge || tell(merge(update?.transcript)));
  client.on('audio', (samples) => {
    let sum = 0;
    for (const v of samples) sum += v * v;
    emit('level', Math.min(1, Math.sqrt(sum / samples.length) * 4));
  });

  return {
    connect(opts) {
      const { token } = opts;
      stream = opts.stream;
      if (opts.transcript) merge ||= windowMerge();
      if (client.room) return Promise.resolve(); // never a second room
      timer = setTimeout(() => finish('error', { code: 'connect_failed', message: 'timed out' }), CONNECT_TIMEOUT);
      const deviceId = stream.getAudioTracks()[0]?.getSettings().deviceId;
      return client.startCall({ accessToken: token, captureDeviceId: deviceId, emitRawAudioSamples: true });
    },
    setMuted(muted) {
      muted ? client.mute() : client.unmute();
      // Our own pre-flight mic stream stays open beside LiveKit's; keep both in step.
      for (const track of stream.getAudioTracks()) track.enabled = !muted;
    },
    hangUp: close,
  };
}

export default createLiveKitEngine;
