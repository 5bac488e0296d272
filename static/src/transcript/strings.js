// The transcript's strings, in transcript.js. A page's `labels` win over these (`transcript`,
// and `you` / `agent`, which the chat uses too); missing keys fall back to English.
export const STRINGS = {
  en: { transcript: 'Transcript', you: 'You', agent: 'Agent' },
  es: { transcript: 'Transcripción', you: 'Tú', agent: 'Agente' },
  fr: { transcript: 'Transcription', you: 'Vous', agent: 'Agent' },
  de: { transcript: 'Transkript', you: 'Sie', agent: 'Agent' },
};
