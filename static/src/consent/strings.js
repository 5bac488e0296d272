// The consent step's strings, in consent.js. The consent text itself is the site's
// (consent.text). A page's `labels` win over these; missing keys fall back to English.
export const STRINGS = {
  en: { consent_agree: 'Agree and call', consent_link: 'Privacy policy', consent_new_tab: '(opens in a new tab)' },
  es: { consent_agree: 'Aceptar y llamar', consent_link: 'Política de privacidad', consent_new_tab: '(se abre en una pestaña nueva)' },
  fr: { consent_agree: 'Accepter et appeler', consent_link: 'Politique de confidentialité', consent_new_tab: '(s’ouvre dans un nouvel onglet)' },
  de: { consent_agree: 'Zustimmen und anrufen', consent_link: 'Datenschutzerklärung', consent_new_tab: '(öffnet in einem neuen Tab)' },
};
