// English strings, built into the loader. Other languages are files of their own
// (src/i18n/<lang>.js), fetched beside the stylesheet only on pages in that language.
// Built-in strings. Keys: e_<code> is an error message, h_<code> its way forward ({s}: the
// seconds left of Retry-After); `ready` is announced when a disabled retry becomes available.
// The verification strings travel with verify.js (src/verify/strings.js).
export const LANGS = ['es', 'fr', 'de'];
export const STRINGS = {
  en: {
    call: 'Talk to our AI agent',
    open_chat: 'Chat with our AI agent', // the launcher in chat-only mode
    type: 'Type instead', // hybrid: beside the launcher, and after a microphone error
    title: 'AI voice agent',
    mic: 'Please allow microphone access…',
    connecting: 'Connecting…',
    live: 'Connected',
    speaking: 'Agent speaking',
    ended: 'Call ended',
    mute: 'Mute',
    hangup: 'End call',
    cancel: 'Cancel',
    retry: 'Try again',
    again: 'Call again',
    close: 'Close',
    e_mic_denied: 'Microphone access was blocked.',
    h_mic_denied: 'Allow the microphone in your browser’s address bar (the lock or camera icon), then try again.',
    e_no_mic: 'No working microphone was found.',
    h_no_mic: 'Connect a microphone or close other apps using it, then try again.',
    e_rate_limited: 'All lines are busy right now.',
    h_rate_limited: 'Please try again in {s} seconds.',
    e_busy: 'All lines are busy.',
    h_busy: 'Please try again in a minute.',
    e_budget_exhausted: 'Calls are paused on this site for now.',
    h_budget_exhausted: 'Please try again later.',
    ready: 'You can try again now.',
    e_unavailable: 'The call service is temporarily unavailable.',
    h_unavailable: 'Please try again in a few minutes.',
    e_unreachable: 'This site is not set up for calls, or the call service is unreachable.',
    h_unreachable: 'Check your connection and try again later.',
    e_not_allowed: 'Calls are not enabled for this page.',
    h_not_allowed: 'Please contact the site owner.',
    e_connect_failed: 'The call could not connect.',
    h_connect_failed: 'Your network may be blocking calls. Try again or use another network.',
    e_call_dropped: 'The call was dropped.',
    h_call_dropped: 'Check your connection and call again.',
  },
};
