// The verification states' strings, merged into the widget's own when verify.js loads (a page's
// `labels` still win). `verifying` is shown and announced while the check runs.
export const STRINGS = {
  en: {
    verifying: 'Checking your browser…',
    e_verification_failed: 'We could not verify your browser.',
    h_verification_failed: 'Please try again.',
    e_verification_unavailable: 'Verification is unavailable right now.',
    h_verification_unavailable: 'Please try again later.',
  },
  es: {
    verifying: 'Comprobando tu navegador…',
    e_verification_failed: 'No pudimos verificar tu navegador.',
    h_verification_failed: 'Vuelve a intentarlo.',
    e_verification_unavailable: 'La verificación no está disponible en este momento.',
    h_verification_unavailable: 'Vuelve a intentarlo más tarde.',
  },
  fr: {
    verifying: 'Vérification de votre navigateur…',
    e_verification_failed: 'Nous n’avons pas pu vérifier votre navigateur.',
    h_verification_failed: 'Veuillez réessayer.',
    e_verification_unavailable: 'La vérification est indisponible pour le moment.',
    h_verification_unavailable: 'Réessayez plus tard.',
  },
  de: {
    verifying: 'Ihr Browser wird geprüft…',
    e_verification_failed: 'Wir konnten Ihren Browser nicht verifizieren.',
    h_verification_failed: 'Bitte versuchen Sie es erneut.',
    e_verification_unavailable: 'Die Überprüfung ist gerade nicht verfügbar.',
    h_verification_unavailable: 'Bitte versuchen Sie es später erneut.',
  },
};
