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
 * Frames are JSON (`herald.json`, the default) or binary protobuf
 * (`herald.proto`: `format: "protobuf"`), with the same API; SSE carries
 * JSON whatever the format (see "wire formats" at the end of the file).
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
  /** The format asked for (SSE carries JSON whatever it is). @type {Format} */
  #format;
  /** The format of the last connection that opened. @type {"json" | "protobuf" | ""} */
  #connFormat = "";
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
      format: options.format ?? "json",
    };
    const format = formats[/** @type {"json" | "protobuf"} */ (this.#opts.format)];
    if (!Object.hasOwn(formats, this.#opts.format) || !format) throw new Error(`herald: format must be "json" or "protobuf", not ${JSON.stringify(this.#opts.format)}`);
    this.#format = format;
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
   * The wire format of the current (or last) connection: "json" or
   * "protobuf" (the `format` option, except on SSE, which carries JSON);
   * empty before the first one opened.
   */
  get format() {
    return this.#connFormat;
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
   * Data is sent as the text `JSON.stringify(data)`; with `raw: true`, data
   * is a string of JSON text sent as it is (numbers beyond 2^53, key order:
   * the server keeps the text, less its insignificant whitespace), and a
   * string that is not one JSON value rejects with JSON.parse's SyntaxError.
   * @param {string} channel
   * @param {unknown} data
   * @param {import("./herald").PublishOptions} [opts]
   * @returns {Promise<import("./herald").PublishResult>}
   */
  async publish(channel, data, opts = {}) {
    /** @type {Record<string, unknown>} */
    const body = { channel, ...payloadFields(data, !!opts.raw) };
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
    const body = { method, ...payloadFields(data, false) };
    const res = await this.#call("rpc", body);
    const { data: answer, binary } = readPayload(res);
    return binary ?? answer;
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
    const format = kind === "sse" ? formats.json : this.#format;
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
        this.#connFormat = format.name;
        this.#handshake(gen, token);
      },
      onmessage: (data) => {
        if (gen === this.#gen) this.#onMessage(data, format);
      },
      onclose: (code, reason, opened) => {
        if (gen === this.#gen) this.#onClose(code, reason, opened);
      },
    };
    try {
      this.#link = this.#makeLink(kind, format, handlers);
    } catch (err) {
      this._emit("error", { type: "transport", error: err });
      this.#onClose(0, String(err), false);
    }
  }

  /**
   * Opens a connection on one transport.
   * @param {string} kind
   * @param {Format} format
   * @param {LinkHandlers} handlers
   * @returns {Link}
   */
  #makeLink(kind, format, handlers) {
    const o = this.#opts;
    const fetchFn = o.fetch ?? globalThis.fetch?.bind(globalThis);
    if (kind === "websocket") return new WebSocketLink(this.#url, handlers, o.WebSocket ?? globalThis.WebSocket, format);
    const command = o.commandURL ? resolveHTTP(o.commandURL) : sibling(this.#url, "command");
    if (kind === "http_stream") {
      return new StreamLink(o.streamURL ? resolveHTTP(o.streamURL) : sibling(this.#url, "stream"), command, handlers, fetchFn, format);
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
        // HTTP streaming and SSE send commands by POST with this token.
        this.#link?.setSessionToken?.(res.session_token ?? "");
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
          format: this.#connFormat,
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

  /**
   * @param {unknown} data a message (or, on HTTP streaming, a part of the stream)
   * @param {Format} format
   */
  #onMessage(data, format) {
    this.#lastRecv = Date.now();
    const onError = (/** @type {unknown} */ err) => this._emit("error", { type: "frame", error: err });
    for (const frame of format.decode(data, "ServerFrame", onError)) {
      try {
        this.#dispatch(frame);
      } catch (err) {
        onError(err); // a payload that is not JSON, say: the other frames go on
      }
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
      try {
        link.send({ id, [kind]: body });
      } catch (err) {
        // The frame could not be encoded (an offset out of range...).
        clearTimeout(timer);
        this.#pending.delete(id);
        reject(err);
      }
    });
  }
}

// ---- transports ----

/**
 * @typedef {object} LinkHandlers
 * @property {() => void} onopen the link can take the connect frame
 * @property {(data: unknown) => void} onmessage a message, in the link's format
 * @property {(code: number, reason: string, opened: boolean) => void} onclose
 */

/**
 * @typedef {object} Link one connection on one transport
 * @property {boolean} ready whether send may be called
 * @property {string} [lastEventId]
 * @property {(frame: object) => void} send sends one client frame (an object, as in herald.json)
 * @property {(token: string) => void} [setSessionToken] the connect reply's session_token, for command POSTs
 * @property {() => void} close closes it without calling its handlers
 */

/** A WebSocket connection. */
class WebSocketLink {
  #ws;
  #format;
  #opened = false;
  /**
   * @param {string} url
   * @param {LinkHandlers} h
   * @param {typeof WebSocket} WS
   * @param {Format} format
   */
  constructor(url, h, WS, format) {
    this.#format = format;
    const ws = (this.#ws = new WS(url, format.subprotocol));
    if (format.binary) ws.binaryType = "arraybuffer";
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
  /** @param {object} frame */
  send(frame) {
    this.#ws.send(this.#format.encode(frame));
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
  #format;
  #onfail;
  #token = "";
  /** @type {Array<{part: string | Uint8Array, size: number}>} encoded frames */
  #queue = [];
  #busy = false;
  #closed = false;
  /**
   * @param {string} url
   * @param {typeof fetch} fetchFn
   * @param {Format} format the session's
   * @param {(err: unknown) => void} onfail the session cannot take commands
   */
  constructor(url, fetchFn, format, onfail) {
    this.#url = url;
    this.#fetch = fetchFn;
    this.#format = format;
    this.#onfail = onfail;
  }
  /** @param {string} token */
  setToken(token) {
    this.#token = token;
    this.#flush();
  }
  /** @param {object} frame */
  send(frame) {
    const part = this.#format.encode(frame);
    this.#queue.push({ part, size: this.#format.size(part) });
    this.#flush();
  }
  close() {
    this.#closed = true;
    this.#queue = [];
  }
  async #flush() {
    if (this.#busy || this.#closed || !this.#token || !this.#queue.length) return;
    this.#busy = true;
    let n = 0;
    let size = 0;
    while (n < this.#queue.length && (n === 0 || size + this.#queue[n].size <= MAX_COMMAND_BYTES)) size += this.#queue[n++].size;
    const body = this.#format.pack(this.#queue.splice(0, n).map((q) => q.part));
    try {
      for (let attempt = 0; ; attempt++) {
        const res = await this.#fetch(this.#url, {
          method: "POST",
          headers: { "Content-Type": this.#format.contentType, Authorization: "Bearer " + this.#token },
          body: /** @type {BodyInit} */ (body),
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
 * the session's frames, as NDJSON (empty lines are heartbeats) or as
 * length-prefixed protobuf (zero-length frames are heartbeats).
 */
class StreamLink {
  #url;
  #h;
  #fetch;
  #format;
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
   * @param {Format} format
   */
  constructor(url, command, h, fetchFn, format) {
    if (!fetchFn) throw new Error("herald: no fetch for the http_stream transport");
    this.#url = url;
    this.#h = h;
    this.#fetch = fetchFn;
    this.#format = format;
    this.#cmd = new CommandSender(command, fetchFn, format, (err) => this.#fail(0, String(err)));
    queueMicrotask(() => !this.#closed && h.onopen());
  }
  /** @param {string} token */
  setSessionToken(token) {
    this.#cmd.setToken(token);
  }
  /** @param {object} frame */
  send(frame) {
    if (this.#started) {
      this.#cmd.send(frame);
      return;
    }
    this.#started = true;
    this.#run(this.#format.encode(frame));
  }
  /** @param {string | Uint8Array} body the connect frame */
  async #run(body) {
    try {
      const res = await this.#fetch(this.#url, {
        method: "POST",
        headers: { "Content-Type": this.#format.contentType },
        body: /** @type {BodyInit} */ (body),
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
      const push = this.#format.reader((part) => this.#h.onmessage(part));
      for (;;) {
        const { value, done } = await reader.read();
        if (done || this.#closed) break;
        push(value);
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
 * An SSE stream (EventSource), always in herald.json. Its connect is the
 * GET itself: the client's connect frame becomes the URL, and the server's
 * `connect` event answers it. The browser's own reconnect is not used (the
 * client reconnects with backoff and a fresh token); the personal channel
 * resumes through the last event id, the other subscriptions with `since`
 * as on every transport.
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
  #answered = false;
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
    this.#cmd = new CommandSender(command, fetchFn, formats.json, (err) => this.#fail(0, String(err)));
    queueMicrotask(() => !this.#closed && h.onopen());
  }
  get lastEventId() {
    return this.#lastId;
  }
  /** @param {string} token */
  setSessionToken(token) {
    this.#cmd.setToken(token);
  }
  /** @param {any} frame */
  send(frame) {
    if (this.#es) {
      this.#cmd.send(frame);
      return;
    }
    const c = frame.connect ?? {};
    this.#connectId = frame.id;
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
      if (!this.#answered && data.startsWith('{"connect":')) {
        // The answer to the connect frame this link turned into the URL.
        this.#answered = true;
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
   * @param {import("./herald").PublishOptions} [opts]
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
 * Offsets are uint64 on the wire (decimal strings in both formats' frame
 * objects); they stay far below 2^53 in practice, so the client hands out
 * numbers (the nearest double beyond 2^53, the same on both formats).
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

/**
 * A position for the wire: the offset as a decimal string (String(1e21)
 * would be "1e+21").
 * @param {import("./herald").StreamPosition} p
 */
function fromPosition(p) {
  const o = p.offset ?? 0;
  return { offset: typeof o === "number" && Number.isInteger(o) ? BigInt(o).toString() : String(o), epoch: p.epoch ?? "" };
}

/**
 * The payload fields of a publish: `binary` (bytes), or `json`, the JSON
 * text. Each format writes them its way (herald.json as `data`, the text
 * itself; herald.proto as the `json` string field).
 * @param {unknown} data
 * @param {boolean} raw data is JSON text already
 * @returns {{binary: Uint8Array} | {json: string | undefined}}
 */
function payloadFields(data, raw) {
  if (data instanceof Uint8Array) return { binary: data };
  if (!raw) return { json: JSON.stringify(data) };
  if (typeof data !== "string") throw new TypeError("herald: with raw: true, data must be a string of JSON text");
  JSON.parse(data); // one JSON value, or a SyntaxError
  return { json: data };
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
    timeUnixMs: Number(p.time_unix_ms ?? 0),
  };
  const { data, binary } = readPayload(p);
  if (binary) pub.binary = binary;
  else pub.data = data;
  return pub;
}

/**
 * The payload of a frame body with a payload oneof (a publication, say),
 * in either format: `binary` bytes (base64 in herald.json), or JSON from
 * `raw_json` (bytes), `json` (text) or `data` (the JSON itself, or a
 * google.protobuf.Value), parsed with JSON.parse. Throws when the text is
 * not JSON.
 * @param {any} p
 * @returns {{data: unknown, binary?: Uint8Array}}
 */
function readPayload(p) {
  // herald.json has bytes in base64; herald.proto's frame objects hold them.
  const bytes = (/** @type {string | Uint8Array} */ b) => (typeof b === "string" ? base64ToBytes(b) : b);
  if (p.binary !== undefined) return { data: null, binary: bytes(p.binary) };
  if (p.raw_json !== undefined) return { data: JSON.parse(utf8Decoder.decode(bytes(p.raw_json))) };
  if (p.json !== undefined) return { data: JSON.parse(p.json) };
  return { data: p.data ?? null };
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

// ---- wire formats: herald.json and herald.proto ----
//
// A frame is handled as an object in the shape of its herald.json text
// (protobuf JSON with proto field names: {id: 1, subscribe: {channel:
// "x"}}), whatever the format: 64-bit integers are decimal strings, a
// google.protobuf.Value is its JSON value. Only bytes differ: base64
// strings in herald.json, Uint8Arrays in herald.proto. A format turns such
// objects into messages and back; the client above never sees the wire.

/**
 * @typedef {object} Format
 * @property {"json" | "protobuf"} name
 * @property {string} subprotocol the WebSocket subprotocol
 * @property {string} contentType of HTTP-stream and command bodies
 * @property {boolean} binary whether messages are bytes
 * @property {(frame: object, type?: string) => string | Uint8Array} encode one frame, as a message of its own
 * @property {(parts: any[]) => string | Uint8Array} pack encoded frames into one message
 * @property {(part: any) => number} size bytes a part adds to a packed message
 * @property {(message: unknown, type?: string, onError?: (err: unknown) => void) => any[]} decode
 * @property {(emit: (message: any) => void) => (chunk: Uint8Array) => void} reader splits an HTTP stream into messages
 */

const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder();

/** JSON.stringify replacer: bytes as base64, as protobuf JSON has them. */
function base64Replacer(/** @type {string} */ _key, /** @type {unknown} */ v) {
  return v instanceof Uint8Array ? bytesToBase64(v) : v;
}

/** herald.json: frames as protobuf JSON in text messages, packed with "\n". */
const jsonFormat = {
  name: /** @type {const} */ ("json"),
  subprotocol: "herald.json",
  contentType: "application/json",
  binary: false,
  /**
   * A frame whose body has `json` (a publish's JSON text) is written with
   * that text as `data`, spliced in as it is: the bridge takes `data` as
   * the exact text it has in the frame. The text must be valid JSON; its
   * raw newlines (whitespace between tokens in valid JSON) become spaces,
   * since a newline separates frames.
   * @param {any} frame
   */
  encode(frame) {
    const kind = Object.keys(frame).find((k) => k !== "id");
    const body = kind === undefined ? undefined : frame[kind];
    if (typeof body?.json !== "string") return JSON.stringify(frame, base64Replacer);
    const { json, ...rest } = body;
    const inner = JSON.stringify(rest, base64Replacer);
    const id = frame.id === undefined ? "" : `"id":${JSON.stringify(frame.id)},`;
    return `{${id}${JSON.stringify(kind)}:${inner.slice(0, -1)}${inner === "{}" ? "" : ","}"data":${json.replace(/[\r\n]/g, " ")}}}`;
  },
  /** @param {string[]} parts */
  pack(parts) {
    return parts.join("\n");
  },
  /** @param {string} part */
  size(part) {
    return utf8Encoder.encode(part).length + 1;
  },
  /**
   * @param {unknown} message
   * @param {string} [_type]
   * @param {(err: unknown) => void} [onError]
   */
  decode(message, _type, onError) {
    if (typeof message !== "string") {
      onError?.(new Error("herald: a binary message in herald.json"));
      return [];
    }
    const frames = [];
    for (const line of message.split("\n")) {
      if (!line) continue;
      try {
        frames.push(JSON.parse(line));
      } catch (err) {
        onError?.(err);
      }
    }
    return frames;
  },
  /** @param {(message: string) => void} emit each line (empty: a heartbeat) */
  reader(emit) {
    const dec = new TextDecoder();
    let buf = "";
    return (/** @type {Uint8Array} */ chunk) => {
      buf += dec.decode(chunk, { stream: true });
      for (let i; (i = buf.indexOf("\n")) >= 0; ) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        emit(line);
      }
    };
  },
};

/**
 * The messages of frames.proto (and what they use from herald.proto) that
 * herald.js sends and receives, each a list of [field number, name, type,
 * oneof]. Types: "uint32", "uint64", "int64", "bool", "string", "bytes",
 * "map" (map<string, string>), "Value" (google.protobuf.Value, as its JSON
 * value), a message of this table, or "[]" and a message (repeated). A new
 * frame is a line in ClientFrame or ServerFrame and its message here;
 * fields the table lacks are skipped when decoding.
 * @type {Record<string, Array<[number, string, string, string?]>>}
 */
const SCHEMA = {
  ClientFrame: [
    [1, "id", "uint32"],
    [2, "connect", "ConnectFrame", "body"],
    [3, "refresh", "RefreshFrame", "body"],
    [4, "subscribe", "SubscribeFrame", "body"],
    [5, "unsubscribe", "UnsubscribeFrame", "body"],
    [6, "publish", "PublishFrame", "body"],
    [7, "history", "HistoryFrame", "body"],
    [8, "presence", "PresenceFrame", "body"],
    [9, "presence_stats", "PresenceFrame", "body"],
    [10, "ping", "PingFrame", "body"],
    [11, "rpc", "RPCFrame", "body"],
  ],
  ConnectFrame: [[1, "token", "string"], [2, "name", "string"], [3, "personal_since", "StreamPosition"]],
  RefreshFrame: [[1, "token", "string"]],
  SubscribeFrame: [[1, "channel", "string"], [2, "since", "StreamPosition"]],
  UnsubscribeFrame: [[1, "channel", "string"]],
  PublishFrame: [
    [1, "channel", "string"],
    [2, "data", "Value", "payload"],
    [3, "binary", "bytes", "payload"],
    [5, "json", "string", "payload"],
    [4, "idempotency_key", "string"],
  ],
  HistoryFrame: [[1, "channel", "string"], [2, "since", "StreamPosition"], [3, "limit", "uint32"], [4, "reverse", "bool"]],
  PresenceFrame: [[1, "channel", "string"]],
  PingFrame: [],
  RPCFrame: [[1, "method", "string"], [2, "data", "Value", "payload"], [3, "binary", "bytes", "payload"], [4, "json", "string", "payload"]],
  RPCResultFrame: [[1, "data", "Value", "payload"], [2, "binary", "bytes", "payload"], [3, "json", "string", "payload"]],
  ServerFrame: [
    [1, "id", "uint32"],
    [2, "error", "ErrorFrame", "body"],
    [3, "connect", "ConnectedFrame", "body"],
    [4, "refresh", "RefreshedFrame", "body"],
    [5, "subscribe", "SubscribedFrame", "body"],
    [6, "unsubscribe", "UnsubscribedFrame", "body"],
    [7, "publish", "PublishResponse", "body"],
    [8, "history", "HistoryResponse", "body"],
    [9, "presence", "PresenceResponse", "body"],
    [10, "presence_stats", "PresenceStatsResponse", "body"],
    [11, "pong", "PingFrame", "body"],
    [12, "pub", "Publication", "body"],
    [13, "join", "PresenceEvent", "body"],
    [14, "leave", "PresenceEvent", "body"],
    [15, "unsubscribed", "UnsubscribedFrame", "body"],
    [16, "disconnect", "DisconnectFrame", "body"],
    [17, "subscribed", "SubscribedFrame", "body"],
    [18, "rpc", "RPCResultFrame", "body"],
  ],
  ErrorFrame: [[1, "code", "uint32"], [2, "message", "string"], [3, "temporary", "bool"]],
  ConnectedFrame: [
    [1, "client", "string"],
    [2, "user", "string"],
    [3, "expires_in", "uint32"],
    [4, "version", "string"],
    [5, "ping_interval", "uint32"],
    [6, "session_token", "string"],
  ],
  RefreshedFrame: [[1, "expires_in", "uint32"]],
  SubscribedFrame: [[1, "channel", "string"], [2, "position", "StreamPosition"], [3, "recovered", "bool"], [4, "recoverable", "bool"]],
  UnsubscribedFrame: [[1, "channel", "string"], [2, "reason", "string"]],
  DisconnectFrame: [[1, "code", "uint32"], [2, "reason", "string"], [3, "reconnect", "bool"], [4, "reconnect_delay_ms", "uint32"]],
  PublishResponse: [[1, "position", "StreamPosition"], [2, "duplicate", "bool"]],
  HistoryResponse: [[1, "publications", "[]Publication"], [2, "position", "StreamPosition"]],
  PresenceResponse: [[1, "clients", "[]ClientInfo"]],
  PresenceStatsResponse: [[1, "clients", "uint32"], [2, "users", "uint32"]],
  StreamPosition: [[1, "offset", "uint64"], [2, "epoch", "string"]],
  Publication: [
    [1, "channel", "string"],
    [2, "offset", "uint64"],
    [3, "epoch", "string"],
    [4, "data", "Value", "payload"],
    [5, "binary", "bytes", "payload"],
    [6, "raw_json", "bytes", "payload"],
    [10, "json", "string", "payload"],
    [7, "tags", "map"],
    [8, "publisher", "ClientInfo"],
    [9, "time_unix_ms", "int64"],
  ],
  ClientInfo: [[1, "client", "string"], [2, "user", "string"], [3, "info", "Value"]],
  PresenceEvent: [[1, "channel", "string"], [2, "client", "ClientInfo"]],
};

/**
 * @typedef {object} Field
 * @property {number} no
 * @property {string} name
 * @property {string} kind a scalar type, "Value", "map", "message" or "repeated"
 * @property {string} type the message, for "message" and "repeated"
 * @property {number} wire the protobuf wire type
 * @property {boolean} oneof
 * @property {string[]} others the other members of its oneof
 */

/** SCHEMA compiled: per message, its fields by number and in order. */
const MESSAGES = (() => {
  const scalars = { uint32: 0, uint64: 0, int64: 0, bool: 0, string: 2, bytes: 2, Value: 2, map: 2 };
  /** @type {Record<string, {byNumber: Map<number, Field>, names: Set<string>, fields: Field[]}>} */
  const out = {};
  for (const [msg, list] of Object.entries(SCHEMA)) {
    /** @type {Field[]} */
    const fields = list.map(([no, name, t, oneof]) => {
      const repeated = t.startsWith("[]");
      const type = repeated ? t.slice(2) : t;
      const kind = repeated ? "repeated" : Object.hasOwn(scalars, type) ? type : "message";
      const wire = kind === "repeated" || kind === "message" ? 2 : /** @type {any} */ (scalars)[type];
      const others = oneof ? list.filter((f) => f[3] === oneof && f[1] !== name).map((f) => f[1]) : [];
      return { no, name, kind, type, wire, oneof: !!oneof, others };
    });
    out[msg] = { byNumber: new Map(fields.map((f) => [f.no, f])), names: new Set(fields.map((f) => f.name)), fields };
  }
  for (const m of Object.values(out)) {
    for (const f of m.fields) if ((f.kind === "message" || f.kind === "repeated") && !out[f.type]) throw new Error(`herald: no message ${f.type}`);
  }
  return out;
})();

/** Bounds what an HTTP stream may announce as one frame's length. */
const MAX_STREAM_FRAME = 64 << 20;

/** A growing buffer that protobuf is written to. */
class Writer {
  buf = new Uint8Array(64);
  len = 0;
  /** @param {number} n */
  room(n) {
    if (this.len + n <= this.buf.length) return;
    const b = new Uint8Array(Math.max(2 * this.buf.length, this.len + n));
    b.set(this.buf.subarray(0, this.len));
    this.buf = b;
  }
  /** @param {number | bigint} v an unsigned integer below 2^64 */
  varint(v) {
    this.room(10);
    const buf = this.buf;
    if (typeof v === "bigint") {
      for (; v >= 0x80n; v >>= 7n) buf[this.len++] = Number(v & 0x7fn) | 0x80;
      buf[this.len++] = Number(v);
      return;
    }
    // Exact for every integer a double holds: dividing by 128 only
    // changes the exponent.
    for (; v >= 0x80; v = Math.floor(v / 0x80)) buf[this.len++] = (v % 0x80) | 0x80;
    buf[this.len++] = v;
  }
  /**
   * @param {number} no
   * @param {number} wire
   */
  tag(no, wire) {
    this.varint(no * 8 + wire);
  }
  /** @param {Uint8Array} b a length-delimited field's content */
  bytes(b) {
    this.varint(b.length);
    this.room(b.length);
    this.buf.set(b, this.len);
    this.len += b.length;
  }
  /** @param {number} x */
  double(x) {
    this.room(8);
    new DataView(this.buf.buffer, this.len, 8).setFloat64(0, x, true);
    this.len += 8;
  }
  finish() {
    return this.buf.subarray(0, this.len);
  }
}

/** Reads protobuf from buf[pos:end]; every read checks its bounds. */
class Reader {
  /**
   * @param {Uint8Array} buf
   * @param {number} pos
   * @param {number} end
   */
  constructor(buf, pos, end) {
    this.buf = buf;
    this.pos = pos;
    this.end = end;
  }
  /**
   * A varint: a number when below 2^49 (exact), else a bigint.
   * @returns {number | bigint}
   */
  varint() {
    const buf = this.buf;
    let v = 0;
    let mul = 1;
    for (let i = 0; i < 7; i++, mul *= 0x80) {
      if (this.pos >= this.end) throw protoError("truncated varint");
      const b = buf[this.pos++];
      v += (b & 0x7f) * mul;
      if (b < 0x80) return v;
    }
    let big = BigInt(v);
    for (let shift = 49n; shift < 70n; shift += 7n) {
      if (this.pos >= this.end) throw protoError("truncated varint");
      const b = buf[this.pos++];
      if (shift === 63n && b > 1) throw protoError("varint beyond 64 bits");
      big |= BigInt(b & 0x7f) << shift;
      if (b < 0x80) return big;
    }
    throw protoError("varint beyond 64 bits");
  }
  /** The length of a length-delimited field, checked against what is left. */
  length() {
    const n = this.varint();
    if (typeof n !== "number" || n > this.end - this.pos) throw protoError("field longer than its message");
    return n;
  }
  /** @param {number} n */
  advance(n) {
    if (n > this.end - this.pos) throw protoError("truncated field");
    this.pos += n;
  }
  /** A reader over the next length-delimited field. */
  sub() {
    const n = this.length();
    const r = new Reader(this.buf, this.pos, this.pos + n);
    this.pos += n;
    return r;
  }
  /** The next length-delimited field's bytes, copied: the caller owns them. */
  bytes() {
    const n = this.length();
    this.pos += n;
    return this.buf.slice(this.pos - n, this.pos);
  }
  string() {
    const n = this.length();
    this.pos += n;
    return utf8Decoder.decode(this.buf.subarray(this.pos - n, this.pos));
  }
  double() {
    this.advance(8);
    return new DataView(this.buf.buffer, this.buf.byteOffset + this.pos - 8, 8).getFloat64(0, true);
  }
  /** @returns {[number, number]} the next field's number and wire type */
  tag() {
    const t = this.varint();
    if (typeof t !== "number" || t < 8) throw protoError("bad field tag");
    return [Math.floor(t / 8), t % 8];
  }
  /**
   * Skips a field this client does not know (a newer server's).
   * @param {number} wire
   * @param {number} no
   */
  skip(wire, no) {
    switch (wire) {
      case 0:
        this.varint();
        return;
      case 1:
        this.advance(8);
        return;
      case 2:
        this.advance(this.length());
        return;
      case 5:
        this.advance(4);
        return;
      case 3: // a group: its fields up to the matching end
        for (;;) {
          if (this.pos >= this.end) throw protoError("truncated group");
          const [n, w] = this.tag();
          if (w === 4) {
            if (n !== no) throw protoError("mismatched end of group");
            return;
          }
          this.skip(w, n);
        }
      default:
        throw protoError(`bad wire type ${wire}`);
    }
  }
}

/** @param {string} what */
function protoError(what) {
  return new Error(`herald: bad protobuf frame: ${what}`);
}

/**
 * Sets obj[key] as an own property, even for "__proto__" (as JSON.parse does).
 * @param {any} obj
 * @param {string} key
 * @param {unknown} value
 */
function setOwn(obj, key, value) {
  if (key === "__proto__") Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
  else obj[key] = value;
}

/**
 * @param {Reader} r
 * @param {string} type a message of SCHEMA
 * @param {any} [obj] a value to merge into (a repeated singular message)
 * @returns {any}
 */
function readMessage(r, type, obj = {}) {
  const m = MESSAGES[type];
  while (r.pos < r.end) {
    const [no, wire] = r.tag();
    const f = m.byNumber.get(no);
    if (!f || f.wire !== wire) {
      r.skip(wire, no);
      continue;
    }
    for (const o of f.others) delete obj[o];
    switch (f.kind) {
      case "uint32": {
        const v = r.varint();
        obj[f.name] = typeof v === "number" ? v >>> 0 : Number(BigInt.asUintN(32, v));
        break;
      }
      case "uint64":
        obj[f.name] = String(r.varint());
        break;
      case "int64": {
        const v = r.varint();
        obj[f.name] = typeof v === "number" ? String(v) : BigInt.asIntN(64, v).toString();
        break;
      }
      case "bool":
        obj[f.name] = !!r.varint();
        break;
      case "string":
        obj[f.name] = r.string();
        break;
      case "bytes":
        obj[f.name] = r.bytes();
        break;
      case "Value":
        obj[f.name] = readValue(r.sub());
        break;
      case "map": {
        const e = r.sub();
        let k = "";
        let v = "";
        while (e.pos < e.end) {
          const [n, w] = e.tag();
          if (n === 1 && w === 2) k = e.string();
          else if (n === 2 && w === 2) v = e.string();
          else e.skip(w, n);
        }
        setOwn((obj[f.name] ??= {}), k, v);
        break;
      }
      case "message":
        obj[f.name] = readMessage(r.sub(), f.type, obj[f.name]);
        break;
      case "repeated":
        (obj[f.name] ??= []).push(readMessage(r.sub(), f.type));
        break;
    }
  }
  return obj;
}

/**
 * A google.protobuf.Value as its JSON value (a Value with no kind: null).
 * Struct keys come sorted, as protobuf JSON writes them.
 * @param {Reader} r
 * @returns {unknown}
 */
function readValue(r) {
  /** @type {unknown} */
  let v = null;
  while (r.pos < r.end) {
    const [no, wire] = r.tag();
    if (no === 1 && wire === 0) {
      r.varint();
      v = null;
    } else if (no === 2 && wire === 1) v = r.double();
    else if (no === 3 && wire === 2) v = r.string();
    else if (no === 4 && wire === 0) v = !!r.varint();
    else if (no === 5 && wire === 2) {
      /** @type {Array<[string, unknown]>} */
      const entries = [];
      const s = r.sub();
      while (s.pos < s.end) {
        const [n, w] = s.tag();
        if (n !== 1 || w !== 2) {
          s.skip(w, n);
          continue;
        }
        const e = s.sub();
        let k = "";
        /** @type {unknown} */
        let x = null;
        while (e.pos < e.end) {
          const [en, ew] = e.tag();
          if (en === 1 && ew === 2) k = e.string();
          else if (en === 2 && ew === 2) x = readValue(e.sub());
          else e.skip(ew, en);
        }
        entries.push([k, x]);
      }
      entries.sort((a, b) => byCodePoint(a[0], b[0]));
      const obj = {};
      for (const [k, x] of entries) setOwn(obj, k, x);
      v = obj;
    } else if (no === 6 && wire === 2) {
      const list = [];
      const l = r.sub();
      while (l.pos < l.end) {
        const [n, w] = l.tag();
        if (n === 1 && w === 2) list.push(readValue(l.sub()));
        else l.skip(w, n);
      }
      v = list;
    } else r.skip(wire, no);
  }
  return v;
}

/**
 * Orders strings as their UTF-8 bytes (Go's order, protobuf JSON's for
 * Struct keys), which differs from UTF-16's around surrogates.
 * @param {string} a
 * @param {string} b
 */
function byCodePoint(a, b) {
  for (let i = 0, j = 0; i < a.length && j < b.length; ) {
    const x = /** @type {number} */ (a.codePointAt(i));
    const y = /** @type {number} */ (b.codePointAt(j));
    if (x !== y) return x - y;
    i += x > 0xffff ? 2 : 1;
    j += y > 0xffff ? 2 : 1;
  }
  return a.length - b.length;
}

/**
 * @param {unknown} v
 * @param {string} name for errors
 * @param {bigint} max
 * @param {bigint} [min]
 * @returns {number | bigint} the integer, to write as a varint (two's complement when negative)
 */
function integer(v, name, max, min = 0n) {
  let n;
  if (typeof v === "number" && Number.isInteger(v)) n = BigInt(v);
  else if (typeof v === "bigint") n = v;
  else if (typeof v === "string" && /^-?[0-9]+$/.test(v)) n = BigInt(v);
  else throw new RangeError(`herald: ${name} must be an integer, not ${String(v)}`);
  if (n < min || n > max) throw new RangeError(`herald: ${name} out of range: ${n}`);
  return n < 0n ? BigInt.asUintN(64, n) : n < 0x20000000000000n ? Number(n) : n;
}

/**
 * @param {Writer} w
 * @param {string} type a message of SCHEMA
 * @param {any} obj its object
 */
function writeMessage(w, type, obj) {
  const m = MESSAGES[type];
  for (const key of Object.keys(obj)) {
    if (!m.names.has(key)) throw new Error(`herald: ${type} has no field ${key}`);
  }
  for (const f of m.fields) {
    const v = obj[f.name];
    if (v === undefined || (v === null && f.kind !== "Value")) continue;
    const name = `${type}.${f.name}`;
    switch (f.kind) {
      case "uint32":
      case "uint64":
      case "int64": {
        const max = f.kind === "uint32" ? 0xffffffffn : f.kind === "uint64" ? 0xffffffffffffffffn : 0x7fffffffffffffffn;
        const n = integer(v, name, max, f.kind === "int64" ? -0x8000000000000000n : 0n);
        if (n || f.oneof) {
          w.tag(f.no, 0);
          w.varint(n);
        }
        break;
      }
      case "bool":
        if (v || f.oneof) {
          w.tag(f.no, 0);
          w.varint(v ? 1 : 0);
        }
        break;
      case "string": {
        const s = String(v);
        if (s || f.oneof) {
          w.tag(f.no, 2);
          w.bytes(utf8Encoder.encode(s));
        }
        break;
      }
      case "bytes": {
        if (!(v instanceof Uint8Array)) throw new TypeError(`herald: ${name} must be a Uint8Array`);
        if (v.length || f.oneof) {
          w.tag(f.no, 2);
          w.bytes(v);
        }
        break;
      }
      case "Value": {
        const sub = new Writer();
        writeValue(sub, JSON.parse(JSON.stringify(v) ?? "null"));
        w.tag(f.no, 2);
        w.bytes(sub.finish());
        break;
      }
      case "map":
        for (const [k, x] of Object.entries(v)) {
          const e = new Writer();
          e.tag(1, 2);
          e.bytes(utf8Encoder.encode(k));
          e.tag(2, 2);
          e.bytes(utf8Encoder.encode(String(x)));
          w.tag(f.no, 2);
          w.bytes(e.finish());
        }
        break;
      case "message":
      case "repeated":
        for (const x of f.kind === "repeated" ? v : [v]) {
          const sub = new Writer();
          writeMessage(sub, f.type, x);
          w.tag(f.no, 2);
          w.bytes(sub.finish());
        }
        break;
    }
  }
}

/**
 * Writes a JSON value (as JSON.parse makes them) as a google.protobuf.Value.
 * @param {Writer} w
 * @param {unknown} v
 */
function writeValue(w, v) {
  if (v === null) {
    w.tag(1, 0);
    w.varint(0);
  } else if (typeof v === "number") {
    w.tag(2, 1);
    w.double(v);
  } else if (typeof v === "string") {
    w.tag(3, 2);
    w.bytes(utf8Encoder.encode(v));
  } else if (typeof v === "boolean") {
    w.tag(4, 0);
    w.varint(v ? 1 : 0);
  } else if (Array.isArray(v)) {
    const l = new Writer();
    for (const x of v) {
      const e = new Writer();
      writeValue(e, x);
      l.tag(1, 2);
      l.bytes(e.finish());
    }
    w.tag(6, 2);
    w.bytes(l.finish());
  } else {
    const s = new Writer();
    for (const [k, x] of Object.entries(/** @type {object} */ (v))) {
      const e = new Writer();
      e.tag(1, 2);
      e.bytes(utf8Encoder.encode(k));
      const val = new Writer();
      writeValue(val, x);
      e.tag(2, 2);
      e.bytes(val.finish());
      s.tag(1, 2);
      s.bytes(e.finish());
    }
    w.tag(5, 2);
    w.bytes(s.finish());
  }
}

/**
 * Reads a frame's varint length at pos.
 * @param {Uint8Array} buf
 * @param {number} pos
 * @returns {[number, number] | null} the length and where the frame starts; null if buf ends first
 */
function frameLength(buf, pos) {
  let n = 0;
  for (let i = 0, mul = 1; i < 5; i++, mul *= 0x80) {
    if (pos + i >= buf.length) return null;
    const b = buf[pos + i];
    n += (b & 0x7f) * mul;
    if (b < 0x80) return [n, pos + i + 1];
  }
  throw protoError("frame length beyond 2^35");
}

/**
 * herald.proto: frames as binary protobuf, each after its length as a
 * varint, in binary messages (or an HTTP stream's body).
 */
const protobufFormat = {
  name: /** @type {const} */ ("protobuf"),
  subprotocol: "herald.proto",
  contentType: "application/x-protobuf",
  binary: true,
  /**
   * @param {object} frame
   * @param {string} [type] "ClientFrame" (the default), or "ServerFrame" (for test servers)
   */
  encode(frame, type = "ClientFrame") {
    const w = new Writer();
    writeMessage(w, type, frame);
    const body = w.finish();
    const out = new Writer();
    out.bytes(body);
    return out.finish();
  },
  /** @param {Uint8Array[]} parts */
  pack(parts) {
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  },
  /** @param {Uint8Array} part */
  size(part) {
    return part.length;
  },
  /**
   * Decodes every frame of a message; a frame that does not decode is
   * reported and the next ones still read, as long as the lengths hold.
   * Zero-length frames (heartbeats) are skipped.
   * @param {unknown} message an ArrayBuffer or a Uint8Array
   * @param {string} [type] "ServerFrame" (the default), or "ClientFrame"
   * @param {(err: unknown) => void} [onError]
   */
  decode(message, type = "ServerFrame", onError) {
    const buf = message instanceof Uint8Array ? message : message instanceof ArrayBuffer ? new Uint8Array(message) : null;
    if (!buf) {
      onError?.(new Error("herald: a text message in herald.proto"));
      return [];
    }
    const frames = [];
    for (let pos = 0; pos < buf.length; ) {
      let head;
      try {
        head = frameLength(buf, pos);
        if (!head || head[1] + head[0] > buf.length) throw protoError("frame longer than its message");
      } catch (err) {
        onError?.(err);
        break;
      }
      const [n, start] = head;
      pos = start + n;
      if (n === 0) continue;
      try {
        frames.push(readMessage(new Reader(buf, start, pos), type));
      } catch (err) {
        onError?.(err);
      }
    }
    return frames;
  },
  /** @param {(message: Uint8Array) => void} emit each whole frame, with its length */
  reader(emit) {
    /** @type {Uint8Array[]} */
    let parts = [];
    let have = 0;
    let need = 0; // bytes of the frame under way, once its length is known
    return (/** @type {Uint8Array} */ chunk) => {
      parts.push(chunk);
      have += chunk.length;
      if (have < need) return; // a long frame: join its parts once, at its end
      let buf = parts.length === 1 ? parts[0] : protobufFormat.pack(parts);
      let pos = 0;
      for (;;) {
        const head = frameLength(buf, pos);
        if (head && head[0] > MAX_STREAM_FRAME) throw protoError(`frame of ${head[0]} bytes`);
        if (!head || head[1] + head[0] > buf.length) {
          need = head ? head[1] + head[0] - pos : 0;
          break;
        }
        emit(buf.subarray(pos, head[1] + head[0]));
        pos = head[1] + head[0];
      }
      buf = buf.subarray(pos);
      parts = buf.length ? [buf] : [];
      have = buf.length;
    };
  },
};

/**
 * The wire formats, by the name the `format` option takes. Their encode
 * and decode take and give frames as objects in the shape of herald.json
 * (see docs/protocol.md), for tools and tests; the client uses them itself.
 */
export const formats = Object.freeze({ json: Object.freeze(jsonFormat), protobuf: Object.freeze(protobufFormat) });
