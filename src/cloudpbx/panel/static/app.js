// The operator panel: login, the live state from the WebSocket, and the REST actions.

import { Api, ApiError, errorText } from "./api.js";
import { currentLanguage, setLanguage, t } from "./i18n.js";
import { applyMessage, createState } from "./state.js";
import { EventStream } from "./stream.js";
import { renderAll, renderCalls, tickQueues } from "./view.js";

const $ = (id) => document.getElementById(id);
const SESSION_KEY = "cloudpbx.panel.key";
const SESSION_PBX = "cloudpbx.panel.pbx";

let session = null; // {api, pbx, state, stream}
let renderQueued = false;
let callsTimer = null;

function notice(text, kind = "info") {
  const box = $("notice");
  box.textContent = text;
  box.dataset.kind = kind;
  box.hidden = !text;
}

function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => {
    renderQueued = false;
    if (session) renderAll(session.state, Date.now());
  });
}

function showConnection(state, attempt) {
  const pill = $("connection");
  pill.dataset.state = state;
  pill.textContent = state === "reconnecting" ? t("reconnecting", { attempt }) : t(state === "refused" ? "offline" : state);
  if (state === "reconnecting") notice(t("reconnectingBanner"), "warning");
  else if (state === "live" && $("notice").dataset.kind === "warning") notice("");
  if (state === "refused") {
    const pbx = session.pbx;
    logout();
    $("login-error").textContent = t("wrongPbx", { pbx });
  }
}

async function login(pbx, key) {
  const api = new Api(key);
  $("login-error").textContent = "";
  try {
    // One REST call checks the key before anything is kept (a wrong key: 401 and why).
    // /cdr without dates is "today in the PBX's zone": the calls the panel lists.
    start(api, pbx, await api.json("/cdr"));
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    const message =
      error.status === 401 || error.status === 403
        ? t("wrongKey", { status: error.status, message: error.message })
        : error.status === 0
          ? t("unreachable", { message: error.message })
          : t("httpError", { status: error.status, message: error.message });
    $("login-error").textContent = message;
    sessionStorage.removeItem(SESSION_KEY);
  }
}

function start(api, pbx, cdrRows) {
  sessionStorage.setItem(SESSION_KEY, api.key);
  sessionStorage.setItem(SESSION_PBX, pbx);
  const state = createState(pbx);
  const stream = new EventStream({
    pbx,
    key: api.key,
    lastId: () => state.lastId,
    onMessage: (message) => {
      if (!applyMessage(state, message, Date.now())) return;
      scheduleRender();
      if (message.text && (message.text.subscriber?.statusValue === 0 || message.text.extstatus?.status === 0)) {
        refreshCallsSoon();
      }
    },
    onState: showConnection,
  });
  session = { api, pbx, state, stream };
  $("pbx-name").textContent = pbx;
  $("login").hidden = true;
  $("panel").hidden = false;
  $("logout").hidden = false;
  renderAll(state, Date.now());
  showCalls(cdrRows);
  stream.start();
}

function logout() {
  if (session) session.stream.stop();
  session = null;
  sessionStorage.removeItem(SESSION_KEY);
  $("panel").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  $("pbx-name").textContent = "";
  $("connection").dataset.state = "offline";
  $("connection").textContent = t("offline");
  notice("");
}

// -- today's calls ---------------------------------------------------------------------

function refreshCallsSoon() {
  clearTimeout(callsTimer);
  callsTimer = setTimeout(refreshCalls, 3000);
}

async function refreshCalls() {
  if (!session) return;
  try {
    showCalls(await session.api.json("/cdr"));
  } catch (error) {
    $("calls-info").textContent = t("httpError", { status: error.status, message: error.message });
  }
}

async function showCalls(rows) {
  const api = session.api;
  const [records, transcriptions] = await Promise.all([
    api.json("/record").catch(() => []),
    api.json("/transcription").catch(() => []),
  ]);
  if (!session || session.api !== api) return;
  const recorded = new Set(records.map((r) => r.uniqueid));
  const transcribed = new Set(transcriptions.map((r) => r.uniqueid));
  // CDR rows are written once, at the end of a call: same ids, same table. Not redrawing
  // it then keeps the keyboard focus on a Play button.
  const signature = [rows.length, rows.at(-1)?.uniqueid, recorded.size, transcribed.size, currentLanguage()].join();
  if (signature === session.callsSignature) return;
  session.callsSignature = signature;
  renderCalls(rows, recorded, transcribed, (row) => openCall(row, recorded.has(row.uniqueid), transcribed.has(row.uniqueid)));
}

async function openCall(row, hasRecording, hasTranscription) {
  const api = session.api;
  const audio = $("detail-audio");
  $("call-detail").hidden = false;
  for (const line of $("call-rows").children) line.classList.toggle("selected", line.dataset.uniqueid === row.uniqueid);
  $("detail-title").textContent = `${row.calldate} · ${row.src} → ${row.dst}`;
  $("detail-summary").textContent = hasTranscription ? t("loading") : t("noTranscript");
  $("detail-content").textContent = "";
  if (audio.src) URL.revokeObjectURL(audio.src);
  audio.removeAttribute("src");
  audio.hidden = !hasRecording;
  if (hasRecording) {
    // <audio src> cannot send the key; fetch with it and play the bytes from memory.
    const response = await api.request(`/record/${encodeURIComponent(row.uniqueid)}`);
    if (response.ok) audio.src = URL.createObjectURL(await response.blob());
    else $("detail-summary").textContent = t("httpError", { status: response.status, message: await errorText(response) });
  }
  if (hasTranscription) {
    try {
      const text = await api.json(`/transcription/${encodeURIComponent(row.uniqueid)}`);
      $("detail-summary").textContent = text.summary ?? "";
      $("detail-content").textContent = text.content ?? "";
    } catch (error) {
      $("detail-summary").textContent = t("httpError", { status: error.status, message: error.message });
    }
  }
}

// -- actions ---------------------------------------------------------------------------

/** The dial dialog, from a lamp (`exten`) or empty: an extension the history has not
 * shown yet (one that never changed) can still place a call. */
function openDial(exten) {
  if (exten) {
    const known = session.state.extensions.get(exten);
    if (!known || known.status !== 0) {
      notice(t("dialBusy", { exten }), "error");
      return;
    }
  }
  $("dial-title").textContent = exten ? t("dialTitle", { exten }) : t("dialNew");
  $("dial-from").value = exten;
  $("dial-error").textContent = "";
  $("dial-number").value = "";
  $("dial-dialog").showModal();
  (exten ? $("dial-number") : $("dial-from")).focus();
}

async function dial(event) {
  event.preventDefault();
  const cpa = $("dial-from").value.trim();
  const cpb = $("dial-number").value.trim();
  const query = new URLSearchParams({ cpa, cpb });
  $("dial-submit").disabled = true;
  try {
    const response = await session.api.request(`/dial?${query}`);
    if (response.ok) {
      $("dial-dialog").close();
      notice(t("dialOk", { cpa, cpb }), "ok");
    } else if (response.status === 500) {
      $("dial-error").textContent = t("dialRefused", { cpa, cpb });
    } else {
      $("dial-error").textContent = t("httpError", { status: response.status, message: await errorText(response) });
    }
  } catch (error) {
    $("dial-error").textContent = t("unreachable", { message: error.message });
  } finally {
    $("dial-submit").disabled = false;
  }
}

async function sendSms(event) {
  event.preventDefault();
  const form = new URLSearchParams({
    to: $("sms-to").value.trim(),
    body: $("sms-body").value,
    test: $("sms-test").checked ? "true" : "false",
  });
  const result = $("sms-result");
  result.className = "";
  try {
    const response = await session.api.request("/sendSMS", { method: "POST", body: form });
    const text = await response.clone().text();
    let answer = null;
    try {
      answer = JSON.parse(text);
    } catch {
      answer = null;
    }
    if (response.ok && answer?.responseId) {
      result.textContent = t("smsSent", { id: answer.responseId, status: answer.responseStatus });
      result.dataset.responseId = answer.responseId;
    } else {
      result.className = "error";
      result.textContent = t("smsFailed", { message: `HTTP ${response.status}: ${await errorText(response)}` });
    }
  } catch (error) {
    result.className = "error";
    result.textContent = t("unreachable", { message: error.message });
  }
}

// -- wiring ----------------------------------------------------------------------------

function init() {
  $("lang").value = currentLanguage();
  setLanguage(currentLanguage());
  $("lang").addEventListener("change", (event) => {
    setLanguage(event.target.value);
    if (session) {
      renderAll(session.state, Date.now());
      showConnection($("connection").dataset.state, session.stream.attempt);
      refreshCalls();
    }
  });
  const params = new URLSearchParams(location.search);
  $("login-pbx").value = sessionStorage.getItem(SESSION_PBX) ?? params.get("pbx") ?? "";
  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    login($("login-pbx").value.trim(), $("login-key").value.trim());
    $("login-key").value = "";
  });
  $("logout").addEventListener("click", logout);
  $("lamps").addEventListener("click", (event) => {
    const lamp = event.target.closest(".lamp");
    if (lamp && session) openDial(lamp.dataset.exten);
  });
  $("dial-new").addEventListener("click", () => openDial(""));
  $("dial-form").addEventListener("submit", dial);
  $("dial-cancel").addEventListener("click", () => $("dial-dialog").close());
  $("sms-form").addEventListener("submit", sendSms);
  $("calls-refresh").addEventListener("click", refreshCalls);
  setInterval(() => session && tickQueues(session.state, Date.now()), 1000);
  const key = sessionStorage.getItem(SESSION_KEY);
  const pbx = sessionStorage.getItem(SESSION_PBX);
  if (key && pbx) login(pbx, key);
}

init();
