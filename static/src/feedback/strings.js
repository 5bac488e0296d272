// The feedback form's strings, in feedback.js. A page's `labels` win over these; missing keys
// fall back to English. feedback_exists and feedback_failed (any other failure;
// the form stays where trying again can help) are what the form says when a send fails.
export const STRINGS = {
  en: {
    feedback_question: 'How was this call?',
    feedback_up: 'Good',
    feedback_down: 'Bad',
    feedback_comment: 'Comment (optional)',
    feedback_send: 'Send',
    feedback_thanks: 'Thanks for your feedback!',
    feedback_exists: 'This call already has feedback.',
    feedback_failed: 'Your feedback was not sent.',
  },
  es: {
    feedback_question: '¿Qué tal fue la llamada?',
    feedback_up: 'Buena',
    feedback_down: 'Mala',
    feedback_comment: 'Comentario (opcional)',
    feedback_send: 'Enviar',
    feedback_thanks: '¡Gracias por tu opinión!',
    feedback_exists: 'Esta llamada ya fue valorada.',
    feedback_failed: 'Tu opinión no se envió.',
  },
  fr: {
    feedback_question: 'Comment s’est passé cet appel ?',
    feedback_up: 'Bien',
    feedback_down: 'Pas bien',
    feedback_comment: 'Commentaire (facultatif)',
    feedback_send: 'Envoyer',
    feedback_thanks: 'Merci pour votre avis !',
    feedback_exists: 'Cet appel a déjà reçu un avis.',
    feedback_failed: 'Votre avis n’a pas été envoyé.',
  },
  de: {
    feedback_question: 'Wie war dieser Anruf?',
    feedback_up: 'Gut',
    feedback_down: 'Schlecht',
    feedback_comment: 'Kommentar (optional)',
    feedback_send: 'Senden',
    feedback_thanks: 'Danke für Ihr Feedback!',
    feedback_exists: 'Dieser Anruf hat schon Feedback.',
    feedback_failed: 'Ihr Feedback wurde nicht gesendet.',
  },
};
