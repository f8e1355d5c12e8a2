// The panel's picture of the PBX, folded from WebSocket messages (docs/panel.md).
// Pure: no DOM, no network. `now` is the time the panel received the message — the
// contract's messages carry no time of their own.

export const EVENT_LOG_SIZE = 50;

export function createState(pbx) {
  return {
    pbx,
    lastId: 0,
    extensions: new Map(), // exten → {exten, status, party: {number, name} | null, since}
    queues: new Map(), // name → {name, calls, arrivals: [ms, ...] oldest first}
    agents: new Map(), // "queue\u0000peer" → {queue, peer, name, status, paused, reason, callsTaken, membership}
    conferences: new Map(), // name → Map(channel → {name, number})
    sms: new Map(), // MsgId → {id, to, status, eventId: id of its latest message}
    events: [], // newest first: {id, text}
  };
}

/** Fold one message `{id, channel, text: {type: event, ...}}`; returns false for an old id. */
export function applyMessage(state, message, now) {
  if (typeof message.id !== "number" || message.id <= state.lastId) return false;
  state.lastId = message.id;
  const text = message.text && typeof message.text === "object" ? message.text : {};
  for (const [type, event] of Object.entries(text)) {
    const apply = HANDLERS[type];
    if (apply && event && typeof event === "object") apply(state, event, now, message.id);
  }
  state.events.unshift({ id: message.id, text: JSON.stringify(text) });
  state.events.length = Math.min(state.events.length, EVENT_LOG_SIZE);
  return true;
}

const HANDLERS = {
  subscriber(state, event, now) {
    const exten = extensionOf(state.pbx, String(event.peer ?? ""));
    if (!exten) return;
    const party =
      event.connectPeerNumber !== undefined
        ? { number: String(event.connectPeerNumber), name: String(event.connectPeerName ?? "") }
        : null;
    setExtension(state, exten, Number(event.statusValue), now, party);
  },
  extstatus(state, event, now) {
    const exten = String(event.exten ?? "");
    if (!exten) return;
    const known = state.extensions.get(exten);
    // Connecting (32) is a device state only `subscriber` carries: the hint of a phone
    // placing a call reads In Use (1), which must not hide that it is still connecting.
    const status = known?.status === 32 && Number(event.status) === 1 ? 32 : Number(event.status);
    // extstatus has no party: keep the one subscriber gave unless the phone is now free.
    const party = known && status !== 0 && status !== 4 ? known.party : null;
    setExtension(state, exten, status, now, party);
  },
  queue(state, event, now) {
    const name = String(event.peer ?? "");
    if (!name) return;
    const calls = Math.max(0, Number.parseInt(event.calls, 10) || 0);
    const queue = state.queues.get(name) ?? { name, calls: 0, arrivals: [] };
    // Callers leave a queue in order: a rise adds arrivals now, a fall drops the oldest.
    while (queue.arrivals.length < calls) queue.arrivals.push(now);
    queue.arrivals.splice(0, queue.arrivals.length - calls);
    queue.calls = calls;
    state.queues.set(name, queue);
  },
  qmember(state, event) {
    const queue = String(event.queue ?? "");
    const peer = String(event.peer ?? "");
    if (!queue || !peer) return;
    const key = `${queue}\u0000${peer}`;
    const agent = state.agents.get(key) ?? { queue, peer, reason: "" };
    agent.name = String(event.m_name ?? agent.name ?? "");
    agent.status = Number.parseInt(event.m_status, 10);
    agent.paused = event.m_paused === "1";
    agent.callsTaken = Number.parseInt(event.m_ct, 10) || 0;
    agent.membership = String(event.m_mbshp ?? "");
    // m_reason comes only with a pause change: keep it while paused, forget it after.
    if (!agent.paused) agent.reason = "";
    else if (event.m_reason !== undefined) agent.reason = String(event.m_reason);
    state.agents.set(key, agent);
  },
  cmember(state, event) {
    const conference = String(event.conference ?? "");
    const channel = String(event.channel ?? "");
    if (!conference || !channel) return;
    const members = state.conferences.get(conference) ?? new Map();
    if (event.action === "remove") members.delete(channel);
    else members.set(channel, { name: String(event.callerIDName ?? ""), number: String(event.callerIDNum ?? "") });
    state.conferences.set(conference, members);
  },
  smsSendResponse(state, event, _now, eventId) {
    const id = String(event.MsgId ?? "");
    if (!id) return;
    const known = state.sms.get(id);
    state.sms.set(id, { id, to: String(event.to ?? known?.to ?? ""), status: String(event.status ?? ""), eventId });
  },
};

/** `MojaCentrala-101` → `101` (the contract's peer naming); another PBX's peer → "". */
export function extensionOf(pbx, peer) {
  const prefix = `${pbx}-`;
  return peer.startsWith(prefix) ? peer.slice(prefix.length) : "";
}

function setExtension(state, exten, status, now, party) {
  const known = state.extensions.get(exten);
  const since = known && known.status === status ? known.since : now;
  state.extensions.set(exten, { exten, status, party, since });
}

/** Extensions sorted as numbers where they are numbers. */
export function sortedExtensions(state) {
  return [...state.extensions.values()].sort((a, b) =>
    a.exten.localeCompare(b.exten, undefined, { numeric: true }),
  );
}
