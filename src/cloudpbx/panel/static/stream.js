// The WebSocket stream with resume: every (re)connection asks for the messages after the
// last id the panel has folded, so a drop or a server restart loses nothing still in the
// server's history (docs/websocket.md). The first connection asks from 0: the history is
// how the panel learns the state at load (docs/panel.md).

const RETRY_MS = [250, 500, 1000, 2000, 4000];

export class EventStream {
  /**
   * @param {object} options
   * @param {string} options.pbx  PBX name
   * @param {string} options.key  API key (the contract's `pbxkey`: the only place it goes in a URL)
   * @param {() => number} options.lastId  the newest id folded so far
   * @param {(message: object) => void} options.onMessage
   * @param {(state: string, attempt: number) => void} options.onState  "connecting" | "live" | "reconnecting" | "refused"
   */
  constructor(options) {
    this.options = options;
    this.socket = null;
    this.attempt = 0;
    this.everOpened = false;
    this.timer = null;
    this.stopped = false;
    this.reconnectNow = () => this.retry(0);
  }

  start() {
    window.addEventListener("online", this.reconnectNow);
    this.open();
  }

  stop() {
    this.stopped = true;
    window.removeEventListener("online", this.reconnectNow);
    clearTimeout(this.timer);
    if (this.socket) this.socket.close(1000);
  }

  url() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const query = new URLSearchParams({
      pbxkey: this.options.key,
      last_event_id: String(this.options.lastId()),
    });
    return `${scheme}//${location.host}/ws/pbx_${encodeURIComponent(this.options.pbx)}?${query}`;
  }

  open() {
    clearTimeout(this.timer);
    if (this.stopped) return;
    this.options.onState(this.everOpened ? "reconnecting" : "connecting", this.attempt);
    const socket = new WebSocket(this.url());
    this.socket = socket;
    let opened = false;
    socket.addEventListener("open", () => {
      opened = true;
      this.everOpened = true;
      this.attempt = 0;
      this.options.onState("live", 0);
    });
    socket.addEventListener("message", (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return; // not a contract message; nothing to fold
      }
      this.options.onMessage(message);
    });
    socket.addEventListener("close", (event) => {
      if (this.socket !== socket || this.stopped) return;
      this.socket = null;
      if (!this.everOpened && !opened) {
        // Refused before the upgrade (the key was checked over REST already, so the
        // usual cause is a PBX name the key does not open); browsers hide the status.
        this.options.onState("refused", 0);
        return;
      }
      // 4008 (too slow) resumes at once; anything else (1012 restart, a drop) backs off.
      this.retry(event.code === 4008 ? 0 : RETRY_MS[Math.min(this.attempt, RETRY_MS.length - 1)]);
    });
  }

  retry(delay) {
    if (this.stopped || this.socket) return;
    this.attempt += 1;
    this.options.onState("reconnecting", this.attempt);
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.open(), delay);
  }
}
