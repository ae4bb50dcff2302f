// @ts-check
/**
 * Herald browser client: connect to a Herald bridge, subscribe to channels,
 * publish, read history and presence. Reconnects by itself with backoff and
 * resumes every subscription from the last position it saw, so
 * publications missed during a drop arrive once, in order; when they cannot,
 * the subscription says so (`recovered: false`) and the app refetches.
 *
 * The connection is a WebSocket where it can be; where the upgrade fails (a
 * proxy that does not pass WebSockets), the client falls back to HTTP
 * streaming (a fetch with a streaming body), then to SSE (EventSource),
 * with the same API, events, reconnect and recovery; on the last two the
 * client's own frames go by POST to the bridge's /command endpoint. The
 * `transports` option sets the order, or forces one.
 *
 * No dependencies and no build step: this file is the package. Types are in
 * herald.d.ts next to it.
 *
 * ```js
 * import { Herald } from "/herald.js";
 * const herald = new Herald("/ws", { getToken: () => fetch("/token").then((r) => r.text()) });
 * herald.on("connected", (ctx) => console.log("connected as", ctx.user));
 * const sub = herald.subscribe("chat:lobby", {
 *   onPublication: (pub) => console.log(pub.offset, pub.data),
 *   onSubscribed: (ctx) => { if (ctx.resubscribed && !ctx.recovered) reload(); },
 * });
 * herald.connect();
 * await herald.publish("chat:lobby", { text: "hi" });
 * ```
 *
 * @module @herald-io/client
 */

/** The WebSocket subprotocol: protobuf-JSON frames in text messages. */
const SUBPROTOCOL = "herald.json";

/** Transports, in the default order of preference. */
const TRANSPORTS = Object.freeze(["websocket", "http_stream", "sse"]);

/** A command POST stays below the bridge's default max_frame (64 KiB). */
const MAX_COMMAND_BYTES = 60000;

/**
 * Codes of errors raised by the client itself; the server's codes are
 * 100-299 (see docs/protocol.md).
 */
export const ErrorCode = Object.freeze({
  /** No reply within the request timeout. */
  TIMEOUT: 1,
  /** The connection closed before the reply arrived. */
  CONNECTION_CLOSED: 2,
  /** The client is disconnected (and not reconnecting). */
  NOT_CONNECTED: 3,
});

/**
 * Close codes after which reconnecting cannot help unless something changes
 * (a new token, a new page). Every close by the bridge is preceded by a
 * DisconnectFrame whose `reconnect` decides instead; this table covers a
 * close without one. The full table is in docs/protocol.md.
 */
const NO_RECONNECT = new Set([
  4000, // bad_frame: protocol violation
  4001, // invalid_token
  4003, // forbidden
  4005, // disconnected by the backend
]);

/** Close code of an expired token: worth retrying only with getToken. */
const TOKEN_EXPIRED = 4002;

/** A failed request: a server ErrorFrame or one of {@link ErrorCode}. */
export class HeraldError extends Error {
  /**
   * @param {number} code
   * @param {string} message
   * @param {boolean} [temporary]
   */
  constructor(code, message, temporary = false) {
    super(message);
    this.name = "HeraldError";
    /** Numeric code: {@link ErrorCode} or the server's 100-299. */
    this.code = code;
    /** Whether retrying the same request later may succeed. */
    this.temporary = temporary;
  }
}

/** Minimal event emitter: `on` returns a function that removes the handler. */
class Emitter {
  /** @type {Map<string, Set<Function>>} */
  #handlers = new Map();

  /**
   * Adds a handler for an event.
   * @param {string} event
   * @param {Function} fn
   * @returns {() => void} a function that removes the handler
   */
  on(event, fn) {
    let set = this.#handlers.get(event);
    if (!set) this.#handlers.set(event, (set = new Set()));
    set.add(fn);
    return () => this.off(event, fn);
  }

  /**
   * Removes a handler added by {@link on}.
   * @param {string} event
   * @param {Function} fn
   */
  off(event, fn) {
    this.#handlers.get(event)?.delete(fn);
  }

  /**
   * Calls the handlers of event. A throwing handler is reported and does not
   * stop the others or the client.
   * @protected
   * @param {string} event
   * @param {any} arg
   */
  _emit(event, arg) {
    const set = this.#handlers.get(event);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(arg);
      } catch (err) {
        reportError(err);
      }
    }
  }
}

/** @param {unknown} err */
function reportError(err) {
  if (typeof globalThis.reportError === "function") globalThis.reportError(err);
  else setTimeout(() => { throw err; });
}

/**
 * A Herald connection. Create it, add handlers and subscriptions, then call
 * {@link Herald#connect}. Subscriptions made before connecting are sent once
 * connected, and again after every reconnect.
 */
export class Herald extends Emitter {
  /**
   * Connection state: "disconnected", "connecting" (including waiting to
   * reconnect) or "connected".
   * @type {"disconnected" | "connecting" | "connected"}
   */
  state = "disconnected";
  /** Connection id given by the server (empty until connected). */
  client = "";
  /** User id of the connection (empty when anonymous). */
  user = "";

  /** @type {Required<Omit<import("./herald").HeraldOptions, "token" | "getToken" | "pingInterval" | "WebSocket" | "EventSource" | "fetch" | "sseURL" | "streamURL" | "commandURL">> & import("./herald").HeraldOptions} */
  #opts;
  #url = "";
  /** @type {Link | null} the current connection, on one of the transports */
  #link = null;
  /** @type {readonly string[]} */
  #transports;
  /** Index in #transports of the transport the next attempt uses. */
  #ti = 0;
  /** The transport of the last connection that opened. */
  #transport = "";
  /** The last SSE event id received: resumes the personal channel on SSE. */
  #lastEventId = "";
  /** Incremented whenever the current socket is abandoned; stale callbacks compare it. */
  #gen = 0;
  #nextId = 1;
  /** @type {Map<number, {resolve: (v: any) => void, reject: (e: HeraldError) => void, timer: any}>} */
  #pending = new Map();
  /** @type {Map<string, Subscription>} */
  #subs = new Map();
  /** Channels the server subscribed this connection to (the personal channel). */
  #serverSubs = new Set();
  /**
   * The personal channel's last seen position, kept across reconnects: a
   * reconnect of the same user sends it as `personal_since`, and the server
   * replays what was published to `user:<id>` while the socket was down.
   * @type {{user: string, last: import("./herald").StreamPosition | null, recoverable: boolean} | null}
   */
  #personal = null;
  /** Whether the current connect frame carried personal_since. */
  #personalResumed = false;
  /** @type {Array<{resolve: () => void, reject: (e: HeraldError) => void}>} */
  #waiters = [];
  #attempt = 0;
  #closing = false;
  /** @type {string | undefined} */
  #token;
  #tokenUsed = false;
  /** @type {{code: number, reason: string, reconnect: boolean, delay: number} | null} */
  #advice = null;
  #lastRecv = 0;
  /** @type {any} */ #reconnectTimer;
  /** @type {any} */ #pingTimer;
  /** @type {any} */ #refreshTimer;
  #onOnline = () => {
    if (this.state === "connecting" && this.#reconnectTimer) {
      clearTimeout(this.#reconnectTimer);
      this.#reconnectTimer = undefined;
      this.#open();
    }
  };

  /**
   * @param {string} [url] WebSocket URL of the bridge; relative URLs and
   *   http(s) URLs are resolved against the page. Default "/ws". The other
   *   transports' endpoints are its siblings (/sse, /stream, /command)
   *   unless the options name them.
   * @param {import("./herald").HeraldOptions} [options]
   */
  constructor(url, options = {}) {
    super();
    this.#opts = {
      name: "herald-js/1",
      timeout: 10000,
      minReconnectDelay: 500,
      maxReconnectDelay: 20000,
      transports: TRANSPORTS,
      ...options,
    };
    const ts = this.#opts.transports.filter((t) => TRANSPORTS.includes(t));
    if (!ts.length) throw new Error(`herald: transports must name some of ${TRANSPORTS.join(", ")}`);
    this.#transports = ts;
    this.#token = options.token;
    this.#url = resolveURL(url ?? "/ws");
  }

  /** The WebSocket URL in use. */
  get url() {
    return this.#url;
  }

  /**
   * The transport of the current (or last) connection: "websocket",
   * "http_stream" or "sse"; empty before the first one opened.
   */
  get transport() {
    return this.#transport;
  }

  /**
   * Starts connecting (and reconnecting after drops) until
   * {@link Herald#disconnect}. Does nothing if already started.
   */
  connect() {
    if (this.state !== "disconnected") return;
    this.#closing = false;
    this.#attempt = 0;
    globalThis.addEventListener?.("online", this.#onOnline);
    this.#setState("connecting", { code: 0, reason: "connect called", reconnect: true });
    this.#open();
  }

  /**
   * Closes the connection and stops reconnecting. Subscriptions are kept and
   * resume on the next {@link Herald#connect}.
   */
  disconnect() {
    this.#closing = true;
    globalThis.removeEventListener?.("online", this.#onOnline);
    if (this.state === "disconnected") return;
    this.#drop(1000, "client disconnect", false);
  }

  /**
   * Resolves once connected, or rejects when the client is disconnected or
   * timeout (ms, default the request timeout) passes first.
   * @param {number} [timeout]
   * @returns {Promise<void>}
   */
  ready(timeout = this.#opts.timeout) {
    return this.#whenConnected(timeout);
  }

  /**
   * Subscribes to a channel. The subscription is sent now if connected,
   * otherwise once connected, and is renewed after every reconnect, resuming
   * from the last publication it delivered.
   * @param {string} channel
   * @param {import("./herald").SubscriptionHandlers & {since?: import("./herald").StreamPosition}} [handlers]
   * @returns {Subscription}
   */
  subscribe(channel, handlers = {}) {
    if (this.#subs.has(channel)) throw new Error(`herald: already subscribed to ${channel}`);
    const sub = new Subscription(this, channel, handlers);
    this.#subs.set(channel, sub);
    if (this.state === "connected") this.#sendSubscribe(sub);
    return sub;
  }

  /**
   * The subscription to channel made by {@link Herald#subscribe}, if any.
   * @param {string} channel
   * @returns {Subscription | undefined}
   */
  getSubscription(channel) {
    return this.#subs.get(channel);
  }

  /**
   * Publishes JSON data (or a Uint8Array, sent as binary) to a channel whose
   * namespace lets browsers publish. Resolves with the publication's position.
   * @param {string} channel
   * @param {unknown} data
   * @param {{idempotencyKey?: string}} [opts]
   * @returns {Promise<import("./herald").PublishResult>}
   */
  async publish(channel, data, opts = {}) {
    /** @type {Record<string, unknown>} */
    const body = { channel };
    if (data instanceof Uint8Array) body.binary = bytesToBase64(data);
    else body.data = data;
    if (opts.idempotencyKey) body.idempotency_key = opts.idempotencyKey;
    const res = await this.#call("publish", body);
    return { ...toPosition(res.position), duplicate: !!res.duplicate };
  }

  /**
   * Reads a page of a channel's history.
   * @param {string} channel
   * @param {import("./herald").HistoryOptions} [opts]
   * @returns {Promise<import("./herald").HistoryResult>}
   */
  async history(channel, opts = {}) {
    /** @type {Record<string, unknown>} */
    const body = { channel };
    if (opts.since) body.since = fromPosition(opts.since);
    if (opts.limit) body.limit = opts.limit;
    if (opts.reverse) body.reverse = true;
    const res = await this.#call("history", body);
    return {
      publications: (res.publications ?? []).map(toPublication),
      position: toPosition(res.position),
    };
  }

  /**
   * Lists the clients in a channel.
   * @param {string} channel
   * @returns {Promise<import("./herald").ClientInfo[]>}
   */
  async presence(channel) {
    const res = await this.#call("presence", { channel });
    return (res.clients ?? []).map(toClientInfo);
  }

  /**
   * Counts the clients and distinct users in a channel.
   * @param {string} channel
   * @returns {Promise<{clients: number, users: number}>}
   */
  async presenceStats(channel) {
    const res = await this.#call("presence_stats", { channel });
    return { clients: res.clients ?? 0, users: res.users ?? 0 };
  }

  /**
   * Calls a method of the application's backend through the bridge (its
   * RPC hook; the bridge must allow the method in `hooks.rpc_methods`) and
   * resolves with the backend's answer: JSON data (null when it gave
   * none), or a Uint8Array when it answered bytes. Pass a Uint8Array to
   * send bytes. A refusal rejects with a HeraldError carrying the
   * backend's code (104, or its own 1000-1999) and reason; a backend that
   * is down or slow with 203 or 204 (temporary).
   * @param {string} method
   * @param {unknown} [data]
   * @returns {Promise<unknown>}
   */
  async rpc(method, data = null) {
    /** @type {Record<string, unknown>} */
    const body = { method };
    if (data instanceof Uint8Array) body.binary = bytesToBase64(data);
    else body.data = data;
    const res = await this.#call("rpc", body);
    if (res.binary !== undefined) return base64ToBytes(res.binary);
    return res.data ?? null;
  }

  /**
   * Sends an application ping and resolves with the round trip in ms.
   * @returns {Promise<number>}
   */
  async ping() {
    const start = performance.now();
    await this.#call("ping", {});
    return performance.now() - start;
  }

  // ---- internals used by Subscription ----

  /**
   * @internal
   * @param {Subscription} sub
   */
  _unsubscribe(sub) {
    if (this.#subs.get(sub.channel) !== sub) return;
    this.#subs.delete(sub.channel);
    if (this.state === "connected") {
      this.#request("unsubscribe", { channel: sub.channel }).catch(() => {});
    }
  }

  // ---- connection lifecycle ----

  /**
   * @param {"disconnected" | "connecting" | "connected"} state
   * @param {object} ctx
   */
  #setState(state, ctx) {
    this.state = state;
    this._emit("state", { state, ...ctx });
    this._emit(state, ctx);
  }

  async #open() {
    this.#reconnectTimer = undefined;
    const gen = ++this.#gen;
    const kind = this.#transports[this.#ti];
    let token = this.#token ?? "";
    // The token given in the options serves the first connection; every
    // later one asks getToken (when set) for a fresh token.
    const fresh = this.#opts.getToken && (this.#token === undefined || this.#tokenUsed);
    this.#tokenUsed = true;
    if (fresh && this.#opts.getToken) {
      try {
        token = (await this.#opts.getToken()) ?? "";
        this.#token = token;
      } catch (err) {
        if (gen !== this.#gen) return;
        this._emit("error", { type: "token", error: err });
        this.#drop(0, "getToken failed", true);
        return;
      }
      if (gen !== this.#gen || this.state !== "connecting") return;
    }
    /** @type {LinkHandlers} */
    const handlers = {
      onopen: () => {
        if (gen !== this.#gen) return;
        this.#transport = kind;
        this.#handshake(gen, token);
      },
      onmessage: (data) => {
        if (gen === this.#gen) this.#onMessage(data);
      },
      onclose: (code, reason, opened) => {
        if (gen === this.#gen) this.#onClose(code, reason, opened);
      },
    };
    try {
      this.#link = this.#makeLink(kind, handlers);
    } catch (err) {
      this._emit("error", { type: "transport", error: err });
      this.#onClose(0, String(err), false);
    }
  }

  /**
   * Opens a connection on one transport.
   * @param {string} kind
   * @param {LinkHandlers} handlers
   * @returns {Link}
   */
  #makeLink(kind, handlers) {
    const o = this.#opts;
    const fetchFn = o.fetch ?? globalThis.fetch?.bind(globalThis);
    if (kind === "websocket") return new WebSocketLink(this.#url, handlers, o.WebSocket ?? globalThis.WebSocket);
    const command = o.commandURL ? resolveHTTP(o.commandURL) : sibling(this.#url, "command");
    if (kind === "http_stream") {
      return new StreamLink(o.streamURL ? resolveHTTP(o.streamURL) : sibling(this.#url, "stream"), command, handlers, fetchFn);
    }
    const sse = o.sseURL ? resolveHTTP(o.sseURL) : sibling(this.#url, "sse");
    return new SSELink(sse, command, handlers, o.EventSource ?? globalThis.EventSource, fetchFn, this.#lastEventId);
  }

  /**
   * @param {number} gen
   * @param {string} token
   */
  #handshake(gen, token) {
    this.#lastRecv = Date.now();
    this.#nextId = 1;
    /** @type {any} */
    const body = { token, name: this.#opts.name };
    const p = this.#personal;
    // Resume the personal channel only for the same user: the token's
    // subject must match the user of the previous connection.
    this.#personalResumed = false;
    if (p && p.last?.epoch && p.recoverable && tokenSubject(token) === p.user) {
      body.personal_since = fromPosition(p.last);
      this.#personalResumed = true;
    }
    this.#request("connect", body).then(
      (res) => {
        if (gen !== this.#gen) return;
        this.client = res.client ?? "";
        this.user = res.user ?? "";
        if (this.#personal?.user !== this.user) {
          this.#personal = this.user ? { user: this.user, last: null, recoverable: false } : null;
          this.#personalResumed = false;
        }
        this.#attempt = 0;
        this.#startPing(gen, res.ping_interval ?? 0);
        this.#scheduleRefresh(gen, res.expires_in ?? 0);
        this.#setState("connected", {
          client: this.client,
          user: this.user,
          expiresIn: res.expires_in ?? 0,
          version: res.version ?? "",
          pingInterval: res.ping_interval ?? 0,
          transport: this.#transport,
        });
        for (const sub of this.#subs.values()) this.#sendSubscribe(sub);
        for (const w of this.#waiters.splice(0)) w.resolve();
      },
      (/** @type {HeraldError} */ err) => {
        if (gen !== this.#gen) return;
        // A refused connect is final unless the server says it is
        // temporary; a lost or silent socket is worth retrying.
        const retry = err.temporary || err.code === ErrorCode.TIMEOUT || err.code === ErrorCode.CONNECTION_CLOSED;
        this._emit("error", { type: "connect", error: err });
        if (err.code !== ErrorCode.CONNECTION_CLOSED) this.#drop(err.code, err.message, retry);
      },
    );
  }

  /**
   * Abandons the current socket, fails what was waiting on it, and either
   * schedules a reconnect or settles in "disconnected".
   * @param {number} code
   * @param {string} reason
   * @param {boolean} reconnect
   * @param {number} [delay] ms before reconnecting; default backoff
   */
  #drop(code, reason, reconnect, delay) {
    this.#gen++;
    const link = this.#link;
    this.#link = null;
    if (link) {
      if (link.lastEventId) this.#lastEventId = link.lastEventId;
      link.close();
    }
    clearInterval(this.#pingTimer);
    clearTimeout(this.#refreshTimer);
    clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = undefined;
    this.#serverSubs.clear();
    for (const [id, p] of this.#pending) {
      clearTimeout(p.timer);
      p.reject(new HeraldError(ErrorCode.CONNECTION_CLOSED, "connection closed", true));
      this.#pending.delete(id);
    }
    for (const sub of this.#subs.values()) sub._transportDown();
    if (reconnect && !this.#closing) {
      const wait = delay ?? this.#backoff();
      if (delay !== 0) this.#attempt++;
      this.#setState("connecting", { code, reason, reconnect: true, delay: wait });
      this.#reconnectTimer = setTimeout(() => this.#open(), wait);
      return;
    }
    globalThis.removeEventListener?.("online", this.#onOnline);
    this.client = "";
    this.#setState("disconnected", { code, reason, reconnect: false });
    for (const w of this.#waiters.splice(0)) {
      w.reject(new HeraldError(ErrorCode.NOT_CONNECTED, `disconnected: ${reason}`));
    }
  }

  /** Exponential backoff with full jitter. */
  #backoff() {
    const { minReconnectDelay: min, maxReconnectDelay: max } = this.#opts;
    return Math.round(Math.random() * Math.min(max, min * 2 ** Math.min(this.#attempt, 20)));
  }

  /**
   * @param {number} code
   * @param {string} reason
   * @param {boolean} opened whether the transport had opened (else it is
   *   unreachable here: a WebSocket upgrade refused by a proxy...)
   */
  #onClose(code, reason, opened) {
    if (!opened && !this.#advice) {
      if (this.#ti + 1 < this.#transports.length) {
        // This transport does not get through: try the next one now.
        this.#ti++;
        this.#drop(code, reason || "transport unavailable", true, 0);
        return;
      }
      this.#ti = 0; // none did: start again from the first, after a backoff
    }
    const advice = this.#advice;
    this.#advice = null;
    let reconnect = advice ? advice.reconnect : !NO_RECONNECT.has(code);
    code = advice?.code || code;
    // The same expired token would be refused again; without a token (a
    // cookie session, decided by the application's connect hook) a
    // reconnect asks the backend anew.
    if (code === TOKEN_EXPIRED && !this.#opts.getToken && this.#token) reconnect = false;
    this.#drop(code, advice?.reason || reason || "connection closed", reconnect, advice?.delay || undefined);
  }

  /**
   * Pings when the connection has been quiet for a whole interval, and drops
   * it when the pong does not come back in time: a dead TCP connection can
   * otherwise look open for minutes.
   * @param {number} gen
   * @param {number} serverInterval seconds
   */
  #startPing(gen, serverInterval) {
    const every = this.#opts.pingInterval ?? (serverInterval > 0 ? serverInterval * 1000 : 25000);
    this.#pingTimer = setInterval(() => {
      if (gen !== this.#gen || Date.now() - this.#lastRecv < every) return;
      this.#request("ping", {}).catch((err) => {
        if (gen === this.#gen && err.code === ErrorCode.TIMEOUT) this.#drop(0, "ping timeout", true);
      });
    }, every);
  }

  /**
   * Refreshes the token ahead of its expiry (when getToken is set).
   * @param {number} gen
   * @param {number} expiresIn seconds
   */
  #scheduleRefresh(gen, expiresIn) {
    clearTimeout(this.#refreshTimer);
    if (!expiresIn || !this.#opts.getToken) return;
    const ms = expiresIn * 1000;
    const wait = Math.max(ms - Math.min(30000, ms / 4), 1000);
    this.#refreshTimer = setTimeout(() => this.#refresh(gen), wait);
  }

  /** @param {number} gen */
  async #refresh(gen) {
    try {
      const token = (await this.#opts.getToken?.()) ?? "";
      if (gen !== this.#gen) return;
      this.#token = token;
      const res = await this.#request("refresh", { token });
      if (gen === this.#gen) this.#scheduleRefresh(gen, res.expires_in ?? 0);
    } catch (err) {
      if (gen !== this.#gen) return;
      this._emit("error", { type: "refresh", error: err });
      // Try again soon; if the token runs out first the server closes the
      // connection and the reconnect fetches a fresh token.
      this.#refreshTimer = setTimeout(() => this.#refresh(gen), 5000);
    }
  }

  // ---- frames ----

  /** @param {unknown} data */
  #onMessage(data) {
    this.#lastRecv = Date.now();
    if (typeof data !== "string") return;
    for (const line of data.split("\n")) {
      if (!line) continue;
      let frame;
      try {
        frame = JSON.parse(line);
      } catch (err) {
        this._emit("error", { type: "frame", error: err });
        continue;
      }
      this.#dispatch(frame);
    }
  }

  /** @param {any} frame */
  #dispatch(frame) {
    if (frame.id) {
      const p = this.#pending.get(frame.id);
      if (!p) return;
      this.#pending.delete(frame.id);
      clearTimeout(p.timer);
      if (frame.error) {
        const e = frame.error;
        p.reject(new HeraldError(e.code ?? 0, e.message ?? "error", !!e.temporary));
      } else {
        const key = Object.keys(frame).find((k) => k !== "id");
        p.resolve(key ? frame[key] : {});
      }
      return;
    }
    if (frame.pub) {
      const sub = this.#subs.get(frame.pub.channel);
      if (sub) sub._publication(frame.pub);
      else if (this.#serverSubs.has(frame.pub.channel)) this.#serverPublication(frame.pub);
    } else if (frame.join || frame.leave) {
      const kind = frame.join ? "join" : "leave";
      const ev = frame[kind];
      const info = { channel: ev.channel, ...toClientInfo(ev.client ?? {}) };
      const sub = this.#subs.get(ev.channel);
      if (sub) sub._presence(kind, info);
      else this._emit(kind, info);
    } else if (frame.unsubscribed) {
      const u = frame.unsubscribed;
      this.#serverSubs.delete(u.channel);
      const sub = this.#subs.get(u.channel);
      if (sub) {
        this.#subs.delete(u.channel);
        sub._ended(u.reason ?? "");
      } else {
        this._emit("unsubscribed", { channel: u.channel, reason: u.reason ?? "" });
      }
    } else if (frame.subscribed) {
      const s = frame.subscribed;
      const sub = this.#subs.get(s.channel);
      if (sub) {
        sub._subscribed(s);
      } else {
        const position = toPosition(s.position);
        let recovered = false;
        let resubscribed = this.#serverSubs.has(s.channel);
        const p = this.#personal;
        if (p && s.channel === "user:" + p.user) {
          // The first `subscribed` of a connection answers personal_since;
          // a later one (upstream loss mid-connection) carries
          // recovered=false and the position to continue from.
          recovered = !resubscribed && this.#personalResumed && !!s.recovered;
          resubscribed = resubscribed || p.last !== null;
          p.recoverable = !!s.recoverable;
          // After a recovered resume the missed publications follow, each
          // past p.last; otherwise the stream continues after position.
          if (!recovered) p.last = position;
        }
        this.#serverSubs.add(s.channel);
        this._emit("subscribed", { channel: s.channel, position, recovered, recoverable: !!s.recoverable, resubscribed });
      }
    } else if (frame.disconnect) {
      const d = frame.disconnect;
      this.#advice = { code: d.code ?? 0, reason: d.reason ?? "", reconnect: !!d.reconnect, delay: d.reconnect_delay_ms ?? 0 };
    }
  }

  /**
   * Delivers a publication of a server-side subscription, skipping one at
   * or below the personal channel's last seen offset (a resume's replay).
   * @param {any} frame Publication frame
   */
  #serverPublication(frame) {
    const pub = toPublication(frame);
    const p = this.#personal;
    if (p && pub.channel === "user:" + p.user && pub.offset > 0) {
      const last = p.last;
      if (last && pub.epoch === last.epoch && pub.offset <= last.offset) return;
      p.last = { offset: pub.offset, epoch: pub.epoch };
    }
    this._emit("publication", pub);
  }

  /** @param {Subscription} sub */
  #sendSubscribe(sub) {
    const gen = this.#gen;
    const since = sub._since();
    /** @type {Record<string, unknown>} */
    const body = { channel: sub.channel };
    if (since) body.since = fromPosition(since);
    sub._subscribing();
    this.#request("subscribe", body).then(
      (res) => {
        if (gen === this.#gen && this.#subs.get(sub.channel) === sub) sub._subscribed(res, !!since);
      },
      (/** @type {HeraldError} */ err) => {
        if (gen !== this.#gen || this.#subs.get(sub.channel) !== sub) return;
        if (err.code === ErrorCode.TIMEOUT) {
          // The server may have subscribed us after all; start afresh.
          this.#drop(0, "subscribe timeout", true);
        } else if (err.temporary) {
          setTimeout(() => {
            if (gen === this.#gen && this.#subs.get(sub.channel) === sub) this.#sendSubscribe(sub);
          }, this.#backoff());
        } else {
          this.#subs.delete(sub.channel);
          sub._failed(err);
        }
      },
    );
  }

  /**
   * Sends a request once connected and resolves with the reply's body.
   * @param {string} kind
   * @param {object} body
   * @returns {Promise<any>}
   */
  async #call(kind, body) {
    const deadline = Date.now() + this.#opts.timeout;
    if (this.state !== "connected") await this.#whenConnected(this.#opts.timeout);
    return this.#request(kind, body, deadline - Date.now());
  }

  /**
   * @param {number} timeout
   * @returns {Promise<void>}
   */
  #whenConnected(timeout) {
    if (this.state === "connected") return Promise.resolve();
    if (this.state === "disconnected") {
      return Promise.reject(new HeraldError(ErrorCode.NOT_CONNECTED, "not connected"));
    }
    return new Promise((/** @type {(v?: void) => void} */ resolve, reject) => {
      const w = {
        resolve: () => { clearTimeout(timer); resolve(); },
        /** @param {HeraldError} e */
        reject: (e) => { clearTimeout(timer); reject(e); },
      };
      const timer = setTimeout(() => {
        this.#waiters = this.#waiters.filter((x) => x !== w);
        reject(new HeraldError(ErrorCode.TIMEOUT, "timed out waiting for connection", true));
      }, timeout);
      this.#waiters.push(w);
    });
  }

  /**
   * Sends one request frame on the current socket.
   * @param {string} kind the ClientFrame field, e.g. "subscribe"
   * @param {object} body
   * @param {number} [timeout] ms
   * @returns {Promise<any>}
   */
  #request(kind, body, timeout = this.#opts.timeout) {
    const link = this.#link;
    if (!link || !link.ready) {
      return Promise.reject(new HeraldError(ErrorCode.CONNECTION_CLOSED, "connection closed", true));
    }
    const id = this.#nextId;
    this.#nextId = id >= 0xffffffff ? 1 : id + 1;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new HeraldError(ErrorCode.TIMEOUT, `${kind}: timed out`, true));
      }, Math.max(timeout, 0));
      this.#pending.set(id, { resolve, reject, timer });
      link.send(JSON.stringify({ id, [kind]: body }));
    });
  }
}

// ---- transports ----

/**
 * @typedef {object} LinkHandlers
 * @property {() => void} onopen the link can take the connect frame
 * @property {(data: unknown) => void} onmessage frames ("\n"-separated JSON)
 * @property {(code: number, reason: string, opened: boolean) => void} onclose
 */

/**
 * @typedef {object} Link one connection on one transport
 * @property {boolean} ready whether send may be called
 * @property {string} [lastEventId]
 * @property {(text: string) => void} send sends one client frame (JSON)
 * @property {() => void} close closes it without calling its handlers
 */

/** A WebSocket connection. */
class WebSocketLink {
  #ws;
  #opened = false;
  /**
   * @param {string} url
   * @param {LinkHandlers} h
   * @param {typeof WebSocket} WS
   */
  constructor(url, h, WS) {
    const ws = (this.#ws = new WS(url, SUBPROTOCOL));
    ws.onopen = () => {
      this.#opened = true;
      h.onopen();
    };
    ws.onmessage = (e) => h.onmessage(e.data);
    ws.onclose = (e) => h.onclose(e.code, e.reason, this.#opened);
    // A failed socket closes next (onclose reconnects); handling "error"
    // keeps Node's ws from throwing it as an unhandled event, which ends
    // the process.
    ws.onerror = () => {};
  }
  get ready() {
    return this.#ws.readyState === 1;
  }
  /** @param {string} text */
  send(text) {
    this.#ws.send(text);
  }
  close() {
    const ws = this.#ws;
    ws.onopen = ws.onmessage = ws.onclose = null;
    if (ws.readyState <= 1) ws.close(1000);
  }
}

/**
 * Sends a unidirectional session's frames by POST to /command, with the
 * session token of its connect reply, one POST at a time; frames queued
 * meanwhile go together in the next.
 */
class CommandSender {
  #url;
  #fetch;
  #onfail;
  #token = "";
  /** @type {string[]} */
  #queue = [];
  #busy = false;
  #closed = false;
  /**
   * @param {string} url
   * @param {typeof fetch} fetchFn
   * @param {(err: unknown) => void} onfail the session cannot take commands
   */
  constructor(url, fetchFn, onfail) {
    this.#url = url;
    this.#fetch = fetchFn;
    this.#onfail = onfail;
  }
  get token() {
    return this.#token;
  }
  /** @param {string} token */
  setToken(token) {
    this.#token = token;
    this.#flush();
  }
  /** @param {string} text */
  send(text) {
    this.#queue.push(text);
    this.#flush();
  }
  close() {
    this.#closed = true;
    this.#queue = [];
  }
  async #flush() {
    if (this.#busy || this.#closed || !this.#token || !this.#queue.length) return;
    this.#busy = true;
    const enc = new TextEncoder();
    let n = 0;
    let size = 0;
    while (n < this.#queue.length && (n === 0 || size + enc.encode(this.#queue[n]).length + 1 <= MAX_COMMAND_BYTES)) {
      size += enc.encode(this.#queue[n]).length + 1;
      n++;
    }
    const body = this.#queue.splice(0, n).join("\n");
    try {
      for (let attempt = 0; ; attempt++) {
        const res = await this.#fetch(this.#url, {
          method: "POST",
          headers: { "Content-Type": "application/json", Authorization: "Bearer " + this.#token },
          body,
          cache: "no-store",
        });
        if (res.status === 202) break;
        if ((res.status === 429 || res.status === 503) && attempt < 3) {
          const after = Number(res.headers.get("Retry-After")) || 0.5;
          await new Promise((r) => setTimeout(r, after * 1000));
          if (this.#closed) return;
          continue;
        }
        throw new Error(`command: HTTP ${res.status}`);
      }
    } catch (err) {
      this.#busy = false;
      if (!this.#closed) this.#onfail(err);
      return;
    }
    this.#busy = false;
    this.#flush();
  }
}

/**
 * An HTTP stream: a POST of the connect frame whose response body streams
 * the session's frames as NDJSON (empty lines are heartbeats).
 */
class StreamLink {
  #url;
  #h;
  #fetch;
  #cmd;
  #ctrl = new AbortController();
  #started = false;
  #opened = false;
  #closed = false;
  ready = true;
  /**
   * @param {string} url
   * @param {string} command
   * @param {LinkHandlers} h
   * @param {typeof fetch} fetchFn
   */
  constructor(url, command, h, fetchFn) {
    if (!fetchFn) throw new Error("herald: no fetch for the http_stream transport");
    this.#url = url;
    this.#h = h;
    this.#fetch = fetchFn;
    this.#cmd = new CommandSender(command, fetchFn, (err) => this.#fail(0, String(err)));
    queueMicrotask(() => !this.#closed && h.onopen());
  }
  /** @param {string} text */
  send(text) {
    if (this.#started) {
      this.#cmd.send(text);
      return;
    }
    this.#started = true;
    this.#run(text);
  }
  /** @param {string} body the connect frame */
  async #run(body) {
    try {
      const res = await this.#fetch(this.#url, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body,
        cache: "no-store",
        // The page's cookies go with the stream, as with a WebSocket, for
        // a bridge whose connect hook reads a session cookie (another
        // origin must be in the bridge's allowed_origins).
        credentials: "include",
        signal: this.#ctrl.signal,
      });
      if (res.status !== 200 || !res.body) return this.#fail(1006, `HTTP ${res.status}`);
      this.#opened = true;
      const reader = res.body.getReader();
      const dec = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done || this.#closed) break;
        buf += dec.decode(value, { stream: true });
        for (let i; (i = buf.indexOf("\n")) >= 0; ) {
          const line = buf.slice(0, i);
          buf = buf.slice(i + 1);
          if (!this.#cmd.token && line.includes('"session_token"')) {
            try {
              const t = JSON.parse(line).connect?.session_token;
              if (t) this.#cmd.setToken(t);
            } catch {
              // not the connect reply
            }
          }
          this.#h.onmessage(line);
        }
      }
      this.#fail(1006, "stream ended");
    } catch (err) {
      this.#fail(1006, String(err));
    }
  }
  /**
   * @param {number} code
   * @param {string} reason
   */
  #fail(code, reason) {
    if (this.#closed) return;
    this.close();
    this.#h.onclose(code, reason, this.#opened);
  }
  close() {
    this.#closed = true;
    this.ready = false;
    this.#cmd.close();
    this.#ctrl.abort();
  }
}

/**
 * An SSE stream (EventSource). Its connect is the GET itself: the client's
 * connect frame becomes the URL, and the server's `connect` event answers
 * it. The browser's own reconnect is not used (the client reconnects with
 * backoff and a fresh token); the personal channel resumes through the
 * last event id, the other subscriptions with `since` as on every
 * transport.
 */
class SSELink {
  #url;
  #h;
  #ES;
  #cmd;
  #lastId;
  /** @type {EventSource | null} */
  #es = null;
  #connectId = 0;
  #opened = false;
  #closed = false;
  ready = true;
  /**
   * @param {string} url
   * @param {string} command
   * @param {LinkHandlers} h
   * @param {typeof EventSource} ES
   * @param {typeof fetch} fetchFn
   * @param {string} lastEventId
   */
  constructor(url, command, h, ES, fetchFn, lastEventId) {
    if (!ES || !fetchFn) throw new Error("herald: no EventSource or fetch for the sse transport");
    this.#url = url;
    this.#h = h;
    this.#ES = ES;
    this.#lastId = lastEventId;
    this.#cmd = new CommandSender(command, fetchFn, (err) => this.#fail(0, String(err)));
    queueMicrotask(() => !this.#closed && h.onopen());
  }
  get lastEventId() {
    return this.#lastId;
  }
  /** @param {string} text */
  send(text) {
    if (this.#es) {
      this.#cmd.send(text);
      return;
    }
    const f = JSON.parse(text);
    const c = f.connect ?? {};
    this.#connectId = f.id;
    const u = new URL(this.#url);
    if (c.token) u.searchParams.set("token", c.token);
    if (c.name) u.searchParams.set("name", c.name);
    if (c.personal_since && this.#lastId) u.searchParams.set("last_event_id", this.#lastId);
    // With credentials: cookies go to a bridge on another origin too (it
    // must allow the origin), as they do with a WebSocket.
    const es = (this.#es = new this.#ES(u.href, { withCredentials: true }));
    es.onopen = () => {
      this.#opened = true;
    };
    es.onmessage = (e) => {
      if (this.#closed) return;
      if (e.lastEventId) this.#lastId = e.lastEventId;
      let data = String(e.data);
      if (!this.#cmd.token && data.startsWith('{"connect":')) {
        // The answer to the connect frame this link turned into the URL.
        try {
          this.#cmd.setToken(JSON.parse(data).connect?.session_token ?? "");
        } catch {
          // left to the client's frame errors
        }
        data = `{"id":${this.#connectId},` + data.slice(1);
      }
      this.#h.onmessage(data);
    };
    es.onerror = () => this.#fail(1006, "event stream closed");
  }
  /**
   * @param {number} code
   * @param {string} reason
   */
  #fail(code, reason) {
    if (this.#closed) return;
    this.close();
    this.#h.onclose(code, reason, this.#opened);
  }
  close() {
    this.#closed = true;
    this.ready = false;
    this.#cmd.close();
    this.#es?.close();
  }
}

/**
 * A subscription to one channel, made by {@link Herald#subscribe}. Events:
 * "publication", "join", "leave", "subscribed", "unsubscribed", "error";
 * the handlers passed to subscribe are called too.
 */
export class Subscription extends Emitter {
  /** The channel. */
  channel;
  /**
   * "subscribing" (also while waiting for a reconnect), "subscribed" or
   * "unsubscribed" (ended by unsubscribe(), the server, or an error).
   * @type {"subscribing" | "subscribed" | "unsubscribed"}
   */
  state = "subscribing";
  /** Whether the channel keeps history, so the subscription can resume. */
  recoverable = false;

  #client;
  #handlers;
  /** Last position delivered (or the start position); resumes from here. @type {import("./herald").StreamPosition | null} */
  #last = null;
  #subscribedOnce = false;
  /** Publications that arrived before the subscribe reply. @type {any[] | null} */
  #early = null;

  /**
   * @param {Herald} client
   * @param {string} channel
   * @param {import("./herald").SubscriptionHandlers & {since?: import("./herald").StreamPosition}} handlers
   */
  constructor(client, channel, handlers) {
    super();
    this.#client = client;
    this.channel = channel;
    this.#handlers = handlers;
    if (handlers.since) {
      this.#last = { offset: Number(handlers.since.offset), epoch: handlers.since.epoch };
      this.recoverable = true;
    }
  }

  /**
   * The position of the last publication delivered (or where the
   * subscription started); store it to resume later with `since`.
   * @returns {import("./herald").StreamPosition | null}
   */
  get position() {
    return this.#last && { ...this.#last };
  }

  /** Ends the subscription. */
  unsubscribe() {
    if (this.state === "unsubscribed") return;
    this.#client._unsubscribe(this);
    this.#ended("unsubscribe called");
  }

  /**
   * Publishes to this channel. See {@link Herald#publish}.
   * @param {unknown} data
   * @param {{idempotencyKey?: string}} [opts]
   */
  publish(data, opts) {
    return this.#client.publish(this.channel, data, opts);
  }

  /**
   * Reads this channel's history. See {@link Herald#history}.
   * @param {import("./herald").HistoryOptions} [opts]
   */
  history(opts) {
    return this.#client.history(this.channel, opts);
  }

  /** Lists the clients in this channel. */
  presence() {
    return this.#client.presence(this.channel);
  }

  /** Counts the clients and users in this channel. */
  presenceStats() {
    return this.#client.presenceStats(this.channel);
  }

  // ---- called by Herald ----

  /** @internal */
  _since() {
    return this.recoverable && this.#last?.epoch ? this.#last : null;
  }

  /** @internal */
  _subscribing() {
    this.state = "subscribing";
    this.#early = [];
  }

  /** @internal */
  _transportDown() {
    if (this.state === "subscribed") this.state = "subscribing";
    this.#early = null;
  }

  /**
   * @internal
   * @param {any} res SubscribedFrame
   * @param {boolean} [resumed] whether the request carried `since`
   */
  _subscribed(res, resumed = false) {
    const position = toPosition(res.position);
    const recovered = resumed && !!res.recovered;
    this.recoverable = !!res.recoverable;
    // After a successful resume the missed publications follow, each past
    // #last; otherwise the stream continues after the current position.
    if (!recovered) this.#last = position;
    this.state = "subscribed";
    const ctx = { channel: this.channel, position, recovered, recoverable: this.recoverable, resubscribed: this.#subscribedOnce };
    this.#subscribedOnce = true;
    this.#fire("subscribed", "onSubscribed", ctx);
    const early = this.#early ?? [];
    this.#early = null;
    for (const p of early) this._publication(p);
  }

  /**
   * Delivers a publication unless it was delivered already: within an
   * epoch, offsets only grow, so anything at or below the last one seen is a
   * duplicate from a resume.
   * @internal
   * @param {any} p Publication frame
   */
  _publication(p) {
    if (this.state === "unsubscribed") return;
    if (this.#early) {
      this.#early.push(p);
      return;
    }
    const pub = toPublication(p);
    const last = this.#last;
    if (pub.offset > 0) {
      if (last && pub.epoch === last.epoch && pub.offset <= last.offset) return;
      this.#last = { offset: pub.offset, epoch: pub.epoch };
    }
    this.#fire("publication", "onPublication", pub);
  }

  /**
   * @internal
   * @param {"join" | "leave"} kind
   * @param {any} info
   */
  _presence(kind, info) {
    this.#fire(kind, kind === "join" ? "onJoin" : "onLeave", info);
  }

  /**
   * @internal
   * @param {string} reason
   */
  _ended(reason) {
    this.#ended(reason);
  }

  /**
   * @internal
   * @param {HeraldError} err
   */
  _failed(err) {
    this.#fire("error", "onError", err);
    this.#ended(err.message);
  }

  /** @param {string} reason */
  #ended(reason) {
    if (this.state === "unsubscribed") return;
    this.state = "unsubscribed";
    this.#early = null;
    this.#fire("unsubscribed", "onUnsubscribed", { channel: this.channel, reason });
  }

  /**
   * @param {string} event
   * @param {string} handler
   * @param {any} arg
   */
  #fire(event, handler, arg) {
    const fn = /** @type {any} */ (this.#handlers)[handler];
    if (fn) {
      try {
        fn(arg);
      } catch (err) {
        reportError(err);
      }
    }
    this._emit(event, arg);
  }
}

// ---- wire conversions ----

/** @param {string} url */
function resolveURL(url) {
  const u = new URL(url, globalThis.location?.href);
  if (u.protocol === "http:") u.protocol = "ws:";
  else if (u.protocol === "https:") u.protocol = "wss:";
  return u.href;
}

/** @param {string} url */
function resolveHTTP(url) {
  const u = new URL(url, globalThis.location?.href);
  if (u.protocol === "ws:") u.protocol = "http:";
  else if (u.protocol === "wss:") u.protocol = "https:";
  return u.href;
}

/**
 * The http(s) URL of endpoint name beside a WebSocket URL: /ws → /sse.
 * @param {string} wsURL
 * @param {string} name
 */
function sibling(wsURL, name) {
  const u = new URL(resolveHTTP(wsURL));
  u.pathname = u.pathname.endsWith("/ws") ? u.pathname.slice(0, -2) + name : u.pathname.replace(/\/?$/, "/" + name);
  u.search = "";
  return u.href;
}

/**
 * Offsets are uint64 on the wire (JSON strings); they stay far below 2^53
 * in practice, so the client hands out numbers.
 * @param {any} p
 * @returns {import("./herald").StreamPosition}
 */
function toPosition(p) {
  return { offset: Number(p?.offset ?? 0), epoch: p?.epoch ?? "" };
}

/**
 * The subject of a JWT, or "" when the token is not a readable JWT. It is
 * only compared with the previous user, never trusted: the server verifies.
 * @param {string} token
 * @returns {string}
 */
function tokenSubject(token) {
  try {
    const part = (token ?? "").split(".")[1];
    if (!part) return "";
    const b64 = part.replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(new TextDecoder().decode(base64ToBytes(b64 + "=".repeat((4 - (b64.length % 4)) % 4))));
    return typeof claims?.sub === "string" ? claims.sub : "";
  } catch {
    return "";
  }
}

/** @param {import("./herald").StreamPosition} p */
function fromPosition(p) {
  return { offset: String(p.offset ?? 0), epoch: p.epoch ?? "" };
}

/**
 * @param {any} c
 * @returns {import("./herald").ClientInfo}
 */
function toClientInfo(c) {
  return { client: c.client ?? "", user: c.user ?? "", info: c.info ?? null };
}

/**
 * @param {any} p
 * @returns {import("./herald").Publication}
 */
function toPublication(p) {
  /** @type {import("./herald").Publication} */
  const pub = {
    channel: p.channel ?? "",
    offset: Number(p.offset ?? 0),
    epoch: p.epoch ?? "",
    data: null,
    tags: p.tags ?? {},
    publisher: p.publisher ? toClientInfo(p.publisher) : null,
  };
  if (p.binary !== undefined) pub.binary = base64ToBytes(p.binary);
  else if (p.raw_json !== undefined) pub.data = JSON.parse(new TextDecoder().decode(base64ToBytes(p.raw_json)));
  else pub.data = p.data ?? null;
  return pub;
}

/** @param {string} s */
function base64ToBytes(s) {
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/** @param {Uint8Array} b */
function bytesToBase64(b) {
  let bin = "";
  for (let i = 0; i < b.length; i += 0x8000) bin += String.fromCharCode(...b.subarray(i, i + 0x8000));
  return btoa(bin);
}
