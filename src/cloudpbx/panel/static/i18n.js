// Polish and English texts. Static labels carry data-i18n="key"; code calls t(key, vars).

const TEXTS = {
  pl: {
    title: "Panel centrali", language: "Język", logout: "Wyloguj",
    loginTitle: "Zaloguj się kluczem API", pbxName: "Nazwa centrali", apiKey: "Klucz API",
    connect: "Połącz", keyNote: "Klucz zostaje tylko w tej karcie przeglądarki (sessionStorage).",
    extensions: "Numery wewnętrzne", dialHint: "Kliknij wolny numer, aby zadzwonić.",
    noExtensions: "Brak zdarzeń numerów w historii.",
    queues: "Kolejki", queue: "Kolejka", waiting: "Czeka", longestWait: "Najdłużej",
    agents: "Agenci", agent: "Agent", state: "Stan", paused: "Pauza", callsTaken: "Odebrane",
    conferences: "Konferencje", noConferences: "Brak konferencji w historii.", empty: "pusta",
    sms: "SMS", smsTo: "Numer", smsBody: "Treść", smsTest: "test (nie doręczany, bezpłatny)",
    smsSend: "Wyślij SMS", smsSent: "SMS przyjęty: {id} ({status})",
    smsFailed: "SMS odrzucony: {message}",
    calls: "Dzisiejsze połączenia", refresh: "Odśwież", time: "Godzina", from: "Od", to: "Do",
    result: "Wynik", billsec: "Czas", recording: "Nagranie", play: "Odtwórz",
    transcript: "Transkrypcja", noTranscript: "Brak transkrypcji.",
    callsShown: "{shown} z {total} połączeń", loading: "Wczytywanie…",
    events: "Ostatnie zdarzenia", lastId: "ostatnie zdarzenie #{id}",
    dialTitle: "Zadzwoń z {exten}", dialNew: "Nowe połączenie…", dialFrom: "Z numeru wewnętrznego",
    dialNumber: "Numer docelowy", cancel: "Anuluj",
    call: "Zadzwoń", dialOk: "Centrala przyjęła połączenie: dzwoni {cpa}, potem {cpb}.",
    dialRefused: "Centrala odrzuciła połączenie z {cpa} do {cpb} (Action Error).",
    dialBusy: "Numer {exten} nie jest wolny.",
    offline: "rozłączony", live: "na żywo", connecting: "łączenie…",
    reconnecting: "łączenie ponownie (próba {attempt})…",
    reconnectingBanner: "Utracono połączenie z serwerem — łączenie ponownie…",
    wrongKey: "Nieprawidłowy klucz API (HTTP {status}): {message}",
    wrongPbx: "Nie można otworzyć strumienia zdarzeń centrali {pbx}. Sprawdź nazwę centrali: klucz otwiera tylko swoją centralę.",
    unreachable: "Serwer jest nieosiągalny: {message}",
    httpError: "Błąd HTTP {status}: {message}",
    ext: { 0: "Wolny", 1: "Rozmawia", 2: "Zajęty", 4: "Niedostępny", 8: "Dzwoni", 16: "Zawieszony", 32: "Łączy", unknown: "Nieznany ({status})" },
    member: { 0: "Nieznany", 1: "Wolny", 2: "Rozmawia", 3: "Zajęty", 4: "Nieprawidłowy", 5: "Niedostępny", 6: "Dzwoni", 7: "Dzwoni w trakcie rozmowy", 8: "Zawieszony" },
    since: "od {time}", yes: "tak", no: "nie", static: "stały", dynamic: "dynamiczny",
  },
  en: {
    title: "PBX panel", language: "Language", logout: "Log out",
    loginTitle: "Log in with an API key", pbxName: "PBX name", apiKey: "API key",
    connect: "Connect", keyNote: "The key stays in this browser tab only (sessionStorage).",
    extensions: "Extensions", dialHint: "Click an idle extension to place a call.",
    noExtensions: "No extension events in the history yet.",
    queues: "Queues", queue: "Queue", waiting: "Waiting", longestWait: "Longest wait",
    agents: "Agents", agent: "Agent", state: "State", paused: "Paused", callsTaken: "Calls taken",
    conferences: "Conferences", noConferences: "No conferences in the history yet.", empty: "empty",
    sms: "SMS", smsTo: "Number", smsBody: "Text", smsTest: "test (not delivered, not charged)",
    smsSend: "Send SMS", smsSent: "SMS accepted: {id} ({status})",
    smsFailed: "SMS refused: {message}",
    calls: "Today's calls", refresh: "Refresh", time: "Time", from: "From", to: "To",
    result: "Result", billsec: "Talk", recording: "Recording", play: "Play",
    transcript: "Transcription", noTranscript: "No transcription.",
    callsShown: "{shown} of {total} calls", loading: "Loading…",
    events: "Latest events", lastId: "last event #{id}",
    dialTitle: "Call from {exten}", dialNew: "New call…", dialFrom: "From extension",
    dialNumber: "Number to call", cancel: "Cancel",
    call: "Call", dialOk: "The PBX accepted the call: {cpa} rings, then {cpb}.",
    dialRefused: "The PBX refused the call from {cpa} to {cpb} (Action Error).",
    dialBusy: "Extension {exten} is not idle.",
    offline: "disconnected", live: "live", connecting: "connecting…",
    reconnecting: "reconnecting (attempt {attempt})…",
    reconnectingBanner: "Lost the connection to the server — reconnecting…",
    wrongKey: "Wrong API key (HTTP {status}): {message}",
    wrongPbx: "Cannot open the event stream of PBX {pbx}. Check the PBX name: a key opens only its own PBX.",
    unreachable: "The server cannot be reached: {message}",
    httpError: "HTTP error {status}: {message}",
    ext: { 0: "Idle", 1: "In use", 2: "Busy", 4: "Unavailable", 8: "Ringing", 16: "On hold", 32: "Connecting", unknown: "Unknown ({status})" },
    member: { 0: "Unknown", 1: "Idle", 2: "In use", 3: "Busy", 4: "Invalid", 5: "Unavailable", 6: "Ringing", 7: "Ringing while in use", 8: "On hold" },
    since: "since {time}", yes: "yes", no: "no", static: "static", dynamic: "dynamic",
  },
};

const LANGUAGE_KEY = "cloudpbx.panel.lang";
let language = pickLanguage();

function pickLanguage() {
  const saved = localStorage.getItem(LANGUAGE_KEY);
  if (saved && saved in TEXTS) return saved;
  return (navigator.language || "en").toLowerCase().startsWith("pl") ? "pl" : "en";
}

export function currentLanguage() {
  return language;
}

export function setLanguage(code) {
  language = code in TEXTS ? code : "en";
  localStorage.setItem(LANGUAGE_KEY, language);
  document.documentElement.lang = language;
  for (const node of document.querySelectorAll("[data-i18n]")) {
    node.textContent = t(node.dataset.i18n);
  }
}

/** The text for `key` in the current language, `{name}` replaced from `vars`. */
export function t(key, vars = {}) {
  const text = TEXTS[language][key] ?? TEXTS.en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => String(vars[name] ?? ""));
}

export function extensionLabel(status) {
  const names = TEXTS[language].ext;
  return names[status] ?? names.unknown.replace("{status}", String(status));
}

export function memberLabel(status) {
  return TEXTS[language].member[status] ?? String(status);
}

export function clock(ms) {
  return new Date(ms).toLocaleTimeString(language === "pl" ? "pl-PL" : "en-GB");
}
