// Rendering the state into the page: DOM APIs and textContent only (no HTML from data).

import { clock, extensionLabel, memberLabel, t } from "./i18n.js";
import { sortedExtensions } from "./state.js";

const $ = (id) => document.getElementById(id);

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (name === "dataset") Object.assign(node.dataset, value);
    else if (name in node && name !== "ariaLabel") node[name] = value;
    else node.setAttribute(name === "ariaLabel" ? "aria-label" : name, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function duration(ms) {
  const seconds = Math.max(0, Math.floor(ms / 1000));
  const minutes = Math.floor(seconds / 60);
  return `${minutes}:${String(seconds % 60).padStart(2, "0")}`;
}

/** "Name 102", or just the number when the PBX knows no other name for it. */
function partyText(party) {
  return party.name && party.name !== party.number ? `${party.name} ${party.number}` : party.number;
}

export function renderAll(state, now) {
  renderExtensions(state);
  renderQueues(state, now);
  renderAgents(state);
  renderConferences(state);
  renderSms(state);
  renderEvents(state);
  $("last-id").textContent = state.lastId ? t("lastId", { id: state.lastId }) : "";
  document.body.dataset.lastId = String(state.lastId);
}

/** Lamps are updated in place, keyed by extension, so a focused lamp keeps the focus. */
function renderExtensions(state) {
  const list = $("lamps");
  const existing = new Map([...list.children].map((item) => [item.firstChild.dataset.exten, item]));
  const items = sortedExtensions(state).map((ext) => {
    const item = existing.get(ext.exten) ?? newLamp();
    updateLamp(item.firstChild, ext);
    return item;
  });
  items.forEach((item, index) => {
    if (list.children[index] !== item) list.insertBefore(item, list.children[index] ?? null);
  });
  $("lamps-empty").hidden = items.length > 0;
}

function newLamp() {
  const parts = ["exten", "label", "party", "since"].map((name) => el("span", { className: name }));
  return el("li", {}, el("button", { type: "button", className: "lamp" }, ...parts));
}

function updateLamp(button, ext) {
  const label = extensionLabel(ext.status);
  const party = ext.party ? partyText(ext.party) : "";
  Object.assign(button.dataset, { exten: ext.exten, status: String(ext.status), since: String(ext.since) });
  button.setAttribute("aria-disabled", String(ext.status !== 0));
  button.setAttribute("aria-label", [ext.exten, label, party].filter(Boolean).join(", "));
  const [exten, labelNode, partyNode, since] = button.children;
  exten.textContent = ext.exten;
  labelNode.textContent = label;
  partyNode.textContent = party || "\u00a0";
  since.textContent = t("since", { time: clock(ext.since) });
}

function renderQueues(state, now) {
  const rows = [...state.queues.values()]
    .sort((a, b) => a.name.localeCompare(b.name))
    .map((queue) =>
      el(
        "tr",
        { dataset: { queue: queue.name, calls: String(queue.calls) } },
        el("th", { scope: "row" }, queue.name),
        el("td", {}, String(queue.calls)),
        el("td", { className: "wait" }, queue.arrivals.length ? duration(now - queue.arrivals[0]) : "—"),
      ),
    );
  $("queue-rows").replaceChildren(...rows);
}

/** Only the longest-wait cells change every second; redrawing them keeps focus elsewhere. */
export function tickQueues(state, now) {
  for (const row of $("queue-rows").children) {
    const queue = state.queues.get(row.dataset.queue);
    if (queue) row.querySelector(".wait").textContent = queue.arrivals.length ? duration(now - queue.arrivals[0]) : "—";
  }
}

function renderAgents(state) {
  const rows = [...state.agents.values()]
    .sort((a, b) => a.queue.localeCompare(b.queue) || a.peer.localeCompare(b.peer, undefined, { numeric: true }))
    .map((agent) =>
      el(
        "tr",
        { dataset: { queue: agent.queue, peer: agent.peer, status: String(agent.status), paused: agent.paused ? "1" : "0" } },
        el("td", {}, agent.queue),
        el("th", { scope: "row" }, agent.name || agent.peer),
        el("td", {}, memberLabel(agent.status)),
        el("td", { className: agent.paused ? "paused" : "" }, agent.paused ? [t("yes"), agent.reason].filter(Boolean).join(": ") : t("no")),
        el("td", {}, String(agent.callsTaken)),
      ),
    );
  $("agent-rows").replaceChildren(...rows);
}

function renderConferences(state) {
  const blocks = [...state.conferences.entries()]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([name, members]) => {
      const list = [...members.values()].map((m) => el("li", {}, partyText(m)));
      return el(
        "div",
        { className: "conference", dataset: { conference: name, members: String(members.size) } },
        el("h3", {}, `${name} (${members.size})`),
        list.length ? el("ul", {}, ...list) : el("p", { className: "muted" }, t("empty")),
      );
    });
  $("conference-list").replaceChildren(...(blocks.length ? blocks : [el("p", { className: "muted" }, t("noConferences"))]));
}

function renderSms(state) {
  const items = [...state.sms.values()]
    // Newest change first, by event id: the same order on every page, however loaded.
    .sort((a, b) => b.eventId - a.eventId)
    .slice(0, 20)
    .map((sms) =>
      el(
        "li",
        { dataset: { sms: sms.id, status: sms.status } },
        el("span", { className: `sms-status s-${sms.status.toLowerCase()}` }, sms.status),
        ` ${sms.to} · ${sms.id}`,
      ),
    );
  $("sms-feed").replaceChildren(...items);
}

function renderEvents(state) {
  const items = state.events.map((event) => el("li", {}, el("code", {}, `#${event.id} ${event.text}`)));
  $("event-log").replaceChildren(...items);
}

/** Today's CDR rows, newest first; `onOpen(row)` plays a recording / shows its text. */
export function renderCalls(rows, recorded, transcribed, onOpen) {
  const shown = rows.slice(-100).reverse();
  const lines = shown.map((row) => {
    const cell = el("td");
    if (recorded.has(row.uniqueid) || transcribed.has(row.uniqueid)) {
      const button = el("button", { type: "button", className: "small" }, recorded.has(row.uniqueid) ? t("play") : t("transcript"));
      button.addEventListener("click", () => onOpen(row));
      cell.append(button);
    }
    return el(
      "tr",
      { dataset: { uniqueid: row.uniqueid } },
      el("td", {}, String(row.calldate).slice(11)),
      el("td", {}, row.src),
      el("td", {}, row.dst),
      el("td", {}, row.disposition),
      el("td", {}, duration(row.billsec * 1000)),
      cell,
    );
  });
  $("call-rows").replaceChildren(...lines);
  $("calls-info").textContent = t("callsShown", { shown: shown.length, total: rows.length });
}
